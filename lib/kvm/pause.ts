import { KvmError } from '../errors.js';
import type { Vcpu } from './vcpu.js';

const EINTR = 4;

/**
 * Completes the operation a vCPU's last exit left pending (a PIO or MMIO
 * access, an MSR access) without running guest code, so that its saved
 * state is consistent. api.rst (kvm_run, immediate_exit): those operations
 * finish only when userspace re-enters KVM_RUN, their pending state is not
 * visible to userspace, and re-entering with immediate_exit set completes
 * them and returns EINTR. Without this, a restored vCPU would repeat the
 * access (the PC/RIP still points at it). Call on the thread that runs the
 * vCPU, after its last exit was handled and before its state is saved.
 */
export function completePendingIo(vcpu: Vcpu): void {
  vcpu.setImmediateExit(true);
  let r: number;
  try {
    r = vcpu.runOnce();
  } finally {
    vcpu.setImmediateExit(false);
  }
  if (r !== -EINTR) throw new KvmError('KVM_RUN', r < 0 ? -r : 0, 'expected EINTR from KVM_RUN with immediate_exit set');
}
