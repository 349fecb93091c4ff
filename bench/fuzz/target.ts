/**
 * The fuzz framework shared by `npm run fuzz` (bench/fuzz/run.ts, long mode) and
 * the unit tier (test/unit/fuzz/short.test.ts, short mode).
 *
 * A target makes live instances of one guest-facing parser or state machine
 * (a device over real guest memory and a real backend, a register file, a
 * writer). The runner feeds an instance a sequence of generated inputs (an
 * "episode": state such as fids, connections and queue positions persists
 * from input to input), then closes it and starts the next episode with a
 * fresh instance. Every episode has its own seed derived from the run's seed,
 * so a failure at global input index I replays alone:
 *
 *   node dist/bench/fuzz/run.js --target NAME --seed S --replay I
 *
 * Oracles: an instance's `step` throws {@link FuzzFailure} for a broken
 * invariant (a reply whose length disagrees with its header, a reset without a
 * cause, a table past its bound, a host file changed outside a share...); any
 * other exception out of the code under test is a failure too, unless the
 * target lists it as a documented typed error (`expected`). A failure ends its
 * episode (the instance's state is suspect); the run goes on with the next.
 */
import { episodeSeed, Rng } from './prng.js';

/** A broken invariant found by an oracle. */
export class FuzzFailure extends Error {
  override readonly name = 'FuzzFailure';
}

/** Throws a FuzzFailure when `cond` is false. */
export function check(cond: unknown, what: string | (() => string)): asserts cond {
  if (!cond) throw new FuzzFailure(typeof what === 'string' ? what : what());
}

/** One live instance of a target. */
export interface FuzzInstance {
  /** Feeds one generated input; throws FuzzFailure (or anything unexpected) on a failure. */
  step(rng: Rng, index: number): void;
  /** The invariants that are too slow to check after every input (run every `checkEvery` inputs and at the end). */
  check?(): void;
  /** Releases everything the instance holds (fds, mappings, temp dirs). */
  close(): void;
}

export interface FuzzTarget {
  readonly name: string;
  /** One line: what is driven, and the oracles. */
  readonly description: string;
  /** Inputs per episode (per live instance). */
  readonly episode: number;
  /** How often `check()` runs, in inputs (default: only at the end of each episode). */
  readonly checkEvery?: number;
  /** Documented typed errors that the code under test may throw for a bad input (not failures). */
  readonly expected?: ReadonlyArray<abstract new (...args: never[]) => Error>;
  create(rng: Rng): FuzzInstance;
}

export interface Failure {
  target: string;
  seed: number;
  /** Global input index (replay with --seed and --replay). */
  input: number;
  message: string;
}

export interface TargetResult {
  target: string;
  inputs: number;
  failures: number;
  seconds: number;
  seed: number;
  /** The first failures (at most 10). */
  failureList: Failure[];
}

export interface RunOptions {
  inputs: number;
  seed: number;
  /** Replay: run only the episode holding this input, up to and including it, and rethrow its failure. */
  replay?: number;
  /** Stop after this many failures (default 10). */
  maxFailures?: number;
  /** Stop at the first episode boundary past this many seconds (the result says how many inputs ran). */
  maxSeconds?: number;
  /** Called after each episode with the inputs done so far. */
  progress?: (done: number) => void;
}

/** Runs `inputs` inputs of one target; never throws for a failure of the code under test (it is counted). */
export function runTarget(t: FuzzTarget, o: RunOptions): TargetResult {
  const t0 = performance.now();
  const failures: Failure[] = [];
  const maxFailures = o.maxFailures ?? 10;
  let done = 0;
  let failed = 0;
  const first = o.replay === undefined ? 0 : Math.floor(o.replay / t.episode);
  const end = o.replay === undefined ? o.inputs : o.replay + 1;
  for (let ep = first; ep * t.episode < end && failed < maxFailures; ep++) {
    if (o.maxSeconds !== undefined && (performance.now() - t0) / 1000 > o.maxSeconds) break;
    const rng = new Rng(episodeSeed(o.seed, ep));
    const base = ep * t.episode;
    const n = Math.min(t.episode, end - base);
    let index = base;
    let inst: FuzzInstance | null = null;
    try {
      inst = t.create(rng);
      for (let i = 0; i < n; i++) {
        index = base + i;
        inst.step(rng, index);
        done++;
        if (t.checkEvery && (i + 1) % t.checkEvery === 0) inst.check?.();
      }
      inst.check?.();
    } catch (e) {
      done++; // the input that threw; the rest of the episode is skipped
      const expected = !(e instanceof FuzzFailure) && (t.expected ?? []).some((c) => e instanceof c);
      if (!expected) {
        if (o.replay !== undefined) throw e;
        failed++;
        const err = e as Error;
        failures.push({ target: t.name, seed: o.seed, input: index, message: `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}${e instanceof FuzzFailure ? '' : `\n${err?.stack ?? ''}`}`.slice(0, 4000) });
      }
    } finally {
      try {
        inst?.close();
      } catch (e) {
        failed++;
        failures.push({ target: t.name, seed: o.seed, input: index, message: `close() threw: ${String((e as Error)?.stack ?? e)}` });
      }
    }
    o.progress?.(done);
  }
  return { target: t.name, inputs: done, failures: failed, seconds: (performance.now() - t0) / 1000, seed: o.seed, failureList: failures.slice(0, 10) };
}
