/**
 * Whether this machine's /dev/kvm is the nested kvm_pvm module (the project's ENVIRONMENT.md §1: some cloud
 * build machines). It runs most tiny guests but only guest kernels built for PVM, and stops any other at an
 * instruction it cannot emulate (KVM_EXIT_INTERNAL_ERROR): the CLI names the test-host command then, and the
 * test runner sends the tiny guests that need a full KVM to a test host. No dependencies, so that the test
 * runner can ask without loading koffi.
 */
import { existsSync } from 'node:fs';

/** True when the kvm_pvm module is loaded (then it is what /dev/kvm is). */
export function localKvmIsPvm(): boolean {
  return existsSync('/sys/module/kvm_pvm');
}
