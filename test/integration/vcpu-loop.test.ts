import test from 'ava';
import { Machine } from '../../lib/machine.js';
import { emptyRegs } from '../../lib/kvm/structs.js';
import { requireKvm } from '../helpers/kvm.js';
import { recorded } from '../helpers/test-devices.js';

const DEVICE_MODULE = new URL('../helpers/test-devices.js', import.meta.url).href;
const CODE_ADDR = 0x1000;

/** A 1-vCPU machine (no irqchip) running `code` in real mode at 0x1000. */
async function realModeMachine(code: number[], devices: { base: number; length: number; params: unknown; space?: 'pio' | 'mmio' }[], vcpus = 1) {
  return Machine.create({
    memory: [{ gpa: 0, size: 2 * 1024 * 1024 }],
    vcpus,
    devices: devices.map((d) => ({ space: d.space ?? 'pio', ...d })),
    deviceModule: DEVICE_MODULE,
    setupVcpus({ memory, vcpus: vs }) {
      memory.write(CODE_ADDR, Uint8Array.from(code));
      for (const v of vs) {
        const s = v.getSregs();
        s.cs.base = 0n; s.cs.selector = 0;
        v.setSregs(s);
        v.setRegs({ ...emptyRegs(), rip: BigInt(CODE_ADDR), rflags: 2n });
      }
    },
  });
}

test('real-mode guest: port writes reach a bus device on the worker, then HLT ends the VM', async (t) => {
  if (!requireKvm(t)) return;
  const log = new SharedArrayBuffer(4 * 64);
  // mov al,0x42; out 0x10,al; mov ax,0x1234; out 0x12,ax; in al,0x10; out 0x11,al; hlt
  const code = [0xb0, 0x42, 0xe6, 0x10, 0xb8, 0x34, 0x12, 0xe7, 0x12, 0xe4, 0x10, 0xe6, 0x11, 0xf4];
  const m = await realModeMachine(code, [{ base: 0x10, length: 4, params: { kind: 'recorder', log, readValue: 0x77 } }]);
  m.start();
  const exit = await m.wait();
  await m.released();
  t.is(exit.reason, 'halt');
  t.is(exit.regs?.rip, BigInt(CODE_ADDR + code.length));
  t.deepEqual(recorded(log), [
    { offset: 0, size: 1, value: 0x42 },
    { offset: 2, size: 2, value: 0x1234 },
    { offset: 1, size: 1, value: 0x77 },
  ]);
  t.is(m.state, 'exited');
});

test('a device can end the VM (guest-exit with status)', async (t) => {
  if (!requireKvm(t)) return;
  // mov al,7; out 0x20,al; jmp $
  const m = await realModeMachine([0xb0, 0x07, 0xe6, 0x20, 0xeb, 0xfe], [{ base: 0x20, length: 1, params: { kind: 'exit-on-write', reason: 'guest-exit' } }]);
  m.start();
  const exit = await m.wait();
  await m.released();
  t.is(exit.reason, 'guest-exit');
  t.is(exit.detail?.status, 7);
});

test('stop() ends a spinning guest promptly, pause/resume work', async (t) => {
  if (!requireKvm(t)) return;
  const log = new SharedArrayBuffer(4 * 64);
  // loop: inc al; jmp loop   (spins without exits)
  const m = await realModeMachine([0xfe, 0xc0, 0xeb, 0xfc], [{ base: 0x10, length: 1, params: { kind: 'recorder', log, readValue: 0 } }], 2);
  m.start();
  await new Promise((r) => setTimeout(r, 50));
  const t0 = performance.now();
  await m.pause();
  t.is(m.state, 'paused');
  m.resume();
  t.is(m.state, 'running');
  const exit = await m.stop();
  t.is(exit.reason, 'stopped');
  t.is(m.state, 'exited');
  t.true(performance.now() - t0 < 5000, 'pause+stop completed');
});
