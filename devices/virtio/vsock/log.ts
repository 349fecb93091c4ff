/** The vsock device's debug namespace, and a rate limit for what a guest can repeat forever. */
import { log } from '../../../lib/log.js';

export const debug = log('virtio:vsock');

/** At most this many guest errors are logged per window; the rest are counted. */
const LOG_BURST = 5;
const LOG_WINDOW_MS = 10_000;

/** A debug log that says the first few things per window and counts the rest. */
export class RateLimitedLog {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;

  constructor(private readonly what: string) {}

  note(fmt: string, ...args: unknown[]): void {
    if (!debug.enabled) return;
    const now = Date.now();
    if (now - this.windowStart >= LOG_WINDOW_MS) {
      if (this.suppressed > 0) debug('%s: %d more not logged', this.what, this.suppressed);
      this.windowStart = now;
      this.inWindow = 0;
      this.suppressed = 0;
    }
    if (this.inWindow++ < LOG_BURST) debug(`${this.what}: ${fmt}`, ...args);
    else this.suppressed++;
  }
}
