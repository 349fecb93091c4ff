/**
 * Ethernet MAC addresses for virtio-net config space: parsing the user's
 * `xx:xx:xx:xx:xx:xx`, and the default derived from the tap name. Pure
 * functions, any thread.
 */
import { ETH_ALEN } from './constants.js';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
/** Bit 0 of the first octet: a group (multicast/broadcast) address, never a NIC's own. */
const MAC_GROUP_BIT = 0x01;
/** Bit 1 of the first octet: locally administered (not from a vendor's OUI). */
const MAC_LOCAL_BIT = 0x02;
/** 64-bit FNV-1a: offset basis and prime. */
const FNV64_OFFSET = 0xcbf29ce484222325n;
const FNV64_PRIME = 0x100000001b3n;
const U64 = (1n << 64n) - 1n;

/**
 * The 6 bytes of `mac` (`xx:xx:xx:xx:xx:xx`, hex digits in either case).
 * Returns a string saying what is wrong instead when it is not a unicast
 * address a NIC may have (bad syntax, a multicast/broadcast address, all zeros).
 */
export function parseMac(mac: unknown): Uint8Array | string {
  if (typeof mac !== 'string' || !MAC_RE.test(mac)) return 'must be a MAC address like 02:00:00:12:34:56 (six hex pairs separated by colons)';
  const bytes = Uint8Array.from(mac.split(':'), (h) => Number.parseInt(h, 16));
  if (bytes[0]! & MAC_GROUP_BIT) return `${mac} is a multicast or broadcast address (the low bit of the first octet is set); a NIC needs a unicast one, e.g. 02:...`;
  if (bytes.every((b) => b === 0)) return 'the all-zero MAC address is not a valid NIC address';
  return bytes;
}

/** `xx:xx:xx:xx:xx:xx`, lowercase. */
export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, ETH_ALEN), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * The default MAC for a NIC on tap `tapName`: 02 (locally administered,
 * unicast) followed by 5 bytes of a 64-bit FNV-1a hash of the name, so a
 * tap keeps its guest MAC across restarts.
 */
export function defaultMac(tapName: string): string {
  let h = FNV64_OFFSET;
  for (const b of new TextEncoder().encode(tapName)) h = ((h ^ BigInt(b)) * FNV64_PRIME) & U64;
  const bytes = new Uint8Array(ETH_ALEN);
  bytes[0] = MAC_LOCAL_BIT;
  for (let i = 1; i < ETH_ALEN; i++) bytes[i] = Number((h >> BigInt(8 * (i - 1))) & 0xffn);
  return formatMac(bytes);
}
