/**
 * The kvm_run page (struct kvm_run, shared between KVM and the VMM through
 * mmap of the vCPU fd) and the decoding of its exit into a typed union.
 */

import * as R from './run-layout.js';

// The run-page offsets are in run-layout.ts; these three are re-exported for existing importers.
export { RUN_REQUEST_INTERRUPT_WINDOW, RUN_IMMEDIATE_EXIT, RUN_EXIT_REASON, RUN_MMIO_DATA } from './run-layout.js';

// Exit reasons (linux/kvm.h).
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_NMI = 16;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;

/** One decoded VM exit. Data for I/O lives in the run page; use the offsets given. */
export type VcpuExit =
  | { kind: 'io'; direction: 'in' | 'out'; size: number; port: number; count: number; dataOffset: number }
  | { kind: 'mmio'; address: number; length: number; isWrite: boolean; /** offset of data[8] in the run page */ dataOffset: number }
  | { kind: 'hlt' }
  | { kind: 'shutdown' }
  | { kind: 'system-event'; type: 'shutdown' | 'reset' | 'crash' | 'other'; rawType: number }
  | { kind: 'internal-error'; suberror: number; data: bigint[] }
  | { kind: 'fail-entry'; hardwareReason: bigint; cpu: number }
  | { kind: 'exception'; exception: number; errorCode: number }
  | { kind: 'unknown'; hardwareReason: bigint }
  | { kind: 'intr' }
  | { kind: 'irq-window-open' }
  | { kind: 'debug' }
  | { kind: 'other'; reason: number };

/**
 * Decodes the exit described by `run` (a view of the whole kvm_run mapping).
 * Values are copied out; guest-controlled numbers (port, address, length) are
 * returned as is and must be validated by whoever uses them.
 */
export function decodeExit(run: DataView): VcpuExit {
  const reason = run.getUint32(R.RUN_EXIT_REASON, true);
  switch (reason) {
    case KVM_EXIT_IO:
      return {
        kind: 'io',
        direction: run.getUint8(R.RUN_IO_DIRECTION) === KVM_EXIT_IO_OUT ? 'out' : 'in',
        size: run.getUint8(R.RUN_IO_SIZE),
        port: run.getUint16(R.RUN_IO_PORT, true),
        count: run.getUint32(R.RUN_IO_COUNT, true),
        dataOffset: Number(run.getBigUint64(R.RUN_IO_DATA_OFFSET, true)),
      };
    case KVM_EXIT_MMIO:
      return { kind: 'mmio', address: Number(run.getBigUint64(R.RUN_MMIO_PHYS_ADDR, true)), length: run.getUint32(R.RUN_MMIO_LEN, true), isWrite: run.getUint8(R.RUN_MMIO_IS_WRITE) !== 0, dataOffset: R.RUN_MMIO_DATA };
    case KVM_EXIT_HLT:
      return { kind: 'hlt' };
    case KVM_EXIT_SHUTDOWN:
      return { kind: 'shutdown' };
    case KVM_EXIT_SYSTEM_EVENT: {
      const t = run.getUint32(R.RUN_SYSTEM_EVENT_TYPE, true);
      const type = t === KVM_SYSTEM_EVENT_SHUTDOWN ? 'shutdown' : t === KVM_SYSTEM_EVENT_RESET ? 'reset' : t === KVM_SYSTEM_EVENT_CRASH ? 'crash' : 'other';
      return { kind: 'system-event', type, rawType: t };
    }
    case KVM_EXIT_INTERNAL_ERROR: {
      const ndata = Math.min(run.getUint32(R.RUN_INTERNAL_NDATA, true), R.RUN_INTERNAL_DATA_MAX);
      const data: bigint[] = [];
      for (let i = 0; i < ndata; i++) data.push(run.getBigUint64(R.RUN_INTERNAL_DATA + i * 8, true));
      return { kind: 'internal-error', suberror: run.getUint32(R.RUN_INTERNAL_SUBERROR, true), data };
    }
    case KVM_EXIT_FAIL_ENTRY:
      return { kind: 'fail-entry', hardwareReason: run.getBigUint64(R.RUN_FAIL_ENTRY_REASON, true), cpu: run.getUint32(R.RUN_FAIL_ENTRY_CPU, true) };
    case KVM_EXIT_EXCEPTION:
      return { kind: 'exception', exception: run.getUint32(R.RUN_EX_EXCEPTION, true), errorCode: run.getUint32(R.RUN_EX_ERROR_CODE, true) };
    case KVM_EXIT_UNKNOWN:
      return { kind: 'unknown', hardwareReason: run.getBigUint64(R.RUN_HW_EXIT_REASON, true) };
    case KVM_EXIT_INTR:
      return { kind: 'intr' };
    case KVM_EXIT_IRQ_WINDOW_OPEN:
      return { kind: 'irq-window-open' };
    case KVM_EXIT_DEBUG:
      return { kind: 'debug' };
    default:
      return { kind: 'other', reason };
  }
}
