/**
 * Edge pulses on a VM's KVM_IRQ_LINE lines, serialized across threads.
 *
 * A pulse is two ioctls: the line up, then down. KVM keeps one level per
 * line for every KVM_IRQ_LINE caller (one IRQ source id), so two threads
 * pulsing the same line at once can interleave as up, up, down, down: the
 * second "up" finds the line already high, makes no edge, and its interrupt
 * is lost. That happened with the UART: the main thread's console-input
 * pulse was still high when a vCPU enabled the THR-empty interrupt, the
 * guest never got that interrupt and its output stalled. So every thread
 * that pulses a VM's lines takes one lock, shared through a
 * SharedArrayBuffer, around the pair.
 */
import type { Vm } from '../kvm/vm.js';
import { SharedLock } from '../sync/lock.js';
import type { Trigger } from './trigger.js';

/** Pulses lines of one VM; build one per thread over the VM's shared lock buffer. */
export class IrqLines {
  /** A new lock buffer, one per VM: pass it to every thread that pulses that VM's lines. */
  static createLock(): SharedArrayBuffer {
    return new SharedArrayBuffer(4);
  }

  private readonly lock: SharedLock;

  constructor(private readonly vm: Vm, lockBuffer: SharedArrayBuffer) {
    this.lock = new SharedLock(new Int32Array(lockBuffer, 0, 1), 0);
  }

  /** One edge on line `gsi`: up then down, with no other pulse of this VM in between. */
  pulse(gsi: number): void {
    this.lock.acquire();
    try {
      this.vm.irqLine(gsi, 1);
      this.vm.irqLine(gsi, 0);
    } finally {
      this.lock.release();
    }
  }

  /** A {@link Trigger} that pulses line `gsi`. */
  trigger(gsi: number): Trigger {
    return { trigger: () => this.pulse(gsi) };
  }
}
