/**
 * Fuzz target `fdt`: the arm64 device-tree writers on hostile input.
 *
 * - buildMachineFdt (arch/arm64/fdt-machine.ts) with hostile configs: odd RAM
 *   layouts, 0..MAX_VCPUS+2 arbitrary MPIDRs, command lines with NULs, quotes and
 *   non-ASCII, initrds anywhere, many or odd virtio slots, rng seeds. Oracle: a
 *   documented RangeError, or a blob that an independent parser (fdt-parse.ts)
 *   accepts and that says what the config said (bootargs, RAM reg, CPU count,
 *   initrd bounds, virtio nodes, rng-seed).
 * - FdtWriter as a state machine: one writer lives across inputs, each input is
 *   one call (beginNode/endNode/prop/finish) with hostile names and values. A
 *   RangeError must leave the writer as it was; finish() must produce exactly
 *   the tree of the calls that succeeded (a shadow model); every name the writer
 *   accepted must be a legal devicetree name.
 */
import { FdtWriter, type FdtValue } from '../../../arch/arm64/fdt.js';
import { buildMachineFdt, type MachineFdtOptions } from '../../../arch/arm64/fdt-machine.js';
import * as L from '../../../arch/arm64/layout.js';
import { findNode, parseFdt, propCells, propString, type ParsedNode } from '../fdt-parse.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+-';
const HOSTILE_CHARS = ['\0', '/', '@', ' ', '#', '?', 'é', '\u{1f600}', '"', '\n', ':', '\\'];
/** The devicetree spec's name rules (§2.2.1, §2.2.4), restated. */
const LEGAL_NODE = /^[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]+)?$/;
const LEGAL_PROP = /^[A-Za-z0-9,._+?#-]{1,31}$/;

function hostileString(rng: Rng, max: number): string {
  const n = rng.weighted([[4, rng.int(12)], [1, rng.int(max + 1)]]);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.bool(0.9) ? NAME_CHARS[rng.int(NAME_CHARS.length)]! : rng.pick(HOSTILE_CHARS);
  return s;
}

function hostileName(rng: Rng, node: boolean): string {
  const base = hostileString(rng, 40);
  if (node && rng.bool(0.4)) return `${base}@${rng.bool(0.8) ? rng.u32().toString(16) : hostileString(rng, 8)}`;
  if (!node && rng.bool(0.2)) return `#${base}`;
  return base;
}

function hostileValue(rng: Rng): FdtValue {
  switch (rng.int(6)) {
    case 0: return null;
    case 1: return rng.bytes(rng.int(40));
    case 2: return hostileString(rng, 64);
    case 3: return Array.from({ length: rng.int(4) }, () => hostileString(rng, 10));
    case 4: return Array.from({ length: rng.int(6) }, () => rng.u32());
    default: return Array.from({ length: 1 + rng.int(3) }, () => rng.pick([-1, 2 ** 32, 1.5, Number.NaN, 0, 0xffff_ffff, Infinity]));
  }
}

/** The bytes a value encodes to, restated from the spec (strings NUL-terminated, cells big-endian u32). */
function encoded(v: FdtValue): Uint8Array {
  const enc = new TextEncoder();
  if (v === null) return new Uint8Array(0);
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return Uint8Array.from([...enc.encode(v), 0]);
  if (v.length > 0 && typeof v[0] === 'string') return Uint8Array.from((v as readonly string[]).flatMap((s) => [...enc.encode(s), 0]));
  const out = new Uint8Array(4 * v.length);
  (v as readonly number[]).forEach((c, i) => new DataView(out.buffer).setUint32(4 * i, c, false));
  return out;
}

interface ModelNode { name: string; props: { name: string; value: Uint8Array }[]; children: ModelNode[] }

function sameTree(a: ParsedNode, b: ModelNode): boolean {
  return a.name === b.name && a.props.length === b.props.length && a.children.length === b.children.length
    && a.props.every((p, i) => p.name === b.props[i]!.name && p.value.length === b.props[i]!.value.length && p.value.every((x, k) => x === b.props[i]!.value[k]))
    && a.children.every((c, i) => sameTree(c, b.children[i]!));
}

/** One FdtWriter and its shadow model. */
class WriterMachine {
  private w = new FdtWriter();
  private stack: ModelNode[] = [];
  private root: ModelNode | null = null;

  step(rng: Rng): void {
    const op = rng.weighted([[3, 'begin'], [3, 'end'], [5, 'prop'], [1, 'finish']] as const);
    try {
      if (op === 'begin') {
        const name = this.stack.length === 0 && rng.bool(0.8) ? '' : hostileName(rng, true);
        this.w.beginNode(name);
        if (this.stack.length > 0) check(LEGAL_NODE.test(name), `FdtWriter accepted the node name ${JSON.stringify(name)}`);
        else check(name === '' && this.root === null, `FdtWriter accepted root node ${JSON.stringify(name)} (root exists: ${this.root !== null})`);
        const n: ModelNode = { name, props: [], children: [] };
        if (this.stack.length === 0) this.root = n;
        else this.stack[this.stack.length - 1]!.children.push(n);
        this.stack.push(n);
      } else if (op === 'end') {
        this.w.endNode();
        check(this.stack.length > 0, 'FdtWriter accepted endNode() with no node open');
        this.stack.pop();
      } else if (op === 'prop') {
        const name = hostileName(rng, false);
        const value = hostileValue(rng);
        this.w.prop(name, value);
        check(this.stack.length > 0, 'FdtWriter accepted a property outside a node');
        check(LEGAL_PROP.test(name), `FdtWriter accepted the property name ${JSON.stringify(name)}`);
        this.stack[this.stack.length - 1]!.props.push({ name, value: encoded(value) });
      } else {
        const cpu = rng.bool(0.8) ? rng.int(8) : rng.u32();
        const blob = this.w.finish(cpu);
        check(this.root !== null && this.stack.length === 0, 'FdtWriter finished an unbalanced tree');
        const p = parseFdt(blob);
        check(p.bootCpuId === cpu, `boot_cpuid_phys ${p.bootCpuId}, asked ${cpu}`);
        check(sameTree(p.root, this.root!), 'the finished blob differs from the calls that succeeded');
        this.w = new FdtWriter();
        this.stack = [];
        this.root = null;
      }
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      // A rejected call changes nothing: the model stays as it is.
    }
  }
}

function hostileMachine(rng: Rng): MachineFdtOptions {
  const nMem = rng.weighted([[8, 1], [2, 2 + rng.int(3)], [1, 0]]);
  const memory = Array.from({ length: nMem }, () => ({
    gpa: rng.bool(0.7) ? L.RAM_BASE : rng.int(2 ** 20) * 2 ** 20,
    size: rng.pick([0, 1, 4096, 2 ** 20, 2 ** 30, 2 ** 32, 2 ** 40, rng.int(2 ** 20) * 4096]),
  }));
  const nCpu = rng.weighted([[6, 1 + rng.int(8)], [2, rng.int(L.MAX_VCPUS + 3)], [1, 0]]);
  const mpidrs = Array.from({ length: nCpu }, (_, i) => (rng.bool(0.7) ? BigInt(i) : rng.edgeU64()));
  const virtio = Array.from({ length: rng.weighted([[4, rng.int(4)], [1, rng.int(40)]]) }, (_, i) =>
    rng.bool(0.7) && i < L.VIRTIO_MMIO_SLOT_COUNT ? L.virtioMmioSlot(i) : { base: rng.edgeU32() * 4096, size: rng.edgeU32(), irq: rng.edgeU32() });
  const o: MachineFdtOptions = {
    memory, mpidrs, virtio,
    cmdline: rng.bool(0.7) ? 'console=ttyS0 reboot=k panic=-1' + hostileString(rng, 200) : hostileString(rng, 4096),
    ...(rng.bool(0.5) ? { initrd: { addr: rng.bool(0.7) ? L.RAM_BASE + rng.int(2 ** 20) * 4096 : rng.int(2 ** 32) * 4096, size: rng.edgeU32() } } : {}),
    ...(rng.bool(0.5) ? { rngSeed: rng.bytes(rng.int(80)) } : {}),
  };
  return o;
}

function checkMachine(o: MachineFdtOptions, blob: Uint8Array): void {
  const { root } = parseFdt(blob);
  check(propString(findNode(root, '/chosen'), 'bootargs') === o.cmdline, 'chosen/bootargs differs from the command line');
  const start = Math.min(...o.memory.map((r) => r.gpa));
  const end = Math.max(...o.memory.map((r) => r.gpa + r.size));
  const mem = root.children.find((c) => c.name.startsWith('memory@'));
  const cells = propCells(mem, 'reg');
  check(cells !== undefined && cells.length === 4, 'memory node without a 4-cell reg');
  const at = (i: number) => cells![i]! * 2 ** 32 + cells![i + 1]!;
  check(at(0) === start && at(2) === end - start, () => `memory reg [${at(0)}, +${at(2)}], RAM [${start}, ${end})`);
  check(findNode(root, '/cpus')?.children.length === o.mpidrs.length, 'cpu node count differs from the vCPU count');
  check(root.children.filter((c) => c.name.startsWith('virtio_mmio@')).length === o.virtio.length, 'virtio node count differs');
  if (o.initrd) {
    const s = propCells(findNode(root, '/chosen'), 'linux,initrd-start');
    const e = propCells(findNode(root, '/chosen'), 'linux,initrd-end');
    check(s && e && s[0]! * 2 ** 32 + s[1]! === o.initrd.addr && e[0]! * 2 ** 32 + e[1]! === o.initrd.addr + o.initrd.size, 'initrd bounds differ');
  }
  const seed = findNode(root, '/chosen')?.props.find((p) => p.name === 'rng-seed')?.value;
  if (o.rngSeed && o.rngSeed.length > 0) check(seed && seed.length === o.rngSeed.length && seed.every((b, i) => b === o.rngSeed![i]), 'rng-seed differs');
  else check(seed === undefined, 'rng-seed present without a seed');
}

export const fdtTarget: FuzzTarget = {
  name: 'fdt',
  description: 'arm64 FDT writers: buildMachineFdt on hostile configs, FdtWriter call sequences vs a shadow tree; blobs checked by an independent parser',
  episode: 5000,
  create() {
    let writer = new WriterMachine();
    return {
      step(rng) {
        if (rng.bool(0.7)) {
          writer.step(rng);
          return;
        }
        const o = hostileMachine(rng);
        let blob: Uint8Array;
        try {
          blob = buildMachineFdt(o);
        } catch (e) {
          if (e instanceof RangeError) return; // documented: a config the layout or the writer cannot express
          throw e;
        }
        checkMachine(o, blob);
        if (rng.bool(0.01)) writer = new WriterMachine();
      },
      close() {},
    };
  },
};
