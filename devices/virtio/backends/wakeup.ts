/**
 * A device's own "call me again" signal on the I/O worker's epoll loop.
 *
 * A device handles at most a queue size of requests per notification so one
 * busy queue cannot hold the I/O thread (and a stop request) forever. When it
 * stops early, the driver will not kick again for requests it already
 * published, so the device arms its wakeup: an eventfd the loop watches, which
 * calls the device back on the next loop turn, after other ready fds.
 *
 * `run()` blocks the I/O thread in epoll_wait, so setImmediate/queueMicrotask
 * never fire there; an fd is the loop's only way in.
 */
import { createEventfd, closeFd, EPOLLIN, readEventfd, signalEventfd } from '../../../lib/io/epoll.js';
import type { FdWatcher } from '../device.js';

/** The device side: what a device file may hold (no fd calls of its own). */
export interface Wakeup {
  /** Starts calling `onWake` on the loop whenever the wakeup was armed. */
  watch(fds: FdWatcher, onWake: () => void): void;
  /** Stops watching (on reset) and drops a pending arm. */
  unwatch(fds: FdWatcher): void;
  /** Makes the loop call `onWake` once soon. Idempotent until it fires. */
  arm(): void;
  /** Releases the fd. */
  close(): void;
}

/** A {@link Wakeup} over a nonblocking eventfd. Create and use it on the I/O worker. Throws HostError('eventfd'). */
export class EventfdWakeup implements Wakeup {
  private readonly fd = createEventfd();
  private armed = false;
  private closed = false;

  watch(fds: FdWatcher, onWake: () => void): void {
    fds.watch(this.fd, EPOLLIN, () => {
      readEventfd(this.fd);
      this.armed = false;
      onWake();
    });
  }

  unwatch(fds: FdWatcher): void {
    fds.unwatch(this.fd);
    readEventfd(this.fd);
    this.armed = false;
  }

  arm(): void {
    if (this.armed || this.closed) return;
    this.armed = true;
    signalEventfd(this.fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}
