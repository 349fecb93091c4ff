#!/usr/bin/env node
// Smoke check for an arm64 KVM host (run inside the arm64 real-KVM test host).
//
// Opens /dev/kvm through koffi, checks the API version, creates a VM (type 0:
// the default 40-bit IPA space) with one page of memory at GPA 0x10000 and one
// vCPU (KVM_ARM_PREFERRED_TARGET + KVM_ARM_VCPU_INIT), sets its PC with
// KVM_SET_ONE_REG and runs, with the MMU off, at EL1:
//
//   0x10000  movz x1, #0x1000, lsl #16   // x1 = 0x10000000 (no memory there)
//   0x10004  mov  x0, #0x42
//   0x10008  str  x0, [x1]               // -> KVM_EXIT_MMIO write 0x42 @ 0x10000000
//   0x1000c  ldr  x3, [x1]               // -> KVM_EXIT_MMIO read  @ 0x10000000, we answer 0x1234
//   0x10010  str  x3, [x1, #8]           // -> KVM_EXIT_MMIO write 0x1234 @ 0x10000008
//   0x10014  b    .
//
// and checks the three MMIO exits (the read's answer travels through the
// guest's x3) and the PC. Prints `SMOKE OK` and exits 0 on success; prints
// `SMOKE FAIL: <why>` and exits 1 otherwise.
//
// Plain JavaScript so that it needs no build step.

import koffi from 'koffi';

if (process.arch !== 'arm64') {
  console.log(`SMOKE FAIL: this is the arm64 smoke check, and node runs on ${process.arch}`);
  process.exit(1);
}

// ioctl numbers: the generic _IO/_IOR/_IOW encoding (same on arm64 as on x86-64), checked
// against linux-libc-dev:arm64 6.1 (linux/kvm.h, asm/kvm.h).
const KVM_GET_API_VERSION = 0xae00;
const KVM_CREATE_VM = 0xae01;
const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
const KVM_CREATE_VCPU = 0xae41;
const KVM_SET_USER_MEMORY_REGION = 0x4020ae46; // _IOW(0xae, 0x46, 32 bytes)
const KVM_RUN = 0xae80;
const KVM_GET_ONE_REG = 0x4010aeab; // _IOW(0xae, 0xab, struct kvm_one_reg: 16 bytes)
const KVM_SET_ONE_REG = 0x4010aeac; // _IOW(0xae, 0xac, struct kvm_one_reg)
const KVM_ARM_VCPU_INIT = 0x4020aeae; // _IOW(0xae, 0xae, struct kvm_vcpu_init: 32 bytes)
const KVM_ARM_PREFERRED_TARGET = 0x8020aeaf; // _IOR(0xae, 0xaf, struct kvm_vcpu_init)

const KVM_EXIT_MMIO = 6;

// Register ids: KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offsetof(struct kvm_regs, x) / 4).
// struct kvm_regs starts with struct user_pt_regs { u64 regs[31]; u64 sp; u64 pc; u64 pstate; }.
const KVM_REG_ARM64 = 0x6000000000000000n;
const KVM_REG_SIZE_U64 = 0x0030000000000000n;
const KVM_REG_ARM_CORE = 0x0010n << 16n;
const coreReg = (byteOffset) => KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | BigInt(byteOffset / 4);
const REG_X = (n) => coreReg(8 * n);
const REG_PC = coreReg(8 * 32); // 0x6030000000100040
const REG_PSTATE = coreReg(8 * 33);

const O_RDWR = 0o2;
const O_CLOEXEC = 0o2000000;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_FAILED = 0xffffffffffffffffn;

const PAGE = 4096;
const CODE_GPA = 0x10000n;
const MMIO_GPA = 0x10000000n;

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

const t0 = performance.now();
const kvm = open('/dev/kvm', O_RDWR | O_CLOEXEC);
if (kvm < 0) fail(`open /dev/kvm: ${errnoText()}`);

const api = check(ioctlScalar(kvm, KVM_GET_API_VERSION, 0), 'KVM_GET_API_VERSION');
if (api !== 12) fail(`KVM_GET_API_VERSION returned ${api}, expected 12`);

const vm = check(ioctlScalar(kvm, KVM_CREATE_VM, 0), 'KVM_CREATE_VM');

// One page of guest memory at CODE_GPA, holding the code.
const mem = mmap(0n, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
if (mem === MAP_FAILED || mem === 0n || mem === null) fail(`mmap guest memory: ${errnoText()}`);
const code = Buffer.from(koffi.view(mem, PAGE));
[0xd2a20001, 0xd2800840, 0xf9000020, 0xf9400023, 0xf9000423, 0x14000000].forEach((insn, i) => code.writeUInt32LE(insn, 4 * i));

// struct kvm_userspace_memory_region { u32 slot; u32 flags; u64 gpa; u64 size; u64 uaddr; }
const region = Buffer.alloc(32);
region.writeUInt32LE(0, 0);
region.writeUInt32LE(0, 4);
region.writeBigUInt64LE(CODE_GPA, 8);
region.writeBigUInt64LE(BigInt(PAGE), 16);
region.writeBigUInt64LE(BigInt(mem), 24);
check(ioctlPtr(vm, KVM_SET_USER_MEMORY_REGION, region), 'KVM_SET_USER_MEMORY_REGION');

const vcpu = check(ioctlScalar(vm, KVM_CREATE_VCPU, 0), 'KVM_CREATE_VCPU');

// struct kvm_vcpu_init { u32 target; u32 features[7]; }: the preferred target, no features.
const init = Buffer.alloc(32);
check(ioctlPtr(vm, KVM_ARM_PREFERRED_TARGET, init), 'KVM_ARM_PREFERRED_TARGET');
const target = init.readUInt32LE(0);
init.fill(0, 4);
check(ioctlPtr(vcpu, KVM_ARM_VCPU_INIT, init), 'KVM_ARM_VCPU_INIT');

const runSize = check(ioctlScalar(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), 'KVM_GET_VCPU_MMAP_SIZE');
const runPtr = mmap(0n, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
if (runPtr === MAP_FAILED || runPtr === 0n || runPtr === null) fail(`mmap kvm_run: ${errnoText()}`);
const run = Buffer.from(koffi.view(runPtr, runSize));

// struct kvm_one_reg { u64 id; u64 addr; }, addr pointing at a u64: both in a page of our own, so that
// the address handed to the kernel is stable.
const scratch = mmap(0n, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
if (scratch === MAP_FAILED || scratch === 0n || scratch === null) fail(`mmap scratch page: ${errnoText()}`);
const scratchView = Buffer.from(koffi.view(scratch, PAGE));
const oneReg = scratchView.subarray(0, 16);
const regVal = scratchView.subarray(16, 24);
const regValAddr = BigInt(scratch) + 16n;
function setReg(id, value, name) {
  regVal.writeBigUInt64LE(value, 0);
  oneReg.writeBigUInt64LE(id, 0);
  oneReg.writeBigUInt64LE(regValAddr, 8);
  check(ioctlPtr(vcpu, KVM_SET_ONE_REG, oneReg), `KVM_SET_ONE_REG ${name}`);
}
function getReg(id, name) {
  oneReg.writeBigUInt64LE(id, 0);
  oneReg.writeBigUInt64LE(regValAddr, 8);
  check(ioctlPtr(vcpu, KVM_GET_ONE_REG, oneReg), `KVM_GET_ONE_REG ${name}`);
  return regVal.readBigUInt64LE(0);
}

const pstate = getReg(REG_PSTATE, 'pstate'); // after VCPU_INIT: EL1h, DAIF masked (0x3c5)
setReg(REG_PC, CODE_GPA, 'pc');
if (getReg(REG_PC, 'pc') !== CODE_GPA) fail('PC did not read back as set');

// kvm_run: exit_reason u32 at 8; mmio { u64 phys_addr @32; u8 data[8] @40; u32 len @48; u8 is_write @52 }.
function runToMmio(step) {
  check(ioctlScalar(vcpu, KVM_RUN, 0), `KVM_RUN (${step})`);
  const reason = run.readUInt32LE(8);
  if (reason !== KVM_EXIT_MMIO) {
    let pc = '?';
    try {
      pc = '0x' + getReg(REG_PC, 'pc').toString(16);
    } catch {
      /* fail() exits */
    }
    fail(`${step}: exit reason ${reason}, expected KVM_EXIT_MMIO (${KVM_EXIT_MMIO}); pc ${pc}`);
  }
  return {
    addr: run.readBigUInt64LE(32),
    data: run.readBigUInt64LE(40),
    len: run.readUInt32LE(48),
    isWrite: run.readUInt8(52),
  };
}
const hex = (v) => '0x' + v.toString(16);

let e = runToMmio('str x0, [x1]');
if (!e.isWrite || e.addr !== MMIO_GPA || e.len !== 8 || e.data !== 0x42n) {
  fail(`unexpected MMIO exit for str: is_write ${e.isWrite} addr ${hex(e.addr)} len ${e.len} data ${hex(e.data)}`);
}
const pcAtWrite = getReg(REG_PC, 'pc');
if (pcAtWrite !== CODE_GPA + 8n) fail(`PC at the MMIO write is ${hex(pcAtWrite)}, expected ${hex(CODE_GPA + 8n)}`);

e = runToMmio('ldr x3, [x1]');
if (e.isWrite || e.addr !== MMIO_GPA || e.len !== 8) {
  fail(`unexpected MMIO exit for ldr: is_write ${e.isWrite} addr ${hex(e.addr)} len ${e.len}`);
}
run.writeBigUInt64LE(0x1234n, 40); // the value the load returns

e = runToMmio('str x3, [x1, #8]');
if (!e.isWrite || e.addr !== MMIO_GPA + 8n || e.len !== 8 || e.data !== 0x1234n) {
  fail(`unexpected MMIO exit for the second str: is_write ${e.isWrite} addr ${hex(e.addr)} len ${e.len} data ${hex(e.data)}`);
}
const x3 = getReg(REG_X(3), 'x3');
if (x3 !== 0x1234n) fail(`x3 is ${hex(x3)}, expected 0x1234 (the MMIO read's answer)`);

munmap(runPtr, runSize);
munmap(mem, PAGE);
munmap(scratch, PAGE);
close(vcpu);
close(vm);
close(kvm);

const ms = (performance.now() - t0).toFixed(1);
console.log(
  `smoke: KVM API 12, VM + vCPU (target ${target}, pstate ${hex(pstate)}) created; EL1 guest did MMIO write 0x42 @ ${hex(MMIO_GPA)}, ` +
    `read (answered 0x1234), write 0x1234 @ ${hex(MMIO_GPA + 8n)} (${ms} ms)`,
);
console.log('SMOKE OK');
