/**
 * virtio-fs (virtio 1.2 §5.11) and FUSE (linux/fuse.h, protocol 7.31) numbers
 * and message sizes used by the server.
 */
/** Size of the hiprio queue (FORGET / BATCH_FORGET only). */
export const FS_HIPRIO_QUEUE_SIZE = 128;
/**
 * Size of the request queue. Linux's virtio-fs driver caps a request at
 * (queue size - 4) pages whatever max_pages says (fs/fuse/virtio_fs.c), so
 * 128 split every 1 MiB write into 496 KiB + 32 KiB. 1024 lets one request
 * carry MAX_PAGES (1 MiB): measured in the x86_64 test host, a 256 MiB dd
 * write went from 12.6 s to 9.5 s.
 */
export const FS_QUEUE_SIZE = 1024;
/** Bytes of the config space's tag field (NUL-padded, not necessarily NUL-terminated). */
export const FS_TAG_BYTES = 36;
export const FS_CFG_NUM_REQUEST_QUEUES = 36;
export const FS_CONFIG_SIZE = 40;
export const HIPRIO_QUEUE = 0;
export const REQUEST_QUEUE = 1;

export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 31;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const DIRENT_SIZE = 24;
export const READ_IN_SIZE = 40;
export const WRITE_IN_SIZE = 40;
export const INIT_OUT_SIZE = 64;
export const STATFS_OUT_SIZE = 80;

/** Largest WRITE / READ payload we advertise (max_write; max_pages * 4 KiB). */
export const MAX_WRITE = 1024 * 1024;
export const MAX_PAGES = 256;
/** fuse_open_out.open_flags: bypass the guest's page cache for this open file (reads and writes go to the server as made). */
export const FOPEN_DIRECT_IO = 1 << 0;
/** Largest non-WRITE request we copy in (setxattr: 64 KiB value + name + header). */
export const MAX_ARGS = 64 * 1024 + 4096;
/** Open file handles per session. */
export const MAX_HANDLES = 65536;

export const FUSE_LOOKUP = 1;
export const FUSE_FORGET = 2;
export const FUSE_GETATTR = 3;
export const FUSE_SETATTR = 4;
export const FUSE_READLINK = 5;
export const FUSE_SYMLINK = 6;
export const FUSE_MKNOD = 8;
export const FUSE_MKDIR = 9;
export const FUSE_UNLINK = 10;
export const FUSE_RMDIR = 11;
export const FUSE_RENAME = 12;
export const FUSE_LINK = 13;
export const FUSE_OPEN = 14;
export const FUSE_READ = 15;
export const FUSE_WRITE = 16;
export const FUSE_STATFS = 17;
export const FUSE_RELEASE = 18;
export const FUSE_FSYNC = 20;
export const FUSE_SETXATTR = 21;
export const FUSE_GETXATTR = 22;
export const FUSE_LISTXATTR = 23;
export const FUSE_REMOVEXATTR = 24;
export const FUSE_FLUSH = 25;
export const FUSE_INIT = 26;
export const FUSE_OPENDIR = 27;
export const FUSE_READDIR = 28;
export const FUSE_RELEASEDIR = 29;
export const FUSE_FSYNCDIR = 30;
export const FUSE_ACCESS = 34;
export const FUSE_CREATE = 35;
export const FUSE_INTERRUPT = 36;
export const FUSE_DESTROY = 38;
export const FUSE_BATCH_FORGET = 42;
export const FUSE_FALLOCATE = 43;
export const FUSE_READDIRPLUS = 44;
export const FUSE_RENAME2 = 45;
export const FUSE_LSEEK = 46;
export const FUSE_SYNCFS = 50;

// fuse_init_in/out flags
export const FUSE_ASYNC_READ = 1 << 0;
export const FUSE_ATOMIC_O_TRUNC = 1 << 3;
export const FUSE_BIG_WRITES = 1 << 5;
export const FUSE_DO_READDIRPLUS = 1 << 13;
export const FUSE_READDIRPLUS_AUTO = 1 << 14;
export const FUSE_PARALLEL_DIROPS = 1 << 18;
export const FUSE_MAX_PAGES = 1 << 22;
export const FUSE_CACHE_SYMLINKS = 1 << 23;
/** What the server offers (intersected with what the guest asks for). */
export const SUPPORTED_INIT_FLAGS = FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS
  | FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS;

// fuse_setattr_in.valid
export const FATTR_MODE = 1 << 0;
export const FATTR_UID = 1 << 1;
export const FATTR_GID = 1 << 2;
export const FATTR_SIZE = 1 << 3;
export const FATTR_ATIME = 1 << 4;
export const FATTR_MTIME = 1 << 5;
export const FATTR_FH = 1 << 6;
export const FATTR_ATIME_NOW = 1 << 7;
export const FATTR_MTIME_NOW = 1 << 8;

// open(2) flags (x86-64 / generic)
export const O_ACCMODE = 3;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_DSYNC = 0o10000;
export const O_SYNC = 0o4010000;

// errno
export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EBADF = 9;
export const EACCES = 13;
export const EEXIST = 17;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const EMFILE = 24;
export const EROFS = 30;
export const ERANGE = 34;
export const ENOSYS = 38;
export const ENAMETOOLONG = 36;
export const EPROTO = 71;
export const ESTALE = 116;
