import test from 'ava';
import {
  GUEST_BOOT_COMPLETE_MAGIC, GUEST_CONTROL_BOOT_TIMER, GUEST_CONTROL_EXIT_STATUS, GuestControl,
} from '../../../../devices/legacy/guest-control.js';

function make() {
  const seen = { boot: 0, exits: [] as number[] };
  const dev = new GuestControl({ onBootTimer: () => seen.boot++, onExitStatus: (s) => seen.exits.push(s) });
  return { dev, seen };
}

test('boot timer: a 1-byte write of 123 to offset 0 calls onBootTimer', (t) => {
  const { dev, seen } = make();
  dev.write(GUEST_CONTROL_BOOT_TIMER, 1, GUEST_BOOT_COMPLETE_MAGIC);
  t.is(seen.boot, 1);
  t.deepEqual(seen.exits, []);
});

test('exit status: the byte written to offset 1 is passed on', (t) => {
  const { dev, seen } = make();
  dev.write(GUEST_CONTROL_EXIT_STATUS, 1, 0);
  dev.write(GUEST_CONTROL_EXIT_STATUS, 1, 42);
  dev.write(GUEST_CONTROL_EXIT_STATUS, 1, 255);
  t.deepEqual(seen.exits, [0, 42, 255]);
  t.is(seen.boot, 0);
});

test('anything else is ignored and reads return 0', (t) => {
  const { dev, seen } = make();
  dev.write(GUEST_CONTROL_BOOT_TIMER, 1, 122);
  dev.write(GUEST_CONTROL_BOOT_TIMER, 2, GUEST_BOOT_COMPLETE_MAGIC);
  dev.write(GUEST_CONTROL_BOOT_TIMER, 4, GUEST_BOOT_COMPLETE_MAGIC);
  dev.write(GUEST_CONTROL_EXIT_STATUS, 2, 1);
  dev.write(2, 1, GUEST_BOOT_COMPLETE_MAGIC);
  dev.write(-1, 1, 0);
  dev.write(Number.NaN, 1, Number.NaN);
  t.is(seen.boot, 0);
  t.deepEqual(seen.exits, []);
  t.is(dev.read(GUEST_CONTROL_BOOT_TIMER, 1), 0);
  t.is(dev.read(GUEST_CONTROL_EXIT_STATUS, 4), 0);
});
