/**
 * The benches' clock, in a module of its own: a timed child (boot-child.ts) imports only this before it
 * stamps its start, so the harness's own imports (common.ts loads child_process, about 30 ms in the
 * emulated test host) are not counted as flintvm's.
 */
import { performance } from 'node:perf_hooks';

/**
 * CLOCK_MONOTONIC in ms (through `process.hrtime`, i.e. uv_hrtime). The clock
 * is system-wide, so a parent and its child can compare stamps directly.
 */
export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * `performance.timeOrigin + performance.now()` minus {@link monoMs}: subtract it
 * from a flintvm `BootTimings` stamp (timeOrigin-based) to get a monoMs stamp.
 */
export function wallToMonoOffset(): number {
  return performance.timeOrigin + performance.now() - monoMs();
}
