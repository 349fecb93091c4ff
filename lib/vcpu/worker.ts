/**
 * vCPU worker: one worker_thread per vCPU, blocked in KVM_RUN. PIO and MMIO
 * exits are handled here, inline, through this thread's own bus over device
 * state that lives in SharedArrayBuffers (ARCHITECTURE.md §3): handing each
 * exit to another thread would cost ~90 us. Every other exit ends the loop
 * and is reported to the main thread as an `exit` message with the registers.
 */
import { parentPort } from 'node:worker_threads';
import { Bus } from '../bus/bus.js';
import { Vcpu } from '../kvm/vcpu.js';
import { Vm } from '../kvm/vm.js';
import * as ffi from '../kvm/ffi.js';
import { KVM_EXIT_IO, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO, KVM_EXIT_INTR, type VcpuExit } from '../kvm/exit.js';
import {
  RUN_EXIT_REASON, RUN_IO_COUNT, RUN_IO_DATA_OFFSET, RUN_IO_DIRECTION, RUN_IO_PORT, RUN_IO_SIZE,
  RUN_MMIO_DATA, RUN_MMIO_IS_WRITE, RUN_MMIO_LEN, RUN_MMIO_PHYS_ADDR,
} from '../kvm/run-layout.js';
import { attachGuestMemory } from '../memory/host-memory.js';
import { installKickHandler } from './kick.js';
import { entryData } from '../worker-data.js';
import { importWorkerModule } from '../worker-modules.js';
import {
  CMD_PAUSE, CMD_RUN, CMD_STOP, CTL_CMD, CTL_STATE, CTL_TID, STATE_EXITED, STATE_PAUSED, STATE_RUNNING,
  type DeviceContext, type DeviceFactory, type ExitInfo, type ExitReason, type VcpuMessage, type VcpuWorkerData,
} from './protocol.js';
import type { Trigger } from '../interrupt/trigger.js';
import { IrqLines } from '../interrupt/line.js';
import { EAGAIN, EINTR } from '../sys.js';
import { IS_ARM64, lowerThisThreadPriority, monotonicMs, nameThisThread } from '../sys.js';
import { errnoName } from '../errors.js';
import { log } from '../log.js';

const debug = log('vcpu');

const data = entryData<VcpuWorkerData>();
const port = parentPort!;
const post = (m: VcpuMessage) => port.postMessage(m);
const control = new Int32Array(data.control);

async function main(): Promise<void> {
  installKickHandler();
  nameThisThread(`flintvm-vcpu${data.vcpuId}`);
  if (data.niceIncrement > 0) {
    // Best effort: a vCPU at the process's priority still runs the guest correctly, only its devices answer later.
    const r = lowerThisThreadPriority(data.niceIncrement);
    if ('errno' in r) debug('vCPU %d: setpriority(+%d) failed: %s', data.vcpuId, data.niceIncrement, errnoName(r.errno));
    else debug('vCPU %d runs at nice %d', data.vcpuId, r.nice);
  }
  const vm = Vm.attach(data.vmFd);
  const lines = new IrqLines(vm, data.irqLock);
  const vcpu = Vcpu.attach(data.vcpuFd, data.vcpuId, data.runAddr, data.runSize);
  const memory = attachGuestMemory(data.memory);
  const pio = new Bus('pio');
  const mmio = new Bus('mmio');
  let pendingExit: ExitInfo | null = null;

  const ctx: DeviceContext = {
    vcpuId: data.vcpuId,
    memory,
    irqLine(gsi: number): Trigger {
      return lines.trigger(gsi);
    },
    emit(event) {
      post({ type: 'device-event', event });
    },
    requestExit(reason: ExitReason, detail?: ExitInfo['detail']) {
      pendingExit ??= { reason, vcpu: data.vcpuId, ...(detail ? { detail } : {}) };
    },
    now: () => data.epochOffsetMs + monotonicMs(),
  };
  const factory = ((await importWorkerModule(data.deviceModule)) as { createBusDevice: DeviceFactory }).createBusDevice;
  for (const spec of data.devices) {
    (spec.space === 'pio' ? pio : mmio).insert(spec.base, spec.length, factory(spec.params, ctx));
  }

  Atomics.store(control, CTL_TID, ffi.gettid());
  post({ type: 'ready', tid: ffi.gettid() });
  // Wait for the go: the main thread sets CMD_RUN (or STOP) after every vCPU is configured.
  while (Atomics.load(control, CTL_STATE) !== STATE_RUNNING) Atomics.wait(control, CTL_STATE, Atomics.load(control, CTL_STATE), 1000);

  // Started paused (a restored VM): park before running any guest code.
  if (Atomics.load(control, CTL_CMD) !== CMD_RUN && !waitWhilePaused()) return finish({ reason: 'stopped', vcpu: data.vcpuId });
  const run = vcpu.runView;
  let first = true;
  for (;;) {
    if (first) {
      post({ type: 'first-run', time: ctx.now() });
      first = false;
    }
    const r = vcpu.runOnce();
    if (r < 0) {
      if (-r === EINTR || -r === EAGAIN) {
        // Clear immediate_exit *before* reading the command: a pause/stop posted after
        // our read sets it again, so the next KVM_RUN returns at once (see handle.ts).
        vcpu.setImmediateExit(false);
        if (!waitWhilePaused()) return finish({ reason: 'stopped', vcpu: data.vcpuId });
        continue;
      }
      return finish({ reason: 'error', vcpu: data.vcpuId, detail: { errno: -r, ioctl: 'KVM_RUN' } });
    }
    const reason = run.getUint32(RUN_EXIT_REASON, true);
    if (reason === KVM_EXIT_IO) {
      handleIo(run, pio);
    } else if (reason === KVM_EXIT_MMIO) {
      handleMmio(run, mmio);
    } else if (reason === KVM_EXIT_INTR) {
      if (!waitWhilePaused()) return finish({ reason: 'stopped', vcpu: data.vcpuId });
      continue;
    } else {
      return finish(describeExit(vcpu.exit(), vcpu));
    }
    if (pendingExit) return finish(pendingExit);
  }
}

/** PIO exit: data lives in the run page at data_offset; `count` > 1 for rep ins/outs. */
function handleIo(run: DataView, pio: Bus): void {
  const isOut = run.getUint8(RUN_IO_DIRECTION) === KVM_EXIT_IO_OUT;
  const size = run.getUint8(RUN_IO_SIZE);
  const portNo = run.getUint16(RUN_IO_PORT, true);
  const count = run.getUint32(RUN_IO_COUNT, true);
  // data_offset is a u64, read as two u32s (no BigInt per exit). KVM guarantees data_offset + size*count
  // stays inside the run mapping, and never sets the high half; check both anyway.
  const off = run.getUint32(RUN_IO_DATA_OFFSET, true);
  if (run.getUint32(RUN_IO_DATA_OFFSET + 4, true) !== 0) return;
  if (size !== 1 && size !== 2 && size !== 4) return;
  if (off + size * count > run.byteLength) return;
  for (let i = 0; i < count; i++) {
    const o = off + i * size;
    if (isOut) {
      const v = size === 1 ? run.getUint8(o) : size === 2 ? run.getUint16(o, true) : run.getUint32(o, true);
      pio.write(portNo, size, v);
    } else {
      const v = pio.read(portNo, size);
      if (size === 1) run.setUint8(o, v);
      else if (size === 2) run.setUint16(o, v, true);
      else run.setUint32(o, v >>> 0, true);
    }
  }
}

/** MMIO exit: up to 8 bytes at run.mmio.data. Accesses wider than 4 bytes are split in two. */
function handleMmio(run: DataView, mmio: Bus): void {
  // phys_addr is a u64: two u32 reads, exact as a Number below 2^53 (no BigInt per exit).
  const hi = run.getUint32(RUN_MMIO_PHYS_ADDR + 4, true);
  if (hi >= 0x20_0000) return; // at or above 2^53: no device lives there
  const addr = hi * 0x1_0000_0000 + run.getUint32(RUN_MMIO_PHYS_ADDR, true);
  const len = run.getUint32(RUN_MMIO_LEN, true);
  const isWrite = run.getUint8(RUN_MMIO_IS_WRITE) !== 0;
  if (len === 8) {
    mmioPart(run, mmio, isWrite, addr, 0, 4);
    mmioPart(run, mmio, isWrite, addr, 4, 4);
  } else if (len === 1 || len === 2 || len === 4) {
    mmioPart(run, mmio, isWrite, addr, 0, len);
  }
}

/** One access of `n` (1, 2 or 4) bytes at run.mmio.data + `o`, to or from the device at `addr` + `o`. */
function mmioPart(run: DataView, mmio: Bus, isWrite: boolean, addr: number, o: number, n: number): void {
  const at = RUN_MMIO_DATA + o;
  if (isWrite) {
    const v = n === 1 ? run.getUint8(at) : n === 2 ? run.getUint16(at, true) : run.getUint32(at, true);
    mmio.write(addr + o, n, v);
  } else {
    const v = mmio.read(addr + o, n);
    if (n === 1) run.setUint8(at, v);
    else if (n === 2) run.setUint16(at, v, true);
    else run.setUint32(at, v >>> 0, true);
  }
}

/** Parks the thread while paused. Returns false when told to stop. */
function waitWhilePaused(): boolean {
  for (;;) {
    const cmd = Atomics.load(control, CTL_CMD);
    if (cmd === CMD_STOP) return false;
    if (cmd === CMD_RUN) {
      if (Atomics.load(control, CTL_STATE) !== STATE_RUNNING) {
        Atomics.store(control, CTL_STATE, STATE_RUNNING);
        Atomics.notify(control, CTL_STATE);
      }
      return true;
    }
    if (cmd === CMD_PAUSE && Atomics.load(control, CTL_STATE) !== STATE_PAUSED) {
      Atomics.store(control, CTL_STATE, STATE_PAUSED);
      Atomics.notify(control, CTL_STATE);
    }
    Atomics.wait(control, CTL_CMD, cmd, 1000);
  }
}

/** Turns a terminal exit into an ExitInfo with the registers. */
function describeExit(e: VcpuExit, vcpu: Vcpu): ExitInfo {
  const base = { vcpu: data.vcpuId, ...safeRegs(vcpu) };
  switch (e.kind) {
    case 'hlt': return { ...base, reason: 'halt' };
    case 'shutdown': return { ...base, reason: 'triple-fault' };
    case 'system-event':
      return { ...base, reason: e.type === 'reset' ? 'reset' : e.type === 'crash' ? 'crash' : 'poweroff', detail: { type: e.rawType } };
    case 'internal-error': return { ...base, reason: 'internal-error', detail: { suberror: e.suberror, data: e.data } };
    case 'fail-entry': return { ...base, reason: 'fail-entry', detail: { hardwareReason: e.hardwareReason, cpu: e.cpu } };
    case 'exception': return { ...base, reason: 'exception', detail: { exception: e.exception, errorCode: e.errorCode } };
    case 'unknown': return { ...base, reason: 'unknown', detail: { hardwareReason: e.hardwareReason } };
    case 'other': return { ...base, reason: 'unknown', detail: { exitReason: e.reason } };
    default: return { ...base, reason: 'unknown', detail: { exit: e.kind } };
  }
}

function safeRegs(vcpu: Vcpu): Pick<ExitInfo, 'regs' | 'armRegs'> {
  try {
    return IS_ARM64 ? { armRegs: vcpu.getArmCoreRegs() } : { regs: vcpu.getRegs() };
  } catch {
    return {};
  }
}

function finish(exit: ExitInfo): void {
  Atomics.store(control, CTL_STATE, STATE_EXITED);
  Atomics.notify(control, CTL_STATE);
  post({ type: 'exit', exit });
}

main().catch((e: unknown) => {
  Atomics.store(control, CTL_STATE, STATE_EXITED);
  Atomics.notify(control, CTL_STATE);
  post({ type: 'fatal', message: e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e) });
});
