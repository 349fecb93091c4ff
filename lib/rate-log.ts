/**
 * A debug log that says the first few things per window and counts the rest,
 * shared by every device:
 * a guest can repeat a mistake (or a host error can recur) once per packet.
 */
import type { log } from './log.js';

type Debugger = ReturnType<typeof log>;

/** At most this many messages per kind are logged per window; the rest are counted. */
const LOG_BURST = 5;
const LOG_WINDOW_MS = 10_000;

export class RateLimitedLog {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;

  constructor(private readonly debug: Debugger, private readonly what: string) {}

  note(fmt: string, ...args: unknown[]): void {
    if (!this.debug.enabled) return;
    const now = Date.now();
    if (now - this.windowStart >= LOG_WINDOW_MS) {
      if (this.suppressed > 0) this.debug('%s: %d more not logged', this.what, this.suppressed);
      this.windowStart = now;
      this.inWindow = 0;
      this.suppressed = 0;
    }
    if (this.inWindow++ < LOG_BURST) this.debug(`${this.what}: ${fmt}`, ...args);
    else this.suppressed++;
  }
}
