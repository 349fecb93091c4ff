/**
 * PIO exit round trip: flintvm's vCPU worker loop (KVM_RUN through koffi,
 * decode, bus dispatch to a device) against a C loop doing the same ioctls
 * (bench/exit-loop.c, compiled with gcc), in the same run, same guest code.
 * Usage: node dist/bench/exits.js [--exits N] [--runs R] [--json]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Machine } from '../lib/machine.js';
import { Kvm } from '../lib/kvm/kvm.js';
import { mapGuestMemory } from '../lib/memory/host-memory.js';
import { RUN_EXIT_REASON } from '../lib/kvm/run-layout.js';
import { KVM_EXIT_IO } from '../lib/kvm/exit.js';
import { emptyRegs } from '../lib/kvm/structs.js';
import { summarize, type Summary } from './stats.js';

const DEVICE_MODULE = new URL('../test/helpers/test-devices.js', import.meta.url).href;
const C_SOURCE = fileURLToPath(new URL('../../bench/exit-loop.c', import.meta.url));

/** Same guest as exit-loop.c: mov ecx,n; loop: out 0x10,al; dec ecx; jnz loop; hlt. */
function guestCode(n: number): Uint8Array {
  const c = Uint8Array.from([0x66, 0xb9, 0, 0, 0, 0, 0xe6, 0x10, 0x66, 0x49, 0x75, 0xfa, 0xf4]);
  new DataView(c.buffer).setUint32(2, n, true);
  return c;
}

async function flintvmRun(n: number): Promise<number> {
  const log = new SharedArrayBuffer(16);
  const m = await Machine.create({
    memory: [{ gpa: 0, size: 0x10000 }],
    vcpus: 1,
    devices: [{ space: 'pio', base: 0x10, length: 1, params: { kind: 'counter', log } }],
    deviceModule: DEVICE_MODULE,
    setupVcpus({ memory, vcpus }) {
      memory.write(0x1000, guestCode(n));
      const s = vcpus[0]!.getSregs();
      s.cs.base = 0n; s.cs.selector = 0;
      vcpus[0]!.setSregs(s);
      vcpus[0]!.setRegs({ ...emptyRegs(), rip: 0x1000n, rflags: 2n });
    },
  });
  let first = 0;
  m.on('first-run', (t) => { first = t; });
  m.start();
  const exit = await m.wait();
  const end = performance.timeOrigin + performance.now();
  await m.released();
  const count = new Int32Array(log)[0]!;
  if (exit.reason !== 'halt' || count !== n) throw new Error(`flintvm run ended ${exit.reason} after ${count}/${n} exits`);
  // first-run is stamped just before the first KVM_RUN; the exit message adds one postMessage hop (~0.1 ms), negligible over N exits.
  return ((end - first) * 1e6) / n;
}

/**
 * The floor any koffi-based VMM pays: the same guest and the same KVM_RUN
 * ioctl through koffi, in a JS loop that only reads the exit reason (no
 * decode, no bus, no device, no worker). flintvm's loop minus this is
 * flintvm's own per-exit work; this minus the C loop is the JS-to-kernel call.
 */
async function koffiFloorRun(n: number): Promise<number> {
  const kvm = Kvm.open();
  const mem = mapGuestMemory([{ gpa: 0, size: 0x10000 }]);
  try {
    const vm = kvm.createVm();
    try {
      await vm.setUserMemoryRegion(0, 0, 0x10000, mem.memory.regions[0]!.hostAddr);
      mem.memory.write(0x1000, guestCode(n));
      const v = vm.createVcpu(0);
      const s = v.getSregs();
      s.cs.base = 0n; s.cs.selector = 0;
      v.setSregs(s);
      v.setRegs({ ...emptyRegs(), rip: 0x1000n, rflags: 2n });
      const run = v.runView;
      let exits = 0;
      const t0 = performance.now();
      for (;;) {
        if (v.runOnce() < 0) throw new Error('KVM_RUN failed in the koffi floor loop');
        if (run.getUint32(RUN_EXIT_REASON, true) !== KVM_EXIT_IO) break;
        exits++;
      }
      const ns = ((performance.now() - t0) * 1e6) / exits;
      if (exits !== n) throw new Error(`koffi floor loop ended after ${exits}/${n} exits`);
      return ns;
    } finally {
      vm.close();
    }
  } finally {
    mem.unmap();
    kvm.close();
  }
}

function cRun(bin: string, n: number): number {
  const out = execFileSync(bin, [String(n)], { encoding: 'utf8' });
  const m = /ns_per_exit ([\d.]+)/.exec(out);
  if (!m) throw new Error(`exit-loop printed: ${out}`);
  return Number(m[1]);
}

export interface ExitsResult {
  exitsPerRun: number;
  flintvmNsPerExit: Summary;
  cNsPerExit: Summary;
  ratio: number;
  /** The same KVM_RUN through koffi in a bare JS loop (absent in results from before it existed). */
  koffiFloorNsPerExit?: Summary;
  /** koffiFloor / C: the share of the ratio that is the JS-to-kernel call itself. */
  floorRatio?: number;
}

export async function benchExits(exits = 50_000, runs = 5): Promise<ExitsResult> {
  // In the test host there is no compiler: bench/host-local.ts builds the loop outside and names it here.
  let bin = process.env.FLINTVM_EXIT_LOOP_BIN ?? '';
  if (!bin) {
    bin = join(mkdtempSync(join(tmpdir(), 'flintvm-bench-')), 'exit-loop');
    execFileSync('gcc', ['-O2', '-o', bin, C_SOURCE]);
  }
  const js: number[] = [];
  const c: number[] = [];
  const floor: number[] = [];
  // Interleave so both see the same machine noise.
  for (let i = 0; i < runs; i++) {
    c.push(cRun(bin, exits));
    js.push(await flintvmRun(exits));
    floor.push(await koffiFloorRun(exits));
  }
  const f = summarize(js);
  const cs = summarize(c);
  const fl = summarize(floor);
  return { exitsPerRun: exits, flintvmNsPerExit: f, cNsPerExit: cs, ratio: f.median / cs.median, koffiFloorNsPerExit: fl, floorRatio: fl.median / cs.median };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { exits: { type: 'string' }, runs: { type: 'string' }, json: { type: 'boolean' } } });
  const r = await benchExits(Number(values.exits ?? 50_000), Number(values.runs ?? 5));
  if (values.json) console.log(JSON.stringify(r, null, 2));
  else {
    console.log(`PIO exit round trip, ${r.exitsPerRun} exits per run, ${r.flintvmNsPerExit.n} runs (median [min..max])`);
    console.log(`  flintvm (JS worker loop): ${(r.flintvmNsPerExit.median / 1000).toFixed(2)} us [${(r.flintvmNsPerExit.min / 1000).toFixed(2)}..${(r.flintvmNsPerExit.max / 1000).toFixed(2)}]`);
    console.log(`  C loop:                   ${(r.cNsPerExit.median / 1000).toFixed(2)} us [${(r.cNsPerExit.min / 1000).toFixed(2)}..${(r.cNsPerExit.max / 1000).toFixed(2)}]`);
    const fl = r.koffiFloorNsPerExit!;
    console.log(`  koffi floor (bare JS loop): ${(fl.median / 1000).toFixed(2)} us [${(fl.min / 1000).toFixed(2)}..${(fl.max / 1000).toFixed(2)}]`);
    console.log(`  ratio flintvm/C: ${r.ratio.toFixed(3)}; koffi floor/C: ${r.floorRatio!.toFixed(3)}`);
  }
}
