/**
 * The device factory vCPU workers load (lib/vcpu/protocol.ts DeviceFactory):
 * turns the structured-cloneable params the builder chose into device
 * instances on the worker, wired to that worker's interrupt lines and to the
 * main thread. Part of the builder layer: the one place that knows every device.
 */
import type { BusDevice } from '../bus/device.js';
import type { DeviceContext } from '../vcpu/protocol.js';
import { Serial8250 } from '../../devices/legacy/serial-8250.js';
import { I8042 } from '../../devices/legacy/i8042.js';
import { GuestControl } from '../../devices/legacy/guest-control.js';
import { Pl031 } from '../../devices/legacy/pl031.js';
import { ByteRing } from '../io/byte-ring.js';
import { VirtioMmioTransport } from '../../devices/virtio/transport/mmio.js';
import { signalEventfd } from '../io/epoll.js';
import { registerPageView } from './register-pages.js';

export type DeviceParams =
  | { kind: 'serial8250'; state: SharedArrayBuffer; irq: number; output: SharedArrayBuffer }
  | { kind: 'i8042'; state: SharedArrayBuffer }
  | { kind: 'guest-control' }
  | { kind: 'pl031'; state: SharedArrayBuffer }
  | { kind: 'virtio-mmio'; state: SharedArrayBuffer; registers?: bigint | undefined; controlFd: number; queueFds: readonly number[] };

export function createBusDevice(params: unknown, ctx: DeviceContext): BusDevice {
  const p = params as DeviceParams;
  switch (p.kind) {
    case 'serial8250': {
      const ring = new ByteRing(p.output);
      return new Serial8250(p.state, { trigger: ctx.irqLine(p.irq), out: (b) => { ring.write(b); } });
    }
    case 'i8042':
      return new I8042(p.state, { onReset: () => ctx.requestExit('reset') });
    case 'guest-control':
      return new GuestControl({
        onBootTimer: () => ctx.emit({ type: 'boot-timer', time: ctx.now() }),
        onExitStatus: (status) => ctx.requestExit('guest-exit', { status }),
      });
    case 'pl031':
      return new Pl031(p.state);
    case 'virtio-mmio':
      return new VirtioMmioTransport(p.state, {
        kickControl: () => signalEventfd(p.controlFd),
        // Only reached when KVM did not take the write through the ioeventfd.
        notifyQueue: (i) => { const fd = p.queueFds[i]; if (fd !== undefined) signalEventfd(fd); },
      }, p.registers === undefined ? null : registerPageView(p.registers));
  }
}
