/** flintvm: a pure-TypeScript virtual machine monitor for Linux KVM. */
export {
  MicroVM, SNAPSHOT_VERSION, type MicroVMState, type VmExit, type BootTimings, type MicroVMEvents, type VmDescription,
  type SnapshotInfo, type RestoreOptions, type RestoreOverrides, type SnapshotLocation,
} from './microvm.js';
export {
  configReference, microVMConfigSchema, resolveConfig,
  type MicroVMConfig, type ResolvedConfig, type ResolveOptions, type ConsoleMode, type DriveConfig, type NetConfig, type VsockConfig, type ShareConfig,
} from './vm/config.js';
export type { ExitReason, ExitInfo } from './vcpu/protocol.js';
export type { KvmRegs } from './kvm/types.js';
export { WorkerPool, type WorkerPoolOptions, type WorkerPoolStats } from './worker-pool.js';
export { defaultGuestImages, type GuestImages } from './guest-images.js';
export { guestCommandCmdline, guestCommandScript, shellQuote, type GuestCommandOptions } from './guest-command.js';
export {
  FlintvmError, ConfigError, KvmError, HostError, GuestAddressError, LoaderError, StateError, GuestError,
  IoWorkerError, SnapshotError, SnapshotStateError,
  type FlintvmErrorCode, type ConfigProblem,
} from './errors.js';
