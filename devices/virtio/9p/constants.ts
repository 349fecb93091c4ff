/**
 * 9P2000.L and virtio-9p constants, named as in Linux's include/net/9p/9p.h,
 * include/uapi/linux/virtio_9p.h and the 9P2000.L protocol description.
 */

// virtio 1.2 §5.3 (9P transport): feature bits and config space.
/** The device has a mount tag in its config space. */
export const VIRTIO_9P_MOUNT_TAG = 0;
/** struct virtio_9p_config { le16 tag_len; u8 tag[tag_len]; } */
export const VIRTIO_9P_CFG_TAG_LEN = 0;
export const VIRTIO_9P_CFG_TAG = 2;
/** Longest mount tag flintvm accepts, in bytes (QEMU's limit too; Linux reads any u16 length). */
export const P9_MAX_TAG_BYTES = 31;
/** Request queue size. Linux puts at most VIRTQUEUE_NUM = 128 buffers in one chain, which this allows. */
export const P9_QUEUE_SIZE = 128;

// Message header: size[4] type[1] tag[2].
export const P9_HEADER_SIZE = 7;
/** Rlerror: header + ecode[4]. The smallest reply that can say anything. */
export const P9_RLERROR_SIZE = 11;
/** Rread / Rreaddir header: header + count[4]; the data follows. */
export const P9_IOHDR_REPLY = 11;
/** Twrite header: header + fid[4] offset[8] count[4]; the data follows. */
export const P9_TWRITE_HEADER = 23;
/** P9_IOHDRSZ: what Linux keeps free of data in a read or write of msize. */
export const P9_IOHDRSZ = 24;

/** msize we offer at most (Linux's virtio transport caps itself at 500 KiB). */
export const P9_MAX_MSIZE = 512 * 1024;
/** Smallest msize we accept (Linux requires at least 4096). */
export const P9_MIN_MSIZE = 4096;
/** Tag of Tversion. */
export const P9_NOTAG = 0xffff;
/** "No fid" (afid of an unauthenticated Tattach). */
export const P9_NOFID = 0xffff_ffff;
/** Most names in one Twalk (MAXWELEM). */
export const P9_MAXWELEM = 16;
/** Most fids one device session holds; more fail with EMFILE. */
export const P9_MAX_FIDS = 65536;
/** The protocol version we speak. */
export const P9_VERSION_L = '9P2000.L';
export const P9_VERSION_UNKNOWN = 'unknown';

// Message types (9P2000.L; Tversion..Twalk are 9P2000's).
export const P9_TLERROR = 6;
export const P9_RLERROR = 7;
export const P9_TSTATFS = 8;
export const P9_RSTATFS = 9;
export const P9_TLOPEN = 12;
export const P9_RLOPEN = 13;
export const P9_TLCREATE = 14;
export const P9_RLCREATE = 15;
export const P9_TSYMLINK = 16;
export const P9_RSYMLINK = 17;
export const P9_TMKNOD = 18;
export const P9_RMKNOD = 19;
export const P9_TRENAME = 20;
export const P9_RRENAME = 21;
export const P9_TREADLINK = 22;
export const P9_RREADLINK = 23;
export const P9_TGETATTR = 24;
export const P9_RGETATTR = 25;
export const P9_TSETATTR = 26;
export const P9_RSETATTR = 27;
export const P9_TXATTRWALK = 30;
export const P9_RXATTRWALK = 31;
export const P9_TXATTRCREATE = 32;
export const P9_RXATTRCREATE = 33;
export const P9_TREADDIR = 40;
export const P9_RREADDIR = 41;
export const P9_TFSYNC = 50;
export const P9_RFSYNC = 51;
export const P9_TLOCK = 52;
export const P9_RLOCK = 53;
export const P9_TGETLOCK = 54;
export const P9_RGETLOCK = 55;
export const P9_TLINK = 70;
export const P9_RLINK = 71;
export const P9_TMKDIR = 72;
export const P9_RMKDIR = 73;
export const P9_TRENAMEAT = 74;
export const P9_RRENAMEAT = 75;
export const P9_TUNLINKAT = 76;
export const P9_RUNLINKAT = 77;
export const P9_TVERSION = 100;
export const P9_RVERSION = 101;
export const P9_TAUTH = 102;
export const P9_RAUTH = 103;
export const P9_TATTACH = 104;
export const P9_RATTACH = 105;
export const P9_TFLUSH = 108;
export const P9_RFLUSH = 109;
export const P9_TWALK = 110;
export const P9_RWALK = 111;
export const P9_TREAD = 116;
export const P9_RREAD = 117;
export const P9_TWRITE = 118;
export const P9_RWRITE = 119;
export const P9_TCLUNK = 120;
export const P9_RCLUNK = 121;
export const P9_TREMOVE = 122;
export const P9_RREMOVE = 123;

// qid.type bits.
export const P9_QTDIR = 0x80;
export const P9_QTSYMLINK = 0x02;
export const P9_QTFILE = 0x00;
/** qid: type[1] version[4] path[8]. */
export const P9_QID_SIZE = 13;

// Tlopen / Tlcreate flags (P9_DOTL_*: Linux's generic O_* values, whatever the host arch).
export const P9_DOTL_RDONLY = 0o0;
export const P9_DOTL_WRONLY = 0o1;
export const P9_DOTL_RDWR = 0o2;
export const P9_DOTL_NOACCESS = 0o3;
export const P9_DOTL_ACCMODE = 0o3;
export const P9_DOTL_CREATE = 0o100;
export const P9_DOTL_EXCL = 0o200;
export const P9_DOTL_TRUNC = 0o1000;
export const P9_DOTL_APPEND = 0o2000;
export const P9_DOTL_DSYNC = 0o10000;
export const P9_DOTL_DIRECTORY = 0o200000;
export const P9_DOTL_SYNC = 0o4000000;
/** Tunlinkat flag. */
export const P9_DOTL_AT_REMOVEDIR = 0x200;

// Tgetattr request_mask / Rgetattr valid.
export const P9_GETATTR_BASIC = 0x7ffn;
export const P9_GETATTR_BTIME = 0x800n;

// Tsetattr valid bits (fs/9p/vfs_inode_dotl.c).
export const P9_ATTR_MODE = 1 << 0;
export const P9_ATTR_UID = 1 << 1;
export const P9_ATTR_GID = 1 << 2;
export const P9_ATTR_SIZE = 1 << 3;
export const P9_ATTR_ATIME = 1 << 4;
export const P9_ATTR_MTIME = 1 << 5;
export const P9_ATTR_CTIME = 1 << 6;
export const P9_ATTR_ATIME_SET = 1 << 7;
export const P9_ATTR_MTIME_SET = 1 << 8;

// Tlock / Tgetlock.
export const P9_LOCK_TYPE_RDLCK = 0;
export const P9_LOCK_TYPE_WRLCK = 1;
export const P9_LOCK_TYPE_UNLCK = 2;
export const P9_LOCK_SUCCESS = 0;
export const P9_LOCK_BLOCKED = 1;
export const P9_LOCK_ERROR = 2;
export const P9_LOCK_GRACE = 3;
export const P9_LOCK_FLAGS_BLOCK = 1;
export const P9_LOCK_FLAGS_RECLAIM = 2;

// Txattrcreate flags (setxattr's XATTR_CREATE / XATTR_REPLACE).
export const P9_XATTR_CREATE = 1;
export const P9_XATTR_REPLACE = 2;
/** Largest xattr value a guest may write (XATTR_SIZE_MAX). */
export const P9_XATTR_SIZE_MAX = 65536;
/**
 * Most bytes of xattr data the fids of one session hold at once (Txattrwalk
 * results not yet clunked, Txattrcreate values being written); past it
 * Txattrwalk and Txattrcreate fail with ENOMEM. Without it, P9_MAX_FIDS fids
 * of P9_XATTR_SIZE_MAX bytes each could pin 4 GiB of host memory.
 */
export const P9_MAX_XATTR_BYTES = 16 * 1024 * 1024;
/**
 * Most lock ranges the open files of one session hold at once (Tlock). Each is
 * a lock record in the host kernel, freed only when its file is closed; past
 * the bound Tlock fails with ENOLCK. Without it, a guest locking every other
 * byte of a file could grow the host kernel's lock records without limit.
 */
export const P9_MAX_LOCK_RANGES = 4096;

// The Linux errno values the server itself chooses (the rest come from the host).
export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const E2BIG = 7;
export const EBADF = 9;
export const ENOMEM = 12;
export const EEXIST = 17;
export const ENOTDIR = 20;
export const EINVAL = 22;
export const EMFILE = 24;
export const ENOSPC = 28;
export const ERANGE = 34;
export const ENOLCK = 37;
export const EPROTO = 71;
export const EOPNOTSUPP = 95;
export const ESTALE = 116;
