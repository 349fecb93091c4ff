import { guestCommandCmdline, type GuestCommandOptions } from '../../lib/guest-command.js';

/**
 * The kernel command-line tail for a test guest that runs `argv`, with
 * `quiet`: the kernel's boot log stays off the 8250 console.
 *
 * Every console byte costs the guest at least two VM exits (a line-status read
 * and the data write). In the test hosts an exit is emulated, so the default
 * guest's 13 KB boot log costs about 8 s a boot (one x86_64 host, 3 boots
 * each way: start to guest exit 9.5-10.2 s loud, 1.6-2.0 s quiet). The tests
 * look at what the guest's programs print, not at the kernel's log; the boot
 * tests keep one loud boot per kernel so the whole log through the UART is
 * still covered.
 */
export function quietCommand(argv: readonly string[], opts?: GuestCommandOptions): string {
  return `quiet ${guestCommandCmdline(argv, opts)}`;
}
