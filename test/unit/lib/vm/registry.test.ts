import test from 'ava';
import { configuredDevices, describeDevices, VIRTIO_KINDS, virtioKind } from '../../../../lib/vm/registry.js';

test('every kind has a unique name and is found by it', (t) => {
  const names = VIRTIO_KINDS.map((k) => k.name);
  t.is(new Set(names).size, names.length);
  for (const n of names) t.is(virtioKind(n)?.name, n);
  t.is(virtioKind('virtio-gpu'), undefined);
});

test('configuredDevices: slot order follows the registry (shares in config order), each entry names its config path, shares go to their protocol', (t) => {
  const cfg = {
    shares: [{ tag: 'a', path: '/a', protocol: 'virtiofs' }, { tag: 'b', path: '/b', protocol: '9p' }],
    rng: true,
    drives: [{ path: '/x.img', readOnly: false }, { path: '/y.img', readOnly: true, root: true }],
    vsock: { guestCid: 3, udsPath: '/tmp/v' },
    net: [],
  };
  const got = configuredDevices(cfg).map((d) => `${d.kind.name} ${d.field} ${d.index}`);
  t.deepEqual(got, [
    'virtio-blk drives[0] 0',
    'virtio-blk drives[1] 1',
    'virtio-rng rng 0',
    'virtio-vsock vsock 0',
    'virtio-fs shares[0] 0',
    'virtio-9p shares[1] 1',
  ]);
});

test('configuredDevices: rng false, absent keys and empty arrays give no devices', (t) => {
  t.deepEqual(configuredDevices({ rng: false, drives: [], shares: [] }), []);
  t.deepEqual(configuredDevices({}), []);
});

test('describeDevices: the kind, the config path and what the kind says, without fds', (t) => {
  const d = describeDevices({ drives: [{ path: '/x.img', readOnly: true, root: true, serial: 's1' }], net: [{ tap: 'tap0' }] });
  t.deepEqual(d, [
    { kind: 'virtio-blk', field: 'drives[0]', path: '/x.img', readOnly: true, root: true, serial: 's1' },
    { kind: 'virtio-net', field: 'net[0]', tap: 'tap0' },
  ]);
});
