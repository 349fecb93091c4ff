/**
 * The bounded queue loop on the real I/O event loop: a guest that keeps the
 * queue full cannot hold the loop. The device handles a queue's worth of
 * requests, arms its eventfd wakeup, and the loop serves other fds before
 * coming back to it.
 */
import test from 'ava';
import type { FdWatcher } from '../../../../../devices/virtio/device.js';
import { EventfdWakeup } from '../../../../../devices/virtio/backends/wakeup.js';
import * as B from '../../../../../devices/virtio/block/constants.js';
import { closeFd, createEventfd, EPOLLIN, readEventfd, signalEventfd } from '../../../../../lib/io/epoll.js';
import { EventLoop } from '../../../../../lib/io/event-loop.js';
import { BlkHarness, header } from './blk-harness.js';

test('a flood of requests yields to other fds through the eventfd wakeup', (t) => {
  const loop = new EventLoop();
  const notifyFd = createEventfd();
  const otherFd = createEventfd();
  const TOTAL = 40;
  let flushes = 0;
  let otherAt = -1;
  let h!: BlkHarness;
  const addFlush = () => h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }]));
  h = new BlkHarness({
    queueSize: 8,
    wakeup: new EventfdWakeup(),
    fds: loop,
    backend: (file) => ({
      readv: file.readv.bind(file),
      writev: file.writev.bind(file),
      discard: file.discard.bind(file),
      writeZeroes: file.writeZeroes.bind(file),
      flush: () => {
        flushes++;
        if (flushes === 2) signalEventfd(otherFd); // another device gets work meanwhile
        if (flushes + 3 <= TOTAL) {
          h.driver.used();
          addFlush();
          h.driver.kick();
        }
        if (flushes === TOTAL) loop.stop();
      },
    }),
  });
  try {
    loop.watch(notifyFd, EPOLLIN, () => {
      readEventfd(notifyFd);
      h.device.queueNotify(0);
    });
    loop.watch(otherFd, EPOLLIN, () => {
      readEventfd(otherFd);
      otherAt = flushes;
    });
    for (let i = 0; i < 3; i++) addFlush();
    h.driver.kick();
    signalEventfd(notifyFd); // the ioeventfd kick
    loop.run();
    t.is(flushes, TOTAL);
    t.true(otherAt > 0 && otherAt < TOTAL, `the other fd was served after ${otherAt} of ${TOTAL} requests`);
    t.is(h.device.stats!.completed, TOTAL);
  } finally {
    h.close();
    loop.close();
    closeFd(notifyFd);
    closeFd(otherFd);
  }
});

test('EventfdWakeup: arm is idempotent until it fires; unwatch drops a pending arm', (t) => {
  const watched = new Map<number, (events: number) => void>();
  const fds: FdWatcher = { watch: (fd, _e, cb) => void watched.set(fd, cb), unwatch: (fd) => void watched.delete(fd) };
  const w = new EventfdWakeup();
  let wakes = 0;
  w.watch(fds, () => wakes++);
  t.is(watched.size, 1);
  const [fd, cb] = [...watched][0]!;
  w.arm();
  w.arm();
  t.is(readEventfd(fd), 1n, 'one signal for two arms');
  w.arm(); // still armed (the callback has not run): no new signal
  t.is(readEventfd(fd), 0n);
  cb(EPOLLIN);
  t.is(wakes, 1);
  w.arm();
  w.unwatch(fds);
  t.is(watched.size, 0);
  t.is(readEventfd(fd), 0n, 'unwatch drained it');
  w.close();
  w.close();
  w.arm();
  t.pass();
});
