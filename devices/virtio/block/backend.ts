/**
 * The host side of a virtio-blk device: where sectors live. The device
 * validates every request (bounds, direction, read-only) before calling a
 * backend, so a backend only sees in-range, 512-byte-multiple byte ranges.
 *
 * All methods are synchronous and run on the I/O worker thread. They throw
 * (typically HostError) when the host I/O fails; the request handler turns
 * any throw into VIRTIO_BLK_S_IOERR, never into an exception out of the device.
 * The real implementation is backends/file.ts (FileBackend).
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { Segment } from '../queue/types.js';

export interface BlockBackend {
  /**
   * Reads `sum(segments.len)` bytes at byte `offset` of the disk straight into
   * the guest `segments` (zero copy). Bytes past the end of the backing file read as zeros.
   */
  readv(offset: number, segments: readonly Segment[], memory: GuestMemory): void;
  /** Writes the guest `segments` to byte `offset` of the disk (zero copy). */
  writev(offset: number, segments: readonly Segment[], memory: GuestMemory): void;
  /** Makes completed writes durable (VIRTIO_BLK_T_FLUSH). */
  flush(): void;
  /** Drops `length` bytes at `offset` (a hint: a backend may do nothing). Reads of the range may return anything afterwards. */
  discard(offset: number, length: number): void;
  /** Makes `length` bytes at `offset` read as zeros; with `unmap` it may also deallocate them. */
  writeZeroes(offset: number, length: number, unmap: boolean): void;
}
