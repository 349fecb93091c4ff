/**
 * How a command reaches the default guest's init: `flintvm.cmd=<base64>` on
 * the kernel command line, the base64 of a POSIX shell command string that
 * init runs with `sh -c` (see guest/init), its input and output on the
 * console. Base64 keeps spaces and quotes out of the kernel's own
 * command-line parsing.
 *
 * Environment, working directory and a controlling terminal are added by
 * wrapping the command in that shell string (guest/init is the guest image's
 * cache key, so it is not changed for them): `export K='V'; cd 'DIR' && CMD`,
 * and `setsid cttyhack sh -c '...'` (busybox) for a controlling tty.
 */

/** Quotes one argument for a POSIX shell. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_\-+=/.,:@%]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** A valid environment variable name for the guest command (POSIX shell identifier). */
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** How the guest command runs, besides its argv. */
export interface GuestCommandOptions {
  /** Environment variables for the command (names must match {@link ENV_NAME_RE}). */
  readonly env?: Readonly<Record<string, string>>;
  /** Working directory in the guest; when it does not exist the command is not run (the shell's status, non-zero). */
  readonly cwd?: string;
  /** Give the command the console as its controlling terminal (job control, Ctrl-C reaches it). */
  readonly tty?: boolean;
}

/** The shell command string for `argv` with `opts` (what init runs with `sh -c`). */
export function guestCommandScript(argv: readonly string[], opts: GuestCommandOptions = {}): string {
  if (argv.length === 0) throw new RangeError('guest command needs at least one word');
  let cmd = argv.map(shellQuote).join(' ');
  if (opts.cwd !== undefined) {
    if (opts.cwd.length === 0) throw new RangeError('the working directory must not be empty');
    cmd = `cd ${shellQuote(opts.cwd)} && ${cmd}`;
  }
  const env = Object.entries(opts.env ?? {});
  for (const [k] of env) if (!ENV_NAME_RE.test(k)) throw new RangeError(`'${k}' is not a valid environment variable name (letters, digits and _, not starting with a digit)`);
  if (env.length) cmd = `export ${env.map(([k, v]) => `${k}=${shellQuote(v)}`).join(' ')}; ${cmd}`;
  if (opts.tty) cmd = `setsid cttyhack sh -c ${shellQuote(cmd)}`;
  return cmd;
}

/** The kernel command-line parameter that makes the default guest run `argv` and report its exit status. */
export function guestCommandCmdline(argv: readonly string[], opts: GuestCommandOptions = {}): string {
  return `flintvm.cmd=${Buffer.from(guestCommandScript(argv, opts)).toString('base64')}`;
}
