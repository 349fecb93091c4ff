/** flintvm: a pure-TypeScript virtual machine monitor for Linux KVM. */
export { MicroVM, type MicroVMState, type VmExit, type BootTimings, type MicroVMEvents, type VmDescription } from './microvm.js';
export type { MicroVMConfig, ConsoleMode, DriveConfig, NetConfig, VsockConfig, ShareConfig } from './config.js';
export type { ExitReason, ExitInfo } from './vcpu/protocol.js';
export { WorkerPool, type WorkerPoolOptions, type WorkerPoolStats } from './worker-pool.js';
export { defaultGuestImages, type GuestImages } from './guest-images.js';
export { guestCommandCmdline } from './guest-command.js';
export {
  FlintvmError, ConfigError, KvmError, HostError, GuestAddressError, LoaderError, StateError, GuestError,
} from './errors.js';
