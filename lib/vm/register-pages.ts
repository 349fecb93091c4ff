/**
 * Register pages: the virtio-mmio registers a driver reads, served from
 * memory instead of MMIO exits.
 *
 * Linux's virtio-mmio driver reads InterruptStatus in every interrupt and
 * then writes InterruptAck: two exits to a vCPU worker per completion, each a
 * return from KVM_RUN into JS and back (about 80 µs in the x86_64 test host).
 * Here each virtio device gets one 4 KiB page of host memory laid out as its
 * MMIO window (devices/virtio/transport/state.ts keeps it current), and the
 * pages of all devices, which sit back to back in guest-physical space, become
 * one read-only KVM memory slot (KVM_MEM_READONLY) over the windows. Reads are
 * then plain loads in the guest; writes to a read-only slot still exit as
 * MMIO (and KVM still hands QueueNotify to its ioeventfds first), so
 * the transport sees every write as before. A completion costs one exit.
 *
 * Where it is not used (the transport then answers reads on exits, from the
 * same state):
 * - arm64: the guest maps the windows as Device memory, so its loads bypass
 *   the cache while the host writes the page through it; without FEAT_S2FWB
 *   (which lets KVM force the guest's accesses to be cacheable) the guest
 *   could read stale values.
 * - a KVM without KVM_CAP_READONLY_MEM.
 */
import * as ffi from '../kvm/ffi.js';
import { KVM_CAP_NR_MEMSLOTS, KVM_CAP_READONLY_MEM, KVM_MEM_READONLY } from '../kvm/ioctls.js';
import type { Vm } from '../kvm/vm.js';
import { HostError } from '../errors.js';
import { REGISTER_PAGE_BYTES } from '../../devices/virtio/transport/state.js';

/** The name the pages have in /proc/<pid>/maps, `[anon:flintvm-virtio-registers]`, where the kernel can name anonymous mappings. */
export const REGISTER_PAGES_NAME = 'flintvm-virtio-registers';

/** The host memory behind the register pages of one VM's virtio devices, in slot order. */
export interface RegisterPages {
  /** Host address of device `i`'s page. */
  address(i: number): bigint;
  /** A view of device `i`'s page (this thread's; see {@link registerPageView}). */
  view(i: number): Int32Array;
  /** Unmaps the pages: after the VM fd is closed and every worker that had a view has stopped. */
  unmap(): void;
}

/** Maps `count` zeroed pages, one per virtio device (count > 0). */
export function mapRegisterPages(count: number): RegisterPages {
  const bytes = count * REGISTER_PAGE_BYTES;
  const addr = ffi.mmap(null, bytes, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_PRIVATE | ffi.MAP_ANONYMOUS, -1, 0);
  if (addr === null || addr === ffi.MAP_FAILED) throw new HostError('mmap(virtio register pages)', ffi.errno(), `${bytes} bytes`);
  // A child the embedding program forks gets no copy (as for guest RAM, lib/memory/host-memory.ts).
  if (ffi.madvise(addr, bytes, ffi.MADV_DONTFORK) !== 0) {
    const e = ffi.errno();
    ffi.munmap(addr, bytes);
    throw new HostError('madvise(virtio register pages, MADV_DONTFORK)', e, `${bytes} bytes`);
  }
  // Only a name for /proc/<pid>/maps (tests look for leaks by it); kernels without CONFIG_ANON_VMA_NAME refuse it.
  ffi.prctlName(ffi.PR_SET_VMA, ffi.PR_SET_VMA_ANON_NAME, addr, bytes, REGISTER_PAGES_NAME);
  let mapped = true;
  const address = (i: number) => {
    if (!Number.isInteger(i) || i < 0 || i >= count) throw new RangeError(`no register page ${i} of ${count}`);
    return addr + BigInt(i * REGISTER_PAGE_BYTES);
  };
  return {
    address,
    view: (i) => registerPageView(address(i)),
    unmap() {
      if (!mapped) return;
      mapped = false;
      ffi.munmap(addr, bytes);
    },
  };
}

/** A view of the register page at host address `addr`, for any thread of the process (the mapping is the process's). */
export function registerPageView(addr: bigint): Int32Array {
  const bytes = ffi.viewOf(addr, REGISTER_PAGE_BYTES);
  return new Int32Array(bytes.buffer, bytes.byteOffset, REGISTER_PAGE_BYTES / 4);
}

/**
 * Maps the pages into the guest as one read-only memory slot over the device
 * windows at `bases` (one per page, in order, back to back), when this KVM can
 * (KVM_CAP_READONLY_MEM). Uses the last memory slot id the VM allows, far
 * above guest RAM's. Returns whether it did.
 */
export async function installRegisterPages(vm: Vm, pages: RegisterPages, bases: readonly number[]): Promise<boolean> {
  if (bases.length === 0 || vm.checkExtension(KVM_CAP_READONLY_MEM) <= 0) return false;
  bases.forEach((b, i) => {
    if (b !== bases[0]! + i * REGISTER_PAGE_BYTES) throw new RangeError(`virtio window ${i} at 0x${b.toString(16)} does not follow window ${i - 1}: register pages need back-to-back windows`);
  });
  const slots = vm.checkExtension(KVM_CAP_NR_MEMSLOTS);
  if (slots < 2) return false;
  await vm.setUserMemoryRegion(slots - 1, bases[0]!, bases.length * REGISTER_PAGE_BYTES, pages.address(0), KVM_MEM_READONLY);
  return true;
}
