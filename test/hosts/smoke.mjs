#!/usr/bin/env node
// Smoke check for a KVM host (run inside the real-KVM test host, and locally).
//
// Opens /dev/kvm through koffi, checks the API version, creates a VM with one
// page of memory at GPA 0 and one vCPU, runs a three-instruction real-mode
// guest (`mov al, 0x42; out 0x10, al; hlt`) and checks that KVM reports the
// port write and then the halt. Prints `SMOKE OK` and exits 0 on success;
// prints `SMOKE FAIL: <why>` and exits 1 otherwise.
//
// Plain JavaScript so that it needs no build step.

import koffi from 'koffi';

const t0 = performance.now();

// ioctl numbers, checked against /usr/include/linux/kvm.h (Linux 6.1 UAPI).
const KVM_GET_API_VERSION = 0xae00;
const KVM_CREATE_VM = 0xae01;
const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
const KVM_CREATE_VCPU = 0xae41;
const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
const KVM_RUN = 0xae80;
const KVM_GET_REGS = 0x8090ae81;
const KVM_SET_REGS = 0x4090ae82;
const KVM_GET_SREGS = 0x8138ae83;
const KVM_SET_SREGS = 0x4138ae84;

const KVM_EXIT_IO = 2;
const KVM_EXIT_HLT = 5;
const KVM_EXIT_IO_OUT = 1;

const O_RDWR = 0o2;
const O_CLOEXEC = 0o2000000;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_FAILED = 0xffffffffffffffffn;

const PAGE = 4096;

function fail(msg) {
  console.log(`SMOKE FAIL: ${msg}`);
  process.exit(1);
}

const libc = koffi.load('libc.so.6');
const open = libc.func('open', 'int', ['str', 'int']);
const close = libc.func('close', 'int', ['int']);
const ioctlScalar = libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
const ioctlPtr = libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']);
const mmap = libc.func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'int64_t']);
const munmap = libc.func('munmap', 'int', ['void *', 'size_t']);
const strerror = libc.func('strerror', 'str', ['int']);

function errnoText() {
  const e = koffi.errno();
  return `errno ${e} (${strerror(e)})`;
}

function check(ret, what) {
  if (ret < 0) {
    // Read errno before any other native call.
    const e = errnoText();
    fail(`${what} failed: ${e}`);
  }
  return ret;
}

const kvm = open('/dev/kvm', O_RDWR | O_CLOEXEC);
if (kvm < 0) fail(`open /dev/kvm: ${errnoText()}`);

const api = check(ioctlScalar(kvm, KVM_GET_API_VERSION, 0), 'KVM_GET_API_VERSION');
if (api !== 12) fail(`KVM_GET_API_VERSION returned ${api}, expected 12`);

const vm = check(ioctlScalar(kvm, KVM_CREATE_VM, 0), 'KVM_CREATE_VM');

// One page of guest memory at GPA 0.
const mem = mmap(0n, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
if (mem === MAP_FAILED || mem === 0n || mem === null) fail(`mmap guest memory: ${errnoText()}`);
const memView = new Uint8Array(koffi.view(mem, PAGE));
memView.set([0xb0, 0x42, 0xe6, 0x10, 0xf4], 0); // mov al,0x42; out 0x10,al; hlt

// struct kvm_userspace_memory_region { u32 slot; u32 flags; u64 gpa; u64 size; u64 uaddr; }
const region = Buffer.alloc(32);
region.writeUInt32LE(0, 0);
region.writeUInt32LE(0, 4);
region.writeBigUInt64LE(0n, 8);
region.writeBigUInt64LE(BigInt(PAGE), 16);
region.writeBigUInt64LE(BigInt(mem), 24);
check(ioctlPtr(vm, KVM_SET_USER_MEMORY_REGION, region), 'KVM_SET_USER_MEMORY_REGION');

const vcpu = check(ioctlScalar(vm, KVM_CREATE_VCPU, 0), 'KVM_CREATE_VCPU');
const runSize = check(ioctlScalar(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), 'KVM_GET_VCPU_MMAP_SIZE');
const runPtr = mmap(0n, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
if (runPtr === MAP_FAILED || runPtr === 0n || runPtr === null) fail(`mmap kvm_run: ${errnoText()}`);
const run = Buffer.from(koffi.view(runPtr, runSize));

// Segment registers: cs base 0, selector 0 (everything else as reset).
const sregs = Buffer.alloc(312);
check(ioctlPtr(vcpu, KVM_GET_SREGS, sregs), 'KVM_GET_SREGS');
// kvm_segment { u64 base; u32 limit; u16 selector; ... }; cs is the first segment.
sregs.writeBigUInt64LE(0n, 0);
sregs.writeUInt16LE(0, 12);
check(ioctlPtr(vcpu, KVM_SET_SREGS, sregs), 'KVM_SET_SREGS');

const regs = Buffer.alloc(144);
check(ioctlPtr(vcpu, KVM_GET_REGS, regs), 'KVM_GET_REGS');
regs.fill(0);
regs.writeBigUInt64LE(0n, 128); // rip
regs.writeBigUInt64LE(2n, 136); // rflags (bit 1 is reserved, always 1)
check(ioctlPtr(vcpu, KVM_SET_REGS, regs), 'KVM_SET_REGS');

let sawIo = false;
for (let i = 0; i < 16; i++) {
  check(ioctlScalar(vcpu, KVM_RUN, 0), 'KVM_RUN');
  const reason = run.readUInt32LE(8);
  if (reason === KVM_EXIT_IO) {
    const dir = run.readUInt8(32);
    const size = run.readUInt8(33);
    const port = run.readUInt16LE(34);
    const count = run.readUInt32LE(36);
    const off = Number(run.readBigUInt64LE(40));
    const data = run.readUInt8(off);
    if (dir !== KVM_EXIT_IO_OUT || size !== 1 || port !== 0x10 || count !== 1 || data !== 0x42) {
      fail(`unexpected IO exit: dir ${dir} size ${size} port 0x${port.toString(16)} count ${count} data 0x${data.toString(16)}`);
    }
    sawIo = true;
  } else if (reason === KVM_EXIT_HLT) {
    if (!sawIo) fail('guest halted before the port write');
    check(ioctlPtr(vcpu, KVM_GET_REGS, regs), 'KVM_GET_REGS');
    const rip = regs.readBigUInt64LE(128);
    if (rip !== 5n) fail(`rip after hlt is ${rip}, expected 5`);
    break;
  } else {
    fail(`unexpected exit reason ${reason}`);
  }
  if (i === 15) fail('guest did not halt');
}

munmap(runPtr, runSize);
munmap(mem, PAGE);
close(vcpu);
close(vm);
close(kvm);

const ms = (performance.now() - t0).toFixed(1);
console.log(`smoke: KVM API 12, VM + vCPU created, real-mode guest did OUT 0x10,0x42 then HLT (${ms} ms after module load)`);
console.log('SMOKE OK');
