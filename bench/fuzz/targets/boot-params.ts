/**
 * Fuzz target `boot-params`: the x86_64 boot-information writers on hostile
 * configs: e820Entries (arch/x86_64/e820.ts) over odd RAM layouts, feeding
 * buildBootParams (arch/x86_64/boot-params.ts) with hostile setup headers,
 * command-line and initrd addresses up to 2^53, and e820 maps of 0..130
 * entries; buildMpTable (arch/x86_64/mptable.ts) with hostile vCPU counts.
 * Oracle: the documented typed errors (ConfigError, LoaderError), or output
 * that reads back exactly: the zero page is one page, its 64-bit fields split
 * into low/ext halves rebuild the inputs, the e820 table and count match, the
 * setup header bytes are the image's except the fields a loader must set; the
 * e820 map is sorted, non-overlapping and covers exactly the RAM given; the MP
 * table blobs have valid checksums and one processor entry per vCPU.
 */
import { buildBootParams, BOOT_E820_ENTRY, BOOT_PARAMS, BOOT_PARAMS_SIZE, E820_MAX_ENTRIES_ZEROPAGE, LOADER_TYPE_UNDEFINED, type BootParamsInput } from '../../../arch/x86_64/boot-params.js';
import { e820Entries, type E820Entry } from '../../../arch/x86_64/e820.js';
import { SETUP_HEADER } from '../../../arch/x86_64/loader/bzimage.js';
import { ramRegions } from '../../../arch/x86_64/layout.js';
import { buildMpTable, MPTABLE_MAX_VCPUS } from '../../../arch/x86_64/mptable.js';
import { ConfigError, LoaderError } from '../../../lib/errors.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const E820_RAM = 1;
const GiB = 2 ** 30;
const MiB = 2 ** 20;

function safeAddr(rng: Rng): number {
  return rng.weighted([[3, rng.int(2 ** 32)], [2, rng.int(2 ** 21) * 2 ** 32 + rng.int(2 ** 32)], [1, rng.pick([0, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1])]]);
}

/** RAM layouts as the VMM could ask for them (regions never overlap: ramRegions' contract), with hostile sizes and places. */
function hostileRegions(rng: Rng): { gpa: number; size: number }[] {
  if (rng.bool(0.3)) {
    try {
      return ramRegions(rng.weighted([[4, rng.range(1, 1 << 20) * 4096], [1, rng.pick([0, 4096, MiB, 3 * GiB, 4 * GiB, 2 ** 40, 2 ** 40 + 4096])]]));
    } catch (e) {
      if (e instanceof ConfigError) return [];
      throw e;
    }
  }
  const out = [];
  if (rng.bool(0.9)) out.push({ gpa: rng.bool(0.9) ? 0 : rng.int(4) * MiB, size: rng.pick([MiB, MiB + 4096, 64 * MiB, 3 * GiB, 3 * GiB + 4096, rng.range(1, 3 * 1024) * MiB]) });
  let at = rng.pick([3 * GiB, 4 * GiB, 4 * GiB, rng.range(4, 64) * GiB]);
  for (let n = rng.int(4); n > 0; n--) {
    const size = rng.pick([4096, GiB, rng.range(1, 1 << 20) * 4096]);
    out.push({ gpa: at, size });
    at += size + rng.pick([0, 0, 4096, GiB]);
  }
  return rng.bool(0.3) ? out.reverse() : out;
}

function checkE820(regions: readonly { gpa: number; size: number }[], map: readonly E820Entry[]): void {
  for (let i = 1; i < map.length; i++) check(map[i - 1]!.addr + map[i - 1]!.size <= map[i]!.addr, () => `e820 entries ${i - 1} and ${i} overlap or are unsorted: ${JSON.stringify(map)}`);
  for (const e of map) check(Number.isSafeInteger(e.addr) && Number.isSafeInteger(e.size) && e.size > 0, () => `e820 entry ${JSON.stringify(e)}`);
  const ram = map.filter((e) => e.type === E820_RAM).reduce((n, e) => n + e.size, 0);
  const given = regions.reduce((n, r) => n + r.size, 0);
  // The EBDA..1 MiB part of the low region is not RAM in the map.
  check(ram <= given && ram >= given - MiB, () => `e820 RAM ${ram} bytes for ${given} bytes of regions`);
}

function checkZeroPage(input: BootParamsInput, page: Uint8Array): void {
  check(page.length === BOOT_PARAMS_SIZE, `zero page of ${page.length} bytes`);
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const split = (lo: number, hi: number) => dv.getUint32(lo, true) + dv.getUint32(hi, true) * 2 ** 32;
  check(split(SETUP_HEADER.cmd_line_ptr, BOOT_PARAMS.ext_cmd_line_ptr) === input.cmdlineAddr, 'cmd_line_ptr does not rebuild the command-line address');
  if (input.initrd) {
    check(split(SETUP_HEADER.ramdisk_image, BOOT_PARAMS.ext_ramdisk_image) === input.initrd.addr, 'ramdisk_image does not rebuild the initrd address');
    check(split(SETUP_HEADER.ramdisk_size, BOOT_PARAMS.ext_ramdisk_size) === input.initrd.size, 'ramdisk_size does not rebuild the initrd size');
  }
  check(page[SETUP_HEADER.type_of_loader] === LOADER_TYPE_UNDEFINED, 'type_of_loader');
  check(page[BOOT_PARAMS.e820_entries] === input.e820.length, 'e820_entries differs from the map');
  input.e820.forEach((e, i) => {
    const at = BOOT_PARAMS.e820_table + i * BOOT_E820_ENTRY.bytes;
    check(dv.getBigUint64(at + BOOT_E820_ENTRY.addr, true) === BigInt(e.addr) && dv.getBigUint64(at + BOOT_E820_ENTRY.size, true) === BigInt(e.size)
      && dv.getUint32(at + BOOT_E820_ENTRY.type, true) === e.type, `e820 entry ${i} differs`);
  });
  check(page.subarray(BOOT_PARAMS.e820_table + input.e820.length * BOOT_E820_ENTRY.bytes).every((b) => b === 0), 'bytes past the e820 table are not zero');
  if (input.setupHeader) {
    const own = new Set<number>();
    const fields: [number, number][] = [[SETUP_HEADER.type_of_loader, 1], [SETUP_HEADER.cmd_line_ptr, 4]];
    if (input.initrd) fields.push([SETUP_HEADER.ramdisk_image, 4], [SETUP_HEADER.ramdisk_size, 4]);
    for (const [f, n] of fields) for (let k = 0; k < n; k++) own.add(f + k);
    input.setupHeader.forEach((b, i) => {
      const at = BOOT_PARAMS.hdr + i;
      if (!own.has(at)) check(page[at] === b, () => `setup header byte 0x${at.toString(16)} changed`);
    });
  }
}

function checkMpTable(vcpus: number, blobs: ReturnType<typeof buildMpTable>): void {
  const all = blobs.map((b) => b.bytes);
  const fp = all.find((x) => String.fromCharCode(...x.subarray(0, 4)) === '_MP_');
  const ct = all.find((x) => String.fromCharCode(...x.subarray(0, 4)) === 'PCMP');
  check(fp && ct, 'MP floating pointer or configuration table missing');
  check(fp!.subarray(0, 16).reduce((a, b) => a + b, 0) % 256 === 0, 'MP floating pointer checksum');
  const len = ct![4]! | (ct![5]! << 8);
  check(len <= ct!.length, 'MP table base length past its blob');
  check(ct!.subarray(0, len).reduce((a, b) => a + b, 0) % 256 === 0, 'MP configuration table checksum');
  let cpus = 0;
  for (let at = 44; at < len;) {
    const type = ct![at]!;
    if (type === 0) { cpus++; at += 20; } else if (type <= 4) at += 8; else check(false, `MP entry type ${type}`);
  }
  check(cpus === vcpus, `${cpus} processor entries for ${vcpus} vCPUs`);
}

export const bootParamsTarget: FuzzTarget = {
  name: 'boot-params',
  description: 'x86_64 zero page (buildBootParams), e820 map and MP table writers on hostile configs; outputs read back field by field',
  episode: 5000,
  create() {
    return {
      step(rng) {
        try {
          const k = rng.int(10);
          if (k < 2) {
            const vcpus = rng.weighted([[4, rng.range(1, 8)], [2, rng.int(MPTABLE_MAX_VCPUS + 3)], [1, rng.pick([-1, 1.5, 2 ** 31, Number.NaN])]]);
            checkMpTable(vcpus, buildMpTable({ vcpus, cpuSignature: rng.u32(), featureFlags: rng.u32() }));
            return;
          }
          let e820: E820Entry[];
          if (k < 6) {
            const regions = hostileRegions(rng);
            e820 = e820Entries(regions);
            checkE820(regions, e820);
          } else {
            e820 = Array.from({ length: rng.weighted([[5, rng.int(8)], [1, rng.int(E820_MAX_ENTRIES_ZEROPAGE + 3)]]) }, () => ({ addr: safeAddr(rng), size: safeAddr(rng), type: rng.edgeU32() }));
          }
          const input: BootParamsInput = {
            cmdlineAddr: safeAddr(rng),
            cmdlineSize: rng.edgeU32(),
            e820,
            ...(rng.bool(0.5) ? { initrd: { addr: safeAddr(rng), size: safeAddr(rng) } } : {}),
            ...(rng.bool(0.5) ? { setupHeader: rng.bytes(rng.weighted([[5, rng.range(0x20, 0x9f)], [1, rng.int(0x200)]])) } : {}),
          };
          checkZeroPage(input, buildBootParams(input));
        } catch (e) {
          if (e instanceof ConfigError || e instanceof LoaderError) return; // documented: the config does not fit
          throw e;
        }
      },
      close() {},
    };
  },
};
