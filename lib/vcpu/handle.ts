import type { Worker } from 'node:worker_threads';
import { EventEmitter } from 'node:events';
import type { Vcpu } from '../kvm/vcpu.js';
import { log } from '../log.js';
import { FlintvmError } from '../errors.js';
import { installKickHandler, kickThread } from './kick.js';
import { startWorker, type WorkerPool } from '../worker-pool.js';
import {
  CMD_PAUSE, CMD_RUN, CMD_STOP, CTL_CMD, CTL_STATE, CTL_WORDS, STATE_EXITED, STATE_PAUSED, STATE_RUNNING,
  type DeviceEvent, type ExitInfo, type VcpuMessage, type VcpuWorkerData,
} from './protocol.js';

const debug = log('vcpu');
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Resolves when `p` settles or `ms` have passed, whichever is first; the timer does not outlive it. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => { timer = setTimeout(r, ms); })]);
  clearTimeout(timer);
}
const WORKER_URL = new URL('./worker.js', import.meta.url);
/** How often a pause/stop re-kicks a vCPU that has not acknowledged yet. */
const KICK_RETRY_MS = 5;
/**
 * How long stop() waits for the vCPU to acknowledge before it terminates the
 * worker anyway. A healthy vCPU answers a kick in ~0.1 ms (~100 ms inside a
 * TCG test host); one that does not within this is stuck (a worker busy in
 * JavaScript, a lost signal), and stop() must still finish.
 */
export const VCPU_STOP_DEADLINE_MS = 3000;
/** How long stop() lets a worker that is still starting finish its start before terminating it (ms). */
const WORKER_START_DEADLINE_MS = 60_000;

export interface VcpuHandleEvents {
  exit: [ExitInfo];
  'device-event': [DeviceEvent];
  'first-run': [number];
}

/**
 * Main-thread handle on one vCPU worker. Main thread only.
 * Lifecycle: spawn() -> start() -> [pause() -> resume()]* -> stop() / an exit.
 * stop() always ends with the worker terminated, whatever state it was in.
 */
export class VcpuHandle extends EventEmitter<VcpuHandleEvents> {
  private readonly control = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  private worker: Worker | null = null;
  private tid = 0;
  private exited = false;
  private started = false;
  private forced = false;
  private readonly exitedPromise: Promise<void>;
  /** Settles once the worker has said it is ready, or failed, or exited (stop() waits for it). */
  private startSettled: Promise<void> = Promise.resolve();
  private resolveExited!: () => void;

  constructor(readonly vcpu: Vcpu) {
    super();
    this.exitedPromise = new Promise((r) => { this.resolveExited = r; });
  }

  /** Starts the worker (a standby from `pool` when one is ready) and resolves once it is ready to run (devices built, tid known). */
  async spawn(data: Omit<VcpuWorkerData, 'control' | 'vcpuFd' | 'vcpuId' | 'runAddr' | 'runSize'>, pool?: WorkerPool): Promise<void> {
    installKickHandler();
    const wd: VcpuWorkerData = {
      ...data, control: this.control.buffer as SharedArrayBuffer, vcpuFd: this.vcpu.fd, vcpuId: this.vcpu.id,
      runAddr: this.vcpu.runAddr, runSize: this.vcpu.runSize,
    };
    const worker: Worker = startWorker(WORKER_URL, wd, pool);
    this.worker = worker;
    const ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: VcpuMessage) => {
        switch (m.type) {
          case 'ready': this.tid = m.tid; resolve(); break;
          case 'first-run': this.emit('first-run', m.time); break;
          case 'device-event': this.emit('device-event', m.event); break;
          case 'exit': this.markExited(m.exit); break;
          case 'fatal':
            debug('vcpu %d worker failed: %s', this.vcpu.id, m.message);
            reject(new FlintvmError('FLINTVM_E_WORKER', `vCPU ${this.vcpu.id} worker failed: ${m.message}`));
            this.markExited({ reason: 'error', vcpu: this.vcpu.id, detail: { message: m.message.split('\n')[0]! } });
            break;
        }
      });
      worker.once('error', (e) => { reject(new FlintvmError('FLINTVM_E_WORKER', `vCPU ${this.vcpu.id} worker failed: ${e.message}`, { cause: e })); this.markExited({ reason: 'error', vcpu: this.vcpu.id, detail: { message: e.message } }); });
      worker.once('exit', () => { reject(new FlintvmError('FLINTVM_E_WORKER', `vCPU ${this.vcpu.id} worker exited before it was ready`)); this.markExited({ reason: 'error', vcpu: this.vcpu.id }); });
    });
    this.startSettled = ready.catch(() => undefined);
    await ready;
  }

  private markExited(exit: ExitInfo): void {
    if (this.exited) return;
    this.exited = true;
    this.resolveExited();
    this.emit('exit', exit);
  }

  /** True once stop() had to terminate the worker because the vCPU did not acknowledge within the deadline. */
  get forcedStop(): boolean {
    return this.forced;
  }

  get hasExited(): boolean {
    return this.exited;
  }

  /** Lets the worker enter KVM_RUN; with `paused`, it parks before its first KVM_RUN until resume(). */
  start(paused = false): void {
    this.started = true;
    Atomics.store(this.control, CTL_CMD, paused ? CMD_PAUSE : CMD_RUN);
    Atomics.store(this.control, CTL_STATE, STATE_RUNNING);
    Atomics.notify(this.control, CTL_STATE);
  }

  /**
   * Sets the command, then immediate_exit, then signals the thread, until
   * `done()` holds, or until `deadlineMs` has passed (then false).
   */
  private async command(cmd: number, done: () => boolean, deadlineMs = Infinity): Promise<boolean> {
    Atomics.store(this.control, CTL_CMD, cmd);
    Atomics.notify(this.control, CTL_CMD);
    const end = performance.now() + deadlineMs;
    while (!done() && !this.exited) {
      if (performance.now() > end) return false;
      // Order matters: the worker clears immediate_exit before reading the command.
      this.vcpu.setImmediateExit(true);
      if (this.tid) kickThread(this.tid);
      await new Promise((r) => setTimeout(r, KICK_RETRY_MS));
    }
    return true;
  }

  /** Resolves when the vCPU is parked outside KVM_RUN. */
  async pause(): Promise<void> {
    if (this.exited) return;
    await this.command(CMD_PAUSE, () => Atomics.load(this.control, CTL_STATE) === STATE_PAUSED);
  }

  /** True while the worker is parked outside KVM_RUN (after pause(), or a paused start once the worker got there). */
  get isPaused(): boolean {
    return Atomics.load(this.control, CTL_STATE) === STATE_PAUSED;
  }

  resume(): void {
    if (this.exited) return;
    Atomics.store(this.control, CTL_CMD, CMD_RUN);
    Atomics.notify(this.control, CTL_CMD);
  }

  /**
   * Stops the vCPU (if still running) and terminates its worker. Idempotent.
   * Bounded: a vCPU that does not acknowledge within `deadlineMs` has its
   * worker terminated anyway, and its exit says so (`detail.forced` is 1).
   */
  async stop(deadlineMs = VCPU_STOP_DEADLINE_MS): Promise<void> {
    let forced = false;
    if (!this.exited && this.started) {
      const t0 = performance.now();
      const acked = await this.command(CMD_STOP, () => Atomics.load(this.control, CTL_STATE) === STATE_EXITED, deadlineMs);
      // The worker reports its exit by message just after it sets STATE_EXITED: wait for that too, within the deadline.
      if (acked && Atomics.load(this.control, CTL_STATE) !== STATE_EXITED) {
        forced = !(await Promise.race([this.exitedPromise.then(() => true), delay(Math.max(0, deadlineMs - (performance.now() - t0))).then(() => false)]));
      } else forced = !acked;
      if (forced) {
        this.forced = true;
        debug('vcpu %d did not stop within %d ms: terminating its worker', this.vcpu.id, deadlineMs);
      }
    }
    const w = this.worker;
    this.worker = null;
    // A worker still starting (a set-up that failed right after the spawn) may be inside koffi's native addon
    // init, and a worker terminated there aborts the whole process (the addon throws into the terminating
    // thread, which node treats as fatal): it finishes starting first, within a bound.
    if (w && !this.exited) await settledWithin(this.startSettled, WORKER_START_DEADLINE_MS);
    if (w) await w.terminate();
    this.markExited({ reason: 'stopped', vcpu: this.vcpu.id, ...(forced ? { detail: { forced: 1, message: `vCPU ${this.vcpu.id} did not stop within ${deadlineMs} ms; its worker was terminated` } } : {}) });
  }
}
