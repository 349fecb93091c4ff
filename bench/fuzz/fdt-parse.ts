/**
 * An independent reader of flattened device trees (devicetree spec v0.4 ch. 5),
 * strict about everything the writer promises: the header's offsets and sizes
 * agree with the blob, tokens are aligned and known, nesting balances, every
 * property name offset lands on a NUL-terminated string in the strings block.
 * Throws a plain Error naming the first problem. Used as the fuzz oracle of the
 * FDT writers; shares no code with arch/arm64/fdt.ts.
 */

export interface ParsedNode {
  name: string;
  props: { name: string; value: Uint8Array }[];
  children: ParsedNode[];
}

const MAGIC = 0xd00dfeed;
const BEGIN_NODE = 1;
const END_NODE = 2;
const PROP = 3;
const NOP = 4;
const END = 9;

export function parseFdt(blob: Uint8Array): { root: ParsedNode; bootCpuId: number } {
  const fail = (why: string): never => { throw new Error(`FDT: ${why}`); };
  if (blob.length < 40) fail(`${blob.length} bytes: shorter than the header`);
  const d = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const h = (i: number) => d.getUint32(4 * i, false);
  if (h(0) !== MAGIC) fail('bad magic');
  const [total, offStruct, offStrings, offRsv, version, lastComp, bootCpuId, sizeStrings, sizeStruct] = [h(1), h(2), h(3), h(4), h(5), h(6), h(7), h(8), h(9)];
  if (total !== blob.length) fail(`totalsize ${total} != blob length ${blob.length}`);
  if (version !== 17 || lastComp !== 16) fail(`version ${version}/${lastComp}`);
  if (offRsv < 40 || offRsv % 8 !== 0 || offRsv + 16 > total) fail(`reserve map at ${offRsv}`);
  if (d.getBigUint64(offRsv) !== 0n || d.getBigUint64(offRsv + 8) !== 0n) fail('reserve map not terminated by (0, 0)');
  if (offStruct % 4 !== 0 || offStruct + sizeStruct > total) fail(`struct block [${offStruct}, +${sizeStruct}) outside ${total}`);
  if (offStrings + sizeStrings > total) fail(`strings block [${offStrings}, +${sizeStrings}) outside ${total}`);
  const dec = new TextDecoder('utf-8', { fatal: true });
  const cstrAt = (from: number, end: number, what: string): { s: string; next: number } => {
    let i = from;
    while (i < end && blob[i] !== 0) i++;
    if (i >= end) fail(`${what} at ${from} is not NUL-terminated`);
    return { s: dec.decode(blob.subarray(from, i)), next: i + 1 };
  };
  const end = offStruct + sizeStruct;
  let at = offStruct;
  const u32 = () => {
    if (at + 4 > end) fail(`struct block ends inside a token at ${at}`);
    const v = d.getUint32(at, false);
    at += 4;
    return v;
  };
  const stack: ParsedNode[] = [];
  let root: ParsedNode | null = null;
  for (;;) {
    const tok = u32();
    if (tok === NOP) continue;
    if (tok === BEGIN_NODE) {
      const { s, next } = cstrAt(at, end, 'node name');
      at = (next + 3) & ~3;
      const n: ParsedNode = { name: s, props: [], children: [] };
      if (stack.length === 0) {
        if (root) fail('a second root node');
        root = n;
      } else stack[stack.length - 1]!.children.push(n);
      stack.push(n);
    } else if (tok === END_NODE) {
      if (stack.length === 0) fail('END_NODE without a node');
      stack.pop();
    } else if (tok === PROP) {
      const len = u32();
      const nameoff = u32();
      if (stack.length === 0) fail('property outside a node');
      if (nameoff >= sizeStrings) fail(`property name offset ${nameoff} outside the strings block`);
      const { s } = cstrAt(offStrings + nameoff, offStrings + sizeStrings, 'property name');
      if (at + len > end) fail(`property ${s} of ${len} bytes runs past the struct block`);
      stack[stack.length - 1]!.props.push({ name: s, value: blob.slice(at, at + len) });
      at = (at + len + 3) & ~3;
    } else if (tok === END) {
      if (stack.length !== 0) fail(`END with ${stack.length} nodes open`);
      if (at !== end) fail(`END at ${at}, struct block ends at ${end}`);
      break;
    } else fail(`unknown token ${tok} at ${at - 4}`);
  }
  if (!root) fail('no root node');
  return { root: root!, bootCpuId };
}

/** The node at `path` ('/a/b'), or undefined. */
export function findNode(root: ParsedNode, path: string): ParsedNode | undefined {
  let n: ParsedNode | undefined = root;
  for (const part of path.split('/').filter(Boolean)) n = n?.children.find((c) => c.name === part);
  return n;
}

/** A property's value as a NUL-terminated string (undefined if absent or not one). */
export function propString(n: ParsedNode | undefined, name: string): string | undefined {
  const v = n?.props.find((p) => p.name === name)?.value;
  if (!v || v.length === 0 || v[v.length - 1] !== 0) return undefined;
  return new TextDecoder().decode(v.subarray(0, v.length - 1));
}

/** A property's value as big-endian u32 cells. */
export function propCells(n: ParsedNode | undefined, name: string): number[] | undefined {
  const v = n?.props.find((p) => p.name === name)?.value;
  if (!v || v.length % 4 !== 0) return undefined;
  const d = new DataView(v.buffer, v.byteOffset, v.byteLength);
  return Array.from({ length: v.length / 4 }, (_, i) => d.getUint32(4 * i, false));
}
