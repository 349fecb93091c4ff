/**
 * bench/blk-inner.ts: the fio job list (with the warm repeats of the first
 * depth), the guest script that fits the kernel command line, and the
 * parsing of the guest's result lines.
 */
import test from 'ava';
import { AGAIN_SUFFIX, blkJobs, guestScript, parseGuestOutput } from '../../../bench/blk-inner.js';
import { guestCommandCmdline } from '../../../lib/guest-command.js';
import { MAX_CMDLINE_BYTES } from '../../../lib/vm/config.js';
import { X86_64_DEFAULT_CMDLINE } from '../../../arch/x86_64/boot.js';

test('the first depth\'s four jobs run again, last, under their own names', (t) => {
  const jobs = blkJobs([1, 16]);
  t.is(jobs.length, 12);
  t.deepEqual(jobs.slice(8).map((j) => j.name), ['seqread-1M-qd1', 'seqwrite-1M-qd1', 'randread-4k-qd1', 'randwrite-4k-qd1'].map((n) => n + AGAIN_SUFFIX));
  for (const [i, j] of jobs.slice(8).entries()) t.deepEqual({ ...j, name: '' }, { ...jobs[i]!, name: '' });
  t.is(new Set(jobs.map((j) => j.name)).size, jobs.length);
});

test('without the repeats, each depth has its four jobs and nothing else', (t) => {
  const jobs = blkJobs([1, 16], false);
  t.is(jobs.length, 8);
  t.false(jobs.some((j) => j.name.endsWith(AGAIN_SUFFIX)));
  t.deepEqual(blkJobs([], true), []);
});

test('the guest script with the repeats still fits the x86 kernel command line', (t) => {
  const cmd = guestCommandCmdline(['sh', '-c', guestScript(blkJobs([1, 16]), 5, 1)]);
  t.true(`${X86_64_DEFAULT_CMDLINE} quiet ${cmd}`.length <= MAX_CMDLINE_BYTES, `${cmd.length} bytes of guest command`);
});

test('a repeated job\'s result line is its own, in the direction it ran', (t) => {
  const jobs = blkJobs([1]);
  const out = [
    'BLKRES seqread-1M-qd1 0 100000 97 10000 10100 0 0 0 0',
    'BLKRES seqread-1M-qd1-again 0 150000 146 6000 6100 0 0 0 0',
    'BLKRES seqwrite-1M-qd1-again 0 0 0 0 0 120000 117 8000 8100',
    'BLKDONE',
  ].join('\n');
  const p = parseGuestOutput(out, jobs);
  t.true(p.done);
  t.is(p.jobs['seqread-1M-qd1']!.bwKiBs, 100000);
  t.is(p.jobs[`seqread-1M-qd1${AGAIN_SUFFIX}`]!.bwKiBs, 150000);
  t.is(p.jobs[`seqwrite-1M-qd1${AGAIN_SUFFIX}`]!.latUs, 8100);
  t.true(p.errors.includes('randread-4k-qd1-again: no result'));
});
