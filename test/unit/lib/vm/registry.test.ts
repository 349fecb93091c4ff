import test from 'ava';
import { configuredDevices, describeDevices, loadConfiguredDevices, loadVirtioKinds, VIRTIO_KINDS, virtioKind } from '../../../../lib/vm/registry.js';

test.serial('every kind has a unique name; its code loads on demand and is found by that name', async (t) => {
  const names = VIRTIO_KINDS.map((k) => k.info.name);
  t.is(new Set(names).size, names.length);
  t.is(virtioKind('virtio-blk'), undefined, 'nothing is loaded before it is asked for');
  t.throws(() => configuredDevices({ rng: true })[0]!.kind, { message: /rng: the virtio-rng device code is not loaded/ });
  const [rng] = await loadConfiguredDevices({ rng: true });
  t.is(rng!.kind.name, 'virtio-rng');
  t.is(virtioKind('virtio-blk'), undefined, 'loading one kind loads no other');
  await loadVirtioKinds(names);
  for (const n of names) t.is(virtioKind(n)?.name, n);
  t.is(virtioKind('virtio-gpu'), undefined);
  await t.throwsAsync(loadVirtioKinds(['virtio-gpu']), { message: /unknown virtio device kind 'virtio-gpu'/ });
});

test('configuredDevices: slot order follows the registry (shares in config order), each entry names its config path, shares go to their protocol', (t) => {
  const cfg = {
    shares: [{ tag: 'a', path: '/a', protocol: 'virtiofs' }, { tag: 'b', path: '/b', protocol: '9p' }],
    rng: true,
    drives: [{ path: '/x.img', readOnly: false }, { path: '/y.img', readOnly: true, root: true }],
    vsock: { guestCid: 3, udsPath: '/tmp/v' },
    net: [],
  };
  const got = configuredDevices(cfg).map((d) => `${d.info.name} ${d.field} ${d.index}`);
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
