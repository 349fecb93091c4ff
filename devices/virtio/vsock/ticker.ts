/**
 * The vsock device's housekeeping tick on a timerfd: the I/O loop blocks in
 * epoll_wait, so Node timers never fire there, and an fd is its only clock.
 */
import { closeFd, createTimerfd, disarmTimerfd, EPOLLIN, readTimerfd, setTimerfd } from '../../../lib/io/epoll.js';
import type { FdWatcher } from '../device.js';
import type { Ticker } from './backend.js';

/** A {@link Ticker} over a nonblocking CLOCK_MONOTONIC timerfd. Create and use it on the I/O worker. Throws HostError. */
export class TimerfdTicker implements Ticker {
  private readonly fd = createTimerfd();
  private active = false;
  private closed = false;

  get running(): boolean {
    return this.active;
  }

  watch(fds: FdWatcher, onTick: () => void): void {
    fds.watch(this.fd, EPOLLIN, () => {
      if (readTimerfd(this.fd) === 0n || !this.active) return;
      onTick();
    });
  }

  unwatch(fds: FdWatcher): void {
    fds.unwatch(this.fd);
    this.stop();
  }

  start(periodMs: number): void {
    if (this.active || this.closed) return;
    setTimerfd(this.fd, periodMs, periodMs);
    this.active = true;
  }

  stop(): void {
    if (!this.active || this.closed) return;
    disarmTimerfd(this.fd);
    // Drop an expiry that may already be counted, so a stale tick does not run later.
    readTimerfd(this.fd);
    this.active = false;
  }

  close(): void {
    if (this.closed) return;
    this.stop();
    this.closed = true;
    closeFd(this.fd);
  }
}
