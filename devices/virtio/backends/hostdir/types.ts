/**
 * The shapes of the host-directory backend's API (hostdir.ts), shared by the
 * protocol servers built on it (virtio-9p now, virtio-fs later). Nothing here
 * is protocol-specific: a protocol maps its own flags and masks onto these.
 */
import type { Node, NodeKind } from './nodes.js';

export type { Node, NodeKind };

/** A point in time: seconds since the epoch and nanoseconds (0..999999999). */
export interface Timespec {
  readonly sec: bigint;
  readonly nsec: number;
}

/** An inode's attributes, as statx(2) reports them. */
export interface Stat {
  /** The inode number the guest sees: unique within the share (st_ino, mixed with the device when the share spans mounts). */
  readonly id: bigint;
  readonly kind: NodeKind;
  /** st_mode: type and permission bits. */
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly size: bigint;
  readonly blksize: number;
  /** 512-byte blocks allocated. */
  readonly blocks: bigint;
  readonly atime: Timespec;
  readonly mtime: Timespec;
  readonly ctime: Timespec;
  /** Birth time, when the filesystem records one. */
  readonly btime: Timespec | null;
}

/** Filesystem statistics (statfs(2)). */
export interface Statfs {
  readonly type: bigint;
  readonly bsize: bigint;
  readonly blocks: bigint;
  readonly bfree: bigint;
  readonly bavail: bigint;
  readonly files: bigint;
  readonly ffree: bigint;
  readonly fsid: bigint;
  readonly namelen: bigint;
}

/**
 * How to open a file. The backend builds the host open flags from this; a
 * protocol never passes raw flags through (so O_CREAT, O_PATH, O_TMPFILE,
 * O_DIRECT and friends cannot sneak in).
 */
export interface OpenMode {
  readonly access: 'read' | 'write' | 'readwrite';
  /** O_TRUNC (needs write access). */
  readonly truncate?: boolean;
  /** O_APPEND. */
  readonly append?: boolean;
  /** O_DSYNC ('data') or O_SYNC ('full'). */
  readonly sync?: 'data' | 'full';
  /** The caller requires a directory (O_DIRECTORY): ENOTDIR otherwise. */
  readonly directory?: boolean;
}

/** Owner for a new inode. The backend applies it best-effort (see README.md "Ownership"). */
export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/** Attribute changes (setattr). Absent fields are left alone. Times: a Timespec, or 'now'. */
export interface SetAttr {
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly size?: bigint;
  readonly atime?: Timespec | 'now';
  readonly mtime?: Timespec | 'now';
}

/** One directory entry, as getdents64(2) gives it. */
export interface DirEntry {
  /** Inode number as the guest sees it (see Stat.id). */
  readonly id: bigint;
  /** The cookie that continues the listing AFTER this entry (d_off): pass it back to readdir. */
  readonly offset: bigint;
  /** DT_* type (DT_UNKNOWN = 0 when the filesystem does not say). */
  readonly type: number;
  /** Name bytes ("." and ".." included, as the host lists them). */
  readonly name: Uint8Array;
}

/** A lock range and type (F_RDLCK / F_WRLCK / F_UNLCK), for setlk/getlk. */
export interface LockRange {
  readonly type: number;
  readonly start: bigint;
  /** 0: to the end of the file. */
  readonly length: bigint;
}

/** What getlk reports: the conflicting lock, or type F_UNLCK when the range is free. */
export interface LockInfo extends LockRange {
  /** The holder's pid: -1 for open-file-description locks (ours). */
  readonly pid: number;
}

// dirent d_type values (dirent.h)
export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;
