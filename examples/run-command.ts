/**
 * Boot the default guest, run one command in it, print its output and exit status.
 *   node dist/examples/run-command.js uname -a
 */
import { MicroVM, defaultGuestImages, guestCommandCmdline } from '../lib/index.js';

const argv = process.argv.slice(2);
const guest = await defaultGuestImages();
const vm = new MicroVM({
  kernel: guest.kernel, initrd: guest.initrd, memoryMiB: 128, vcpus: 1,
  extraCmdline: `quiet ${guestCommandCmdline(argv.length ? argv : ['uname', '-a'])}`,
});
vm.console.pipe(process.stdout);
await vm.start();
const exit = await vm.wait();
console.log(`\n[guest command exited with ${exit.exitStatus ?? exit.reason}]`);
process.exitCode = exit.exitStatus ?? 1;
