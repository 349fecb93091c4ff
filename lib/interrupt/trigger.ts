/**
 * Raises one device interrupt. Implementations: an irqfd write, a KVM_IRQ_LINE
 * pulse, or a recording double in tests. May be called from any thread that
 * owns an instance; must not block.
 */
export interface Trigger {
  /** Signal the interrupt once (edge: assert then deassert). */
  trigger(): void;
}

/** A Trigger that counts calls: for unit tests of device state machines. */
export class RecordingTrigger implements Trigger {
  count = 0;
  trigger(): void {
    this.count++;
  }
}
