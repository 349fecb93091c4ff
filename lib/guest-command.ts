/**
 * How a command reaches the default guest's init: `flintvm.cmd=<base64>` on
 * the kernel command line, the base64 of a POSIX shell command string that
 * init runs with `sh -c` (see guest/init). Base64 keeps spaces and quotes
 * out of the kernel's own command-line parsing.
 */

/** Quotes one argument for a POSIX shell. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_\-+=/.,:@%]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The kernel command-line parameter that makes the default guest run `argv` and report its exit status. */
export function guestCommandCmdline(argv: readonly string[]): string {
  if (argv.length === 0) throw new RangeError('guest command needs at least one word');
  const cmd = argv.map(shellQuote).join(' ');
  return `flintvm.cmd=${Buffer.from(cmd).toString('base64')}`;
}
