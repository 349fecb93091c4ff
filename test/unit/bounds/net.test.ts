/**
 * docs/bounds.md, virtio-net receive row: the tap has traffic while the guest
 * posts no receive buffers. The device keeps no packet copy of its own: it
 * stops reading the tap, so packets wait in the host kernel (a real tap drops
 * past its txqueuelen), and nothing is lost inside the VMM.
 */
import test from 'ava';
import * as N from '../../../devices/virtio/net/constants.js';
import { frame, NetHarness, packet, PLAIN_FEATURES } from '../devices/virtio/net/net-harness.js';
import { sendPacket } from '../devices/virtio/net/net-sockets.js';

const HDR = N.VIRTIO_NET_HDR_SIZE;

test('net RX backlog: no receive buffers -> the tap is not read (0 bytes held in the VMM); buffers later -> every packet, in order', (t) => {
  const h = new NetHarness({ features: PLAIN_FEATURES });
  try {
    const sent = 200;
    for (let i = 0; i < sent; i++) sendPacket(h.peer, packet(frame(1000, i)));
    // The level-triggered loop would call back while the tap is readable: it is not even watched.
    t.false(h.tapWatched);
    t.is(h.pump(), 0, 'no read from the tap');
    t.is(h.device.stats!.rx.packets, 0);
    t.is(h.device.stats!.rx.dropped, 0, 'nothing read, so nothing dropped in the VMM');
    t.is(h.device.saveState().rx!.held.length, 0, 'no receive chain held either');
    // The guest posts buffers in batches: the waiting packets arrive, none lost or reordered.
    const got: number[] = [];
    while (got.length < sent) {
      h.addRxBuffers(50, 2048);
      h.pump();
      for (const u of h.rxUsed()) got.push(u.data[HDR + 14]!);
    }
    t.deepEqual(got, Array.from({ length: sent }, (_, i) => frame(1000, i)[14]!));
    t.is(h.device.stats!.rx.dropped, 0);
    t.false(h.tapWatched, 'out of buffers again: not watching');
  } finally {
    h.close();
  }
});
