/**
 * KVM's own counters of a vCPU (exits, mmio_exits, halt_exits, ...), read
 * through its binary statistics fd (KVM_GET_STATS_FD, Linux 5.14), which
 * needs neither debugfs nor root. The format (Documentation/virt/kvm/api.rst,
 * "KVM_GET_STATS_FD"): a header, then one descriptor per statistic, then the
 * values, 64-bit each, at offsets the header and descriptors give.
 */
import { closeSync, readSync } from 'node:fs';
import { ioctlValue } from './call.js';
import { KVM_GET_STATS_FD } from './ioctls.js';

const HEADER_BYTES = 24;
const DESC_FIXED_BYTES = 16;

/**
 * Reads the stats of `fd` (a vCPU or VM fd) once: every single-value counter
 * by name. On a vCPU fd, KVM_GET_STATS_FD waits for the vCPU's mutex, which
 * KVM_RUN holds: call it while the vCPU is out of the guest (paused).
 */
export function readKvmStats(fd: number): Map<string, bigint> {
  const statsFd = ioctlValue(fd, KVM_GET_STATS_FD);
  try {
    const at = (offset: number, len: number) => {
      const b = Buffer.alloc(len);
      let got = 0;
      while (got < len) {
        const n = readSync(statsFd, b, got, len - got, offset + got);
        if (n === 0) throw new RangeError(`KVM stats fd: ${len} bytes at ${offset} go past its end`);
        got += n;
      }
      return b;
    };
    const h = at(0, HEADER_BYTES);
    const nameSize = h.readUInt32LE(4);
    const count = h.readUInt32LE(8);
    const descOffset = h.readUInt32LE(16);
    const dataOffset = h.readUInt32LE(20);
    const descBytes = DESC_FIXED_BYTES + nameSize;
    const descs = at(descOffset, count * descBytes);
    const out = new Map<string, bigint>();
    for (let i = 0; i < count; i++) {
      const d = descs.subarray(i * descBytes, (i + 1) * descBytes);
      const size = d.readUInt16LE(6);
      const offset = d.readUInt32LE(8);
      if (size !== 1) continue; // histograms and arrays: not needed here
      const name = d.subarray(DESC_FIXED_BYTES).toString('latin1').replace(/\0.*$/s, '');
      out.set(name, at(dataOffset + offset, 8).readBigUInt64LE(0));
    }
    return out;
  } finally {
    closeSync(statsFd);
  }
}
