import { existsSync } from 'node:fs';
import { constants, accessSync } from 'node:fs';
import type { ExecutionContext } from 'ava';

/** True when /dev/kvm can be opened read-write here. */
export function haveKvm(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * For tests that need /dev/kvm: returns false (after logging why, and passing
 * the test as not applicable) on a machine without it. On a machine with
 * /dev/kvm it returns true and the test runs for real.
 */
export function requireKvm(t: ExecutionContext): boolean {
  if (haveKvm()) return true;
  const why = existsSync('/dev/kvm') ? '/dev/kvm exists but is not accessible' : 'no /dev/kvm on this machine';
  t.log(`SKIPPED (needs KVM): ${why}`);
  console.log(`[skip] ${t.title}: ${why}`);
  t.pass();
  return false;
}
