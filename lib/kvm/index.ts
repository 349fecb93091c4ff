export * from './types.js';
export * from './exit.js';
export { Kvm } from './kvm.js';
export { Vm } from './vm.js';
export { Vcpu, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED, KVM_MP_STATE_HALTED } from './vcpu.js';
