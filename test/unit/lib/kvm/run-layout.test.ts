/**
 * The named struct kvm_run offsets (lib/kvm/run-layout.ts) against offsetof()
 * values from linux/kvm.h, pinned here by hand (identical on x86_64 and
 * arm64 for these fields), so a wrong constant there fails.
 */
import test from 'ava';
import * as R from '../../../../lib/kvm/run-layout.js';
import * as ex from '../../../../lib/kvm/exit.js';

const OFFSETOF: Record<string, number> = {
  RUN_REQUEST_INTERRUPT_WINDOW: 0, RUN_IMMEDIATE_EXIT: 1, RUN_EXIT_REASON: 8, RUN_EXIT_UNION: 32,
  RUN_IO_DIRECTION: 32, RUN_IO_SIZE: 33, RUN_IO_PORT: 34, RUN_IO_COUNT: 36, RUN_IO_DATA_OFFSET: 40,
  RUN_MMIO_PHYS_ADDR: 32, RUN_MMIO_DATA: 40, RUN_MMIO_LEN: 48, RUN_MMIO_IS_WRITE: 52,
  RUN_HW_EXIT_REASON: 32, RUN_FAIL_ENTRY_REASON: 32, RUN_FAIL_ENTRY_CPU: 40, RUN_EX_EXCEPTION: 32, RUN_EX_ERROR_CODE: 36,
  RUN_INTERNAL_SUBERROR: 32, RUN_INTERNAL_NDATA: 36, RUN_INTERNAL_DATA: 40, RUN_INTERNAL_DATA_MAX: 16, RUN_SYSTEM_EVENT_TYPE: 32,
};

test('every named kvm_run offset matches offsetof() in linux/kvm.h, and none is left unpinned', (t) => {
  const named = Object.entries(R);
  t.is(named.length, Object.keys(OFFSETOF).length, 'one pinned value per export');
  for (const [name, value] of named) t.is(value, OFFSETOF[name], name);
});

test('exit.ts re-exports the same offsets it decodes with', (t) => {
  t.is(ex.RUN_EXIT_REASON, R.RUN_EXIT_REASON);
  t.is(ex.RUN_IMMEDIATE_EXIT, R.RUN_IMMEDIATE_EXIT);
  t.is(ex.RUN_MMIO_DATA, R.RUN_MMIO_DATA);
  t.is(ex.RUN_REQUEST_INTERRUPT_WINDOW, R.RUN_REQUEST_INTERRUPT_WINDOW);
});
