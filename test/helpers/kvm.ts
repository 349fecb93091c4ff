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

/** True in a CI run (`CI=true`, as CI systems and `.ci/run` set it), where a skipped test is a failure. */
export function inCi(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/**
 * The one way a test says "I cannot run here": outside CI it passes the test
 * as not applicable and prints a `[skip]` line that `npm test` counts in its
 * summary (`N skipped: ...`); in CI (see {@link inCi}) it FAILS the test,
 * because there a skipped test would hide a regression. Returns false in both
 * cases, so callers write `if (!skipUnlessCi(...)) return;`-style guards through
 * {@link requireKvm} and friends.
 */
export function skipOrFail(t: ExecutionContext, why: string): false {
  if (inCi()) {
    t.fail(`cannot run in CI: ${why} (a skip is a failure when CI is set)`);
    return false;
  }
  t.log(`SKIPPED: ${why}`);
  console.log(`[skip] ${t.title}: ${why}`);
  t.pass();
  return false;
}

/**
 * For tests that need /dev/kvm: true on a machine with a usable /dev/kvm (the
 * test runs for real). Without one, see {@link skipOrFail}: skipped and
 * counted outside CI, failed in CI. `npm test` never gets here without KVM:
 * it runs the KVM tiers inside the test hosts (test/run-tests.ts).
 */
export function requireKvm(t: ExecutionContext): boolean {
  if (haveKvm()) return true;
  const why = existsSync('/dev/kvm') ? '/dev/kvm exists but is not accessible' : 'no /dev/kvm on this machine';
  return skipOrFail(t, `needs KVM: ${why}`);
}
