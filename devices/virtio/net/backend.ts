/**
 * The host side of a virtio-net device: where frames go and come from. The
 * real implementation is backends/tap.ts (TapBackend, a TAP device opened
 * with IFF_VNET_HDR and a 12-byte vnet header, so frames cross with their
 * virtio_net_hdr and without a copy).
 *
 * Every method runs on the I/O worker thread and is synchronous. The device
 * validates what the guest gave before calling a backend: segment lists are
 * inside guest RAM, at most NET_MAX_IOVECS long, and a sent packet is a full
 * header plus at least an Ethernet header.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { FdWatcher } from '../device.js';
import type { Segment } from '../queue/types.js';
import type { IovecQueue } from '../backends/iovec.js';

/** Offloads in one direction, as negotiated with the driver (§5.1.3). */
export interface NetOffloads {
  /** Partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM). */
  readonly csum: boolean;
  readonly tso4: boolean;
  readonly tso6: boolean;
  /** TSO with ECN (gso_type | VIRTIO_NET_HDR_GSO_ECN). */
  readonly ecn: boolean;
}

/** No offloads at all. */
export const NO_OFFLOADS: NetOffloads = Object.freeze({ csum: false, tso4: false, tso6: false, ecn: false });

export interface NetBackend {
  /**
   * Sends one packet: `packet` is a 12-byte virtio_net_hdr followed by an
   * Ethernet frame, gathered from guest memory in one call (zero copy).
   * Throws HostError when the host refuses it (the device drops the packet).
   */
  send(packet: readonly Segment[], memory: GuestMemory): void;
  /**
   * Reads the next packet (header + frame) straight into guest memory: into
   * the buffers of the first `count` entries of `buffers` (the device's held
   * receive buffers, at most NET_RX_MAX_IOVECS). Returns its length, or a
   * number MORE than those buffers hold when it did not fit (it was truncated
   * and the rest lost); null when none is waiting. Throws HostError when the
   * backend is broken (the device stops reading it).
   */
  receive(buffers: IovecQueue, count: number): number | null;
  /** Which offloaded packets the backend may hand to receive() (the guest's receive offloads). Throws HostError. */
  setOffload(guest: NetOffloads): void;
  /**
   * Calls `onReady(false)` on the loop while a packet is waiting, and
   * `onReady(true)` when the backend failed (error or hang-up with nothing to
   * read): the caller should then unwatch. Level-triggered.
   */
  watch(fds: FdWatcher, onReady: (failed: boolean) => void): void;
  /** Stops watching. No-op when not watching. */
  unwatch(fds: FdWatcher): void;
}
