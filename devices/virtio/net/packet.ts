/**
 * Validation of virtio-net packets (virtio 1.2 §5.1.6) before they cross to
 * or from the host: the transmit chain's shape and header against what was
 * negotiated, and the header the tap wrote on receive against what the guest
 * can take. Offload negotiation rules (§5.1.3.1) live here too.
 *
 * Pure functions over guest memory; never throw because of guest data.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { readChainInto } from '../queue/chain-io.js';
import type { DescriptorChain } from '../queue/types.js';
import type { NetOffloads } from './backend.js';
import * as N from './constants.js';

const has = (features: bigint, bit: number): boolean => (features & (1n << BigInt(bit))) !== 0n;

/**
 * The offloads each direction may use, from the driver's accepted features.
 * Dependencies the driver should have honoured (§5.1.3.1: TSO needs the
 * matching CSUM, ECN needs a TSO) are enforced again here: a driver that
 * accepted GUEST_TSO4 without GUEST_CSUM gets no TSO.
 */
export function negotiatedOffloads(features: bigint): { guest: NetOffloads; host: NetOffloads } {
  const side = (csumBit: number, tso4Bit: number, tso6Bit: number, ecnBit: number): NetOffloads => {
    const csum = has(features, csumBit);
    const tso4 = csum && has(features, tso4Bit);
    const tso6 = csum && has(features, tso6Bit);
    return { csum, tso4, tso6, ecn: (tso4 || tso6) && has(features, ecnBit) };
  };
  return {
    guest: side(N.VIRTIO_NET_F_GUEST_CSUM, N.VIRTIO_NET_F_GUEST_TSO4, N.VIRTIO_NET_F_GUEST_TSO6, N.VIRTIO_NET_F_GUEST_ECN),
    host: side(N.VIRTIO_NET_F_CSUM, N.VIRTIO_NET_F_HOST_TSO4, N.VIRTIO_NET_F_HOST_TSO6, N.VIRTIO_NET_F_HOST_ECN),
  };
}

/** The flags, gso_type and gso_size of a header (the other fields are the kernel's to check). */
interface HeaderFields {
  readonly flags: number;
  readonly gsoType: number;
  readonly gsoSize: number;
}

function fields(hdr: Uint8Array): HeaderFields {
  return {
    flags: hdr[N.VIRTIO_NET_HDR_FLAGS]!,
    gsoType: hdr[N.VIRTIO_NET_HDR_GSO_TYPE]!,
    gsoSize: hdr[N.VIRTIO_NET_HDR_GSO_SIZE]! | (hdr[N.VIRTIO_NET_HDR_GSO_SIZE + 1]! << 8),
  };
}

/**
 * Why a header's checksum/GSO request is outside `allowed`, or null when it
 * is within. `direction` only words the message.
 */
function offloadProblem(h: HeaderFields, allowed: NetOffloads, direction: 'tx' | 'rx'): string | null {
  const csumFeature = direction === 'tx' ? 'CSUM' : 'GUEST_CSUM';
  if ((h.flags & N.VIRTIO_NET_HDR_F_NEEDS_CSUM) && !allowed.csum) return `NEEDS_CSUM without ${csumFeature}`;
  const ecn = (h.gsoType & N.VIRTIO_NET_HDR_GSO_ECN) !== 0;
  const type = h.gsoType & ~N.VIRTIO_NET_HDR_GSO_ECN;
  if (type === N.VIRTIO_NET_HDR_GSO_NONE) return ecn ? 'GSO_ECN flag without a GSO type' : null;
  const prefix = direction === 'tx' ? 'HOST' : 'GUEST';
  if (type === N.VIRTIO_NET_HDR_GSO_TCPV4 && !allowed.tso4) return `GSO TCPv4 without ${prefix}_TSO4`;
  if (type === N.VIRTIO_NET_HDR_GSO_TCPV6 && !allowed.tso6) return `GSO TCPv6 without ${prefix}_TSO6`;
  if (type !== N.VIRTIO_NET_HDR_GSO_TCPV4 && type !== N.VIRTIO_NET_HDR_GSO_TCPV6) return `GSO type ${type} is not offered`;
  if (ecn && !allowed.ecn) return `GSO_ECN without ${prefix}_ECN`;
  if (h.gsoSize === 0) return 'GSO packet with gso_size 0';
  return null;
}

/**
 * Checks a transmit chain (§5.1.6.2): device-readable only, a full header,
 * at least an Ethernet header after it, at most NET_MAX_PACKET bytes, at most
 * NET_MAX_IOVECS segments, and header flags/GSO within the host offloads the
 * driver negotiated (the driver MUST NOT set DATA_VALID or RSC_INFO, §5.1.6.2.1).
 * Returns why it must be dropped, or null when it may go to the backend as is.
 * `scratch` (VIRTIO_NET_HDR_SIZE bytes) is where the header is read.
 */
export function txProblem(memory: GuestMemory, chain: DescriptorChain, host: NetOffloads, scratch = new Uint8Array(N.VIRTIO_NET_HDR_SIZE)): string | null {
  if (chain.writable.length > 0) return `${chain.writableLength} device-writable bytes in a transmit chain`;
  const total = chain.readableLength;
  if (total < N.VIRTIO_NET_HDR_SIZE) return `${total} bytes, shorter than the ${N.VIRTIO_NET_HDR_SIZE}-byte header`;
  if (total > N.NET_MAX_PACKET) return `${total} bytes, more than the ${N.NET_MAX_PACKET}-byte maximum`;
  if (total - N.VIRTIO_NET_HDR_SIZE < N.ETH_HLEN) return `frame of ${total - N.VIRTIO_NET_HDR_SIZE} bytes, shorter than an Ethernet header`;
  if (chain.readable.length > N.NET_MAX_IOVECS) return `${chain.readable.length} segments, more than ${N.NET_MAX_IOVECS}`;
  readChainInto(memory, chain.readable, 0, scratch);
  const h = fields(scratch);
  if (h.flags & ~N.VIRTIO_NET_HDR_F_NEEDS_CSUM) return `header flags 0x${h.flags.toString(16)} (only NEEDS_CSUM is valid on transmit)`;
  return offloadProblem(h, host, 'tx');
}

/**
 * What to do with the header the backend wrote for a received packet, given
 * the guest's receive offloads:
 * - `ok`: deliver as is;
 * - `clear-flags`: deliver with flags = 0 (DATA_VALID for a guest without
 *   GUEST_CSUM: §5.1.6.3.1 says such a device sets flags to zero);
 * - a string: drop it, saying why (a partial checksum or GSO packet the guest
 *   cannot take: only packets queued before the offloads changed).
 */
export function rxHeaderVerdict(hdr: Uint8Array, guest: NetOffloads): 'ok' | 'clear-flags' | string {
  const h = fields(hdr);
  const problem = offloadProblem(h, guest, 'rx');
  if (problem) return problem;
  if (!guest.csum && h.flags !== 0) return 'clear-flags';
  return 'ok';
}
