import type { Worker } from 'node:worker_threads';
import { EventEmitter } from 'node:events';
import type { Vcpu } from '../kvm/vcpu.js';
import { log } from '../log.js';
import { installKickHandler, kickThread } from './kick.js';
import { startWorker, type WorkerPool } from '../worker-pool.js';
import {
  CMD_PAUSE, CMD_RUN, CMD_STOP, CTL_CMD, CTL_STATE, CTL_WORDS, STATE_EXITED, STATE_PAUSED, STATE_RUNNING,
  type DeviceEvent, type ExitInfo, type VcpuMessage, type VcpuWorkerData,
} from './protocol.js';

const debug = log('vcpu');
const WORKER_URL = new URL('./worker.js', import.meta.url);
/** How often a pause/stop re-kicks a vCPU that has not acknowledged yet. */
const KICK_RETRY_MS = 5;

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
  private readonly exitedPromise: Promise<void>;
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
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: VcpuMessage) => {
        switch (m.type) {
          case 'ready': this.tid = m.tid; resolve(); break;
          case 'first-run': this.emit('first-run', m.time); break;
          case 'device-event': this.emit('device-event', m.event); break;
          case 'exit': this.markExited(m.exit); break;
          case 'fatal':
            debug('vcpu %d worker failed: %s', this.vcpu.id, m.message);
            reject(new Error(`vCPU ${this.vcpu.id} worker failed: ${m.message}`));
            this.markExited({ reason: 'error', vcpu: this.vcpu.id, detail: { message: m.message.split('\n')[0]! } });
            break;
        }
      });
      worker.once('error', (e) => { reject(e); this.markExited({ reason: 'error', vcpu: this.vcpu.id, detail: { message: e.message } }); });
      worker.once('exit', () => { reject(new Error(`vCPU ${this.vcpu.id} worker exited early`)); this.markExited({ reason: 'error', vcpu: this.vcpu.id }); });
    });
  }

  private markExited(exit: ExitInfo): void {
    if (this.exited) return;
    this.exited = true;
    this.resolveExited();
    this.emit('exit', exit);
  }

  get hasExited(): boolean {
    return this.exited;
  }

  /** Lets the worker enter KVM_RUN. */
  start(): void {
    this.started = true;
    Atomics.store(this.control, CTL_CMD, CMD_RUN);
    Atomics.store(this.control, CTL_STATE, STATE_RUNNING);
    Atomics.notify(this.control, CTL_STATE);
  }

  /** Sets the command, then immediate_exit, then signals the thread, until `done()` holds. */
  private async command(cmd: number, done: () => boolean): Promise<void> {
    Atomics.store(this.control, CTL_CMD, cmd);
    Atomics.notify(this.control, CTL_CMD);
    while (!done() && !this.exited) {
      // Order matters: the worker clears immediate_exit before reading the command.
      this.vcpu.setImmediateExit(true);
      if (this.tid) kickThread(this.tid);
      await new Promise((r) => setTimeout(r, KICK_RETRY_MS));
    }
  }

  /** Resolves when the vCPU is parked outside KVM_RUN. */
  async pause(): Promise<void> {
    if (this.exited) return;
    await this.command(CMD_PAUSE, () => Atomics.load(this.control, CTL_STATE) === STATE_PAUSED);
  }

  resume(): void {
    if (this.exited) return;
    Atomics.store(this.control, CTL_CMD, CMD_RUN);
    Atomics.notify(this.control, CTL_CMD);
  }

  /** Stops the vCPU (if still running) and terminates its worker. Idempotent. */
  async stop(): Promise<void> {
    if (!this.exited && this.started) {
      await this.command(CMD_STOP, () => Atomics.load(this.control, CTL_STATE) === STATE_EXITED);
      if (Atomics.load(this.control, CTL_STATE) !== STATE_EXITED) await this.exitedPromise;
    }
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
    this.markExited({ reason: 'stopped', vcpu: this.vcpu.id });
  }
}
