/**
 * The backend's inode table: one {@link Node} per host inode the guest holds
 * a reference to, each with an O_PATH fd, its identity, and the directory
 * it was reached from.
 *
 * Why a table and not path strings: a node's fd pins the inode it was opened
 * on, so later operations act on that inode even when the host renames or
 * swaps things around it, and ".." is answered from `parent` (the node we
 * walked down from), never by asking the kernel to resolve "..". A directory
 * has one parent, so for directories `parent` is exact except after a
 * rename done on the host side (then ".." still leads to the old parent,
 * which is inside the share, until the guest looks the directory up again).
 *
 * Single-threaded (the I/O worker). Nodes are reference counted: whoever got
 * one from HostDir (lookup, parent, create, ...) owns one reference and gives
 * it back with HostDir.release().
 */
import { close } from './sys.js';

/** What a node is on the host (S_IFMT of its mode). Fixed for the node's life: an inode never changes type. */
export type NodeKind = 'dir' | 'file' | 'symlink' | 'fifo' | 'socket' | 'chr' | 'blk';

/** One host inode the guest may refer to. Fields are the backend's; protocol code reads `id` and `kind` only. */
export class Node {
  /** References held by protocol objects (fids, FUSE lookups, open files, child nodes). */
  refs = 1;

  /** Table key: "devMajor:devMinor:ino". */
  readonly key: string;

  /** `/proc/self/fd/<fd>` as a C string, made on first use (core.ts fdLinkPath): a fresh array per call costs a koffi call about 2 µs. */
  fdLink: Uint8Array | undefined;

  /**
   * @param fd O_PATH fd on the inode (the root's is the share's fd, not owned by the table)
   * @param dev the host device, "major:minor"
   * @param ino the host inode number
   * @param id the inode number the guest sees (unique within the share; see HostDir's inodeId)
   * @param parent the directory this node was last looked up in (null for the root); holds a reference on it
   * @param name the name it had there (null for the root); checked against the host before use
   */
  constructor(
    readonly fd: number,
    readonly dev: string,
    readonly ino: bigint,
    readonly id: bigint,
    readonly kind: NodeKind,
    public parent: Node | null,
    public name: Uint8Array | null,
  ) {
    this.key = nodeKey(dev, ino);
  }
}

/** The table key of a host inode. */
export function nodeKey(dev: string, ino: bigint): string {
  return `${dev}:${ino}`;
}

/** The live nodes by identity. */
export class NodeTable {
  private readonly byKey = new Map<string, Node>();

  constructor(readonly root: Node) {
    this.byKey.set(root.key, root);
  }

  /** Nodes alive, the root included. */
  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Node | undefined {
    return this.byKey.get(key);
  }

  add(node: Node): void {
    this.byKey.set(node.key, node);
  }

  /**
   * Re-parents `node` under `parent` (a guest rename, or a fresher lookup), unless
   * that would make a node its own ancestor (possible only when the table is stale
   * after host-side renames): then the old parent stays. Moves one reference.
   */
  setParent(node: Node, parent: Node, name: Uint8Array): void {
    if (node === this.root) return;
    node.name = name;
    if (node.parent === parent) return;
    for (let p: Node | null = parent; p !== null; p = p.parent) if (p === node) return;
    parent.refs++;
    const old = node.parent;
    node.parent = parent;
    if (old) this.release(old);
  }

  /**
   * Drops one reference; at zero the node leaves the table, its fd is closed, and its
   * reference on its parent is dropped in turn (iteratively: chains can be deep).
   * The root never goes: its fd belongs to whoever opened the share.
   */
  release(node: Node): void {
    let n: Node | null = node;
    while (n !== null) {
      if (n.refs <= 0) throw new Error(`hostdir: node ${n.key} released more often than referenced`);
      if (--n.refs > 0 || n === this.root) return;
      this.byKey.delete(n.key);
      close(n.fd);
      const parent: Node | null = n.parent;
      n.parent = null;
      n = parent;
    }
  }

  /** Closes every node's fd except the root's and empties the table (dispose). */
  clear(): void {
    for (const n of this.byKey.values()) {
      if (n !== this.root) close(n.fd);
      n.parent = null;
    }
    this.byKey.clear();
    this.byKey.set(this.root.key, this.root);
    this.root.refs = 1;
  }
}
