import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { ConfigError, HostError } from '../errors.js';
import * as ffi from '../kvm/ffi.js';
import { GuestMemory, type MemoryRegion, type RegionDescriptor } from './guest-memory.js';
import { GiB, MiB } from '../sys.js';

/** Largest single view: koffi aborts the process on views over 4 GiB, so regions are split at 2 GiB. */
export const MAX_REGION_CHUNK = 2 * GiB;
/** The page size of guest RAM as flintvm maps and saves it. */
export const PAGE_SIZE = 4096;

/** Guest RAM mapped from the host, plus how to release it. */
export interface HostGuestMemory {
  readonly memory: GuestMemory;
  /**
   * True when the RAM is a private mapping of a snapshot's memory file:
   * pages the guest has not written are the file's (shared with every other
   * VM restored from it), written pages are this VM's own copies.
   */
  readonly fileBacked: boolean;
  /** Unmaps every region. No view of the memory may be touched afterwards (any thread). */
  unmap(): void;
}

/**
 * Where guest RAM comes from: fresh anonymous memory, or a memory file (a
 * snapshot's) that holds the regions of the layout back to back, in order.
 */
export type MemorySource = { readonly kind: 'anonymous' } | { readonly kind: 'file'; readonly fd: number; readonly what: string };

/** The name guest RAM has in /proc/<pid>/maps, `[anon:flintvm-guest-ram]`, where the kernel can name anonymous mappings (CONFIG_ANON_VMA_NAME). */
export const GUEST_RAM_NAME = 'flintvm-guest-ram';

/**
 * mmaps each range of `layout`, split into chunks of at most {@link MAX_REGION_CHUNK}:
 * private anonymous memory (MAP_NORESERVE: pages are only allocated when the
 * guest touches them), or a MAP_PRIVATE mapping of a memory file, so that
 * restoring a guest reads nothing up front and VMs restored from one file
 * share every page none of them wrote. The file must hold the whole layout
 * (ConfigError naming it otherwise). On failure everything mapped so far is released.
 *
 * Private, not shared, anonymous memory: a page the guest touches first is
 * then an anonymous page fault in the host, where a MAP_SHARED one is a shmem
 * (tmpfs) page, which costs more to fault in. A guest filling its page cache
 * touches new pages at every step: a virtio-fs `cache: 'auto'` write of
 * 256 MiB into a 256 MiB guest took 18.5 / 12.7 s on shared memory and
 * 7.6 / 7.4 s on private memory (two interleaved pairs, x86_64 test host).
 * Every mapping is MADV_DONTFORK, so that a child process the embedding
 * program forks neither inherits guest RAM nor makes it copy-on-write
 * (which would write-protect every page the guest has, until the child execs),
 * and MADV_DONTDUMP: a core dump of the process holds no guest's RAM (every
 * VM of the process would be in it, gigabytes of other tenants' data).
 * Anonymous mappings are named {@link GUEST_RAM_NAME} where the kernel allows.
 */
export function mapGuestMemory(layout: ReadonlyArray<{ gpa: number; size: number }>, source: MemorySource = { kind: 'anonymous' }): HostGuestMemory {
  const mapped: { addr: bigint; size: number }[] = [];
  const regions: MemoryRegion[] = [];
  const unmap = () => {
    for (const m of mapped.splice(0)) ffi.munmap(m.addr, m.size);
  };
  const fromFile = source.kind === 'file';
  if (fromFile) {
    const need = layout.reduce((n, l) => n + l.size, 0);
    const have = fstatSync(source.fd).size;
    if (have < need) throw new ConfigError('memory', `${source.what} holds ${have} bytes, but the guest's RAM is ${need} bytes: the file is truncated or belongs to another snapshot`, have);
  }
  let fileOffset = 0;
  try {
    for (const l of layout) {
      for (let off = 0; off < l.size; off += MAX_REGION_CHUNK) {
        const size = Math.min(MAX_REGION_CHUNK, l.size - off);
        const addr = fromFile
          ? ffi.mmap(null, size, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_PRIVATE | ffi.MAP_NORESERVE, source.fd, fileOffset)
          : mapAnonymousCongruent(size, ((l.gpa + off) % HUGE_PAGE_SIZE) & ~(PAGE_SIZE - 1));
        if (addr === null || addr === ffi.MAP_FAILED) throw new HostError('mmap(guest memory)', ffi.errno(), `${size} bytes${fromFile ? ` of ${source.what} at ${fileOffset}` : ''}`);
        mapped.push({ addr, size });
        for (const [advice, name] of [[ffi.MADV_DONTFORK, 'MADV_DONTFORK'], [ffi.MADV_DONTDUMP, 'MADV_DONTDUMP']] as const) {
          if (ffi.madvise(addr, size, advice) !== 0) throw new HostError(`madvise(guest memory, ${name})`, ffi.errno(), `${size} bytes`);
        }
        // Only a name for /proc/<pid>/maps: kernels without CONFIG_ANON_VMA_NAME refuse it (EINVAL), which changes nothing else.
        if (!fromFile) ffi.prctlName(ffi.PR_SET_VMA, ffi.PR_SET_VMA_ANON_NAME, addr, size, GUEST_RAM_NAME);
        regions.push(lazyRegion(l.gpa + off, size, addr));
        fileOffset += size;
      }
    }
    return { memory: new GuestMemory(regions), fileBacked: fromFile, unmap };
  } catch (e) {
    unmap();
    throw e;
  }
}

/** The size of a host huge page (x86_64 and arm64 with 4 KiB pages: one PMD). */
export const HUGE_PAGE_SIZE = 2 * MiB;

/**
 * Private anonymous memory (MAP_NORESERVE) of `size` bytes whose address is
 * `phase` modulo {@link HUGE_PAGE_SIZE}, where `phase` is the guest-physical
 * address of its start modulo the same. KVM maps guest RAM with huge pages in
 * the stage-2 tables only where the host address and the guest-physical
 * address agree modulo the huge page size (otherwise it gives the whole
 * memory slot 4 KiB mappings, even where transparent huge pages back it), and
 * kernels before 6.7 place a large anonymous mapping anywhere on a page
 * boundary. So this maps `HUGE_PAGE_SIZE` more than asked and unmaps the
 * ends, as QEMU aligns its RAM. Null (errno set) when mmap fails.
 *
 * In the x86_64 test host (Linux 6.1), a guest writing 200 MiB into its
 * tmpfs took 13.4 and 11.9 s with the slot at 4 KiB (68,809 4 KiB stage-2
 * mappings in KVM's `pages_4k`) and 4.8 and 5.1 s congruent (139 2 MiB ones).
 */
function mapAnonymousCongruent(size: number, phase: number): bigint | null {
  const span = size + HUGE_PAGE_SIZE;
  const raw = ffi.mmap(null, span, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_PRIVATE | ffi.MAP_ANONYMOUS | ffi.MAP_NORESERVE, -1, 0);
  if (raw === null || raw === ffi.MAP_FAILED) return raw;
  const huge = BigInt(HUGE_PAGE_SIZE);
  const addr = raw + ((BigInt(phase) - (raw % huge) + huge) % huge);
  const head = addr - raw;
  const tail = raw + BigInt(span) - (addr + BigInt(size));
  // Both ends are whole pages (raw and addr are page-aligned), so these cannot fail but for a bad address, which they are not.
  if (head > 0n) ffi.munmap(raw, head);
  if (tail > 0n) ffi.munmap(addr + BigInt(size), tail);
  return addr;
}

/** Rebuilds a GuestMemory over mappings another thread made (workers). Does not own them. */
export function attachGuestMemory(descs: readonly RegionDescriptor[]): GuestMemory {
  return new GuestMemory(descs.map((d) => lazyRegion(d.gpa, d.size, d.hostAddr)));
}

/**
 * A region of a host mapping whose JS views are made on first use: the whole
 * region's (`bytes`, for saving it to a file) and, for GuestMemory's accesses,
 * views of parts of it (`view`). A view makes V8 count its whole size as
 * external memory and collect garbage to make room for it (tens of ms per
 * isolate in the TCG test host); a thread pays that only for the parts of
 * guest RAM it touches, and a thread that never touches it (a vCPU worker
 * whose devices do not) pays nothing.
 */
function lazyRegion(gpa: number, size: number, hostAddr: bigint): MemoryRegion {
  return new LazyRegion(gpa, size, hostAddr);
}

/**
 * A class, not an object literal with a getter: every region then shares one
 * hidden class, where a literal's getter closure made a new one per region and
 * left the guest-memory hot paths (find, hostAddressNumber, one call per
 * descriptor) polymorphic: 35 against 25 µs of JS per 1 MiB virtio-fs request
 * of 257 descriptors, natively.
 */
class LazyRegion implements MemoryRegion {
  private whole: Uint8Array | undefined;

  constructor(readonly gpa: number, readonly size: number, readonly hostAddr: bigint) {}

  get bytes(): Uint8Array {
    return (this.whole ??= ffi.viewOf(this.hostAddr, this.size));
  }

  view(offset: number, length: number): Uint8Array {
    return this.whole ? this.whole.subarray(offset, offset + length) : ffi.viewOf(this.hostAddr + BigInt(offset), length);
  }
}

/** What {@link saveGuestMemory} wrote. */
export interface SavedMemoryStats {
  /** Bytes of guest RAM (the file's length). */
  readonly size: number;
  /** Bytes actually written: the other pages are holes that read as zeros. */
  readonly written: number;
}

/** Most bytes one write(2) call gets. */
const MAX_WRITE = 8 * MiB;
const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

/**
 * Writes guest RAM to `fd` (a new, empty file or memfd) as the regions back
 * to back, the layout {@link mapGuestMemory} reads. The file is sized first,
 * then only pages that hold data are written, so the file is sparse: for
 * anonymous memory, pages the guest never touched are skipped without being
 * read (reading them would allocate them; /proc/self/pagemap says which pages
 * are in memory or in swap, where mincore(2) would miss swapped-out ones);
 * every other page is skipped when it is all zeros. For file-backed memory (a restored VM) every
 * page is looked at, since untouched pages hold the old file's data. The
 * vCPUs must be paused (main thread). Throws HostError.
 */
export function saveGuestMemory(mem: HostGuestMemory, fd: number): SavedMemoryStats {
  const size = mem.memory.totalSize;
  ftruncate(fd, size);
  let fileOffset = 0;
  let written = 0;
  for (const r of mem.memory.regions) {
    const pages = Math.ceil(r.size / PAGE_SIZE);
    const touched = !mem.fileBacked && r.hostAddr !== 0n ? touchedPages(r.hostAddr, pages) : null;
    let runStart = -1;
    const flush = (end: number) => {
      for (let at = runStart; at < end; at += MAX_WRITE) {
        const len = Math.min(MAX_WRITE, end - at);
        let done = 0;
        while (done < len) done += writeSync(fd, r.bytes, at + done, len - done, fileOffset + at + done);
        written += len;
      }
      runStart = -1;
    };
    for (let p = 0; p < pages; p++) {
      const at = p * PAGE_SIZE;
      const page = r.bytes.subarray(at, Math.min(at + PAGE_SIZE, r.size));
      const data = (touched === null || touched[p] === 1) && Buffer.compare(page, ZERO_PAGE.subarray(0, page.length)) !== 0;
      if (data && runStart < 0) runStart = at;
      else if (!data && runStart >= 0) flush(at);
    }
    if (runStart >= 0) flush(r.size);
    fileOffset += r.size;
  }
  return { size, written };
}

/** Bits 63 (present) and 62 (swapped) of a /proc/<pid>/pagemap entry, as bits of its last (little-endian) byte. */
const PAGEMAP_PRESENT_OR_SWAPPED = 0xc0;
/** Entries read from /proc/self/pagemap at a time (8 bytes each). */
const PAGEMAP_BATCH = 65536;

/**
 * One byte per page of the `pages` pages at host address `addr`: 1 where the
 * page is in memory or in swap (the guest or a snapshot touched it), 0 where
 * it was never touched. Throws HostError when pagemap cannot be read.
 */
export function touchedPages(addr: bigint, pages: number): Uint8Array {
  const out = new Uint8Array(pages);
  const entries = Buffer.alloc(Math.min(pages, PAGEMAP_BATCH) * 8);
  let fd: number;
  try {
    fd = openSync('/proc/self/pagemap', 'r');
  } catch (e) {
    throw new HostError('open(/proc/self/pagemap)', Math.abs((e as NodeJS.ErrnoException).errno ?? 0), (e as Error).message);
  }
  try {
    const first = Number(addr / BigInt(PAGE_SIZE));
    for (let p = 0; p < pages; p += PAGEMAP_BATCH) {
      const n = Math.min(PAGEMAP_BATCH, pages - p);
      const got = readSync(fd, entries, 0, n * 8, (first + p) * 8);
      if (got !== n * 8) throw new HostError('read(/proc/self/pagemap)', 0, `${got} of ${n * 8} bytes`);
      for (let i = 0; i < n; i++) if ((entries[i * 8 + 7]! & PAGEMAP_PRESENT_OR_SWAPPED) !== 0) out[p + i] = 1;
    }
  } catch (e) {
    if (e instanceof HostError) throw e;
    throw new HostError('read(/proc/self/pagemap)', Math.abs((e as NodeJS.ErrnoException).errno ?? 0), (e as Error).message);
  } finally {
    closeSync(fd);
  }
  return out;
}

function ftruncate(fd: number, size: number): void {
  try {
    ftruncateSync(fd, size);
  } catch (e) {
    throw new HostError('ftruncate(memory file)', Math.abs((e as NodeJS.ErrnoException).errno ?? 0), (e as Error).message);
  }
}
