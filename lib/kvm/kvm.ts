import { KvmError } from '../errors.js';
import * as ffi from './ffi.js';
import * as io from './ioctls.js';
import { decodeCpuid, KVM_CPUID_ENTRY2_SIZE } from './structs.js';
import type { CpuidEntry } from './types.js';
import { Vm } from './vm.js';
import { ioctlPtr, ioctlValue } from './call.js';
import { E2BIG, EACCES, ENOENT, EPERM } from '../sys.js';

export { ioctlPtr, ioctlValue };

/**
 * The KVM system fd (/dev/kvm): capability queries and VM creation.
 * One method per ioctl, no policy. Not thread-bound (fds are process-wide).
 */
export class Kvm {
  private closed = false;

  private constructor(readonly fd: number) {}

  /**
   * Opens /dev/kvm. Throws KvmError with a fix-it hint when the device is
   * missing or not permitted, and when the API version is not 12.
   */
  static open(path = '/dev/kvm'): Kvm {
    const fd = ffi.open(path, ffi.O_RDWR | ffi.O_CLOEXEC, 0);
    if (fd < 0) {
      const e = ffi.errno();
      const hint = e === EACCES || e === EPERM
        ? `no permission to open ${path}; add your user to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again) or run as root`
        : e === ENOENT
          ? `${path} does not exist; load the KVM module (modprobe kvm_intel or kvm_amd) and enable virtualization in the BIOS/hypervisor`
          : `cannot open ${path}`;
      throw new KvmError(`open(${path})`, e, hint);
    }
    const kvm = new Kvm(fd);
    let version: number;
    try {
      version = kvm.apiVersion();
    } catch (e) {
      kvm.close();
      throw e;
    }
    if (version !== io.KVM_API_VERSION) {
      kvm.close();
      throw new KvmError('KVM_GET_API_VERSION', 0, `unexpected KVM API version ${version} (want ${io.KVM_API_VERSION})`);
    }
    return kvm;
  }

  apiVersion(): number {
    return ioctlValue(this.fd, io.KVM_GET_API_VERSION);
  }

  /** KVM_CHECK_EXTENSION: 0 when unsupported, else a capability-specific value. */
  checkExtension(cap: number): number {
    return ioctlValue(this.fd, io.KVM_CHECK_EXTENSION, cap);
  }

  /** Size in bytes of the kvm_run mapping of each vCPU fd. */
  vcpuMmapSize(): number {
    return ioctlValue(this.fd, io.KVM_GET_VCPU_MMAP_SIZE);
  }

  /** Maximum vCPUs per VM (KVM_CAP_MAX_VCPUS, falling back to NR_VCPUS, then 4 as the API says). */
  maxVcpus(): number {
    return this.checkExtension(io.KVM_CAP_MAX_VCPUS) || this.checkExtension(io.KVM_CAP_NR_VCPUS) || 4;
  }

  /** KVM_GET_SUPPORTED_CPUID, growing the buffer until the kernel's list fits. */
  supportedCpuid(): CpuidEntry[] {
    for (let n = 64; n <= 4096; n *= 2) {
      const buf = new Uint8Array(8 + n * KVM_CPUID_ENTRY2_SIZE);
      new DataView(buf.buffer).setUint32(0, n, true);
      const r = ffi.ioctlPtr(this.fd, io.KVM_GET_SUPPORTED_CPUID, buf);
      if (r >= 0) return decodeCpuid(buf);
      const e = ffi.errno();
      if (e !== E2BIG) throw new KvmError('KVM_GET_SUPPORTED_CPUID', e);
    }
    throw new KvmError('KVM_GET_SUPPORTED_CPUID', E2BIG, 'more than 4096 entries');
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs this host lets guests' state be saved/restored for. */
  msrIndexList(): number[] {
    for (let n = 256; n <= 16384; n *= 2) {
      const buf = new Uint8Array(4 + n * 4);
      const d = new DataView(buf.buffer);
      d.setUint32(0, n, true);
      const r = ffi.ioctlPtr(this.fd, io.KVM_GET_MSR_INDEX_LIST, buf);
      if (r >= 0) {
        const count = d.getUint32(0, true);
        return Array.from({ length: count }, (_, i) => d.getUint32(4 + i * 4, true));
      }
      const e = ffi.errno();
      if (e !== E2BIG) throw new KvmError('KVM_GET_MSR_INDEX_LIST', e);
    }
    throw new KvmError('KVM_GET_MSR_INDEX_LIST', E2BIG, 'more than 16384 MSRs');
  }

  /** KVM_CREATE_VM (machine type 0). */
  createVm(): Vm {
    const fd = ioctlValue(this.fd, io.KVM_CREATE_VM, 0);
    return new Vm(this, fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    ffi.close(this.fd);
  }
}
