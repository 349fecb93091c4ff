/** Watches an fd on the I/O worker's epoll loop. */
export interface FdWatcher {
  /** Calls `onReady(events)` when `fd` is ready for `events` (EPOLLIN/EPOLLOUT bits). Replaces an earlier watch of the same fd. */
  watch(fd: number, events: number, onReady: (events: number) => void): void;
  unwatch(fd: number): void;
}
