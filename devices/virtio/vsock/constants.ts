/**
 * virtio-vsock constants (virtio 1.2 §5.10, linux/virtio_vsock.h), named as in
 * the spec, and the device's own limits (every per-guest and per-connection
 * resource is bounded by one of these).
 */

// §5.10.2 Virtqueues.
export const VSOCK_QUEUE_RX = 0;
export const VSOCK_QUEUE_TX = 1;
export const VSOCK_QUEUE_EVENT = 2;
/** QueueNumMax of each of the three queues. */
export const VSOCK_QUEUE_SIZE = 256;

// §5.10.3 Feature bits.
export const VIRTIO_VSOCK_F_STREAM = 0;
export const VIRTIO_VSOCK_F_SEQPACKET = 1;

// §5.10.4 struct virtio_vsock_config { le64 guest_cid; }.
export const VIRTIO_VSOCK_CFG_GUEST_CID = 0;
export const VIRTIO_VSOCK_CONFIG_SIZE = 8;

// §5.10.4 Reserved CIDs: 0, 1, 2 (the host) and 0xffffffff (VMADDR_CID_ANY).
export const VMADDR_CID_HOST = 2;
/** Smallest CID a guest may have. */
export const VSOCK_MIN_GUEST_CID = 3;
/** VMADDR_CID_ANY (-1U): reserved, and the upper bound (exclusive) of guest CIDs. */
export const VMADDR_CID_ANY = 0xffff_ffff;

// §5.10.6 struct virtio_vsock_hdr: byte offsets, all little-endian, 44 bytes packed.
export const VSOCK_HDR_SRC_CID = 0; // le64
export const VSOCK_HDR_DST_CID = 8; // le64
export const VSOCK_HDR_SRC_PORT = 16; // le32
export const VSOCK_HDR_DST_PORT = 20; // le32
export const VSOCK_HDR_LEN = 24; // le32: payload bytes after the header
export const VSOCK_HDR_TYPE = 28; // le16
export const VSOCK_HDR_OP = 30; // le16
export const VSOCK_HDR_FLAGS = 32; // le32
export const VSOCK_HDR_BUF_ALLOC = 36; // le32
export const VSOCK_HDR_FWD_CNT = 40; // le32
export const VSOCK_HDR_SIZE = 44;

// §5.10.6 op.
export const VIRTIO_VSOCK_OP_INVALID = 0;
export const VIRTIO_VSOCK_OP_REQUEST = 1;
export const VIRTIO_VSOCK_OP_RESPONSE = 2;
export const VIRTIO_VSOCK_OP_RST = 3;
export const VIRTIO_VSOCK_OP_SHUTDOWN = 4;
export const VIRTIO_VSOCK_OP_RW = 5;
export const VIRTIO_VSOCK_OP_CREDIT_UPDATE = 6;
export const VIRTIO_VSOCK_OP_CREDIT_REQUEST = 7;

// §5.10.6.2 type.
export const VIRTIO_VSOCK_TYPE_STREAM = 1;

// §5.10.6.4 SHUTDOWN flags (the spec gives bit numbers 0 and 1; these are the masks).
export const VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE = 1;
export const VIRTIO_VSOCK_SHUTDOWN_F_SEND = 2;
export const VIRTIO_VSOCK_SHUTDOWN_MASK = VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE | VIRTIO_VSOCK_SHUTDOWN_F_SEND;

// §5.10.6.5 Device events: struct virtio_vsock_event { le32 id; }.
export const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = 0;
export const VSOCK_EVENT_SIZE = 4;

// ---- The device's own limits (not from the spec) ----

/**
 * Largest payload of one packet, either way (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE in
 * Linux). A guest packet that claims more is malformed: its connection is reset.
 */
export const VSOCK_MAX_PKT_PAYLOAD = 64 * 1024;
/**
 * The largest receive buffer the device advertises for one connection
 * (buf_alloc), in bytes: guest data the Unix socket has not taken yet waits
 * in a copy of at most the connection's buf_alloc, so it bounds host memory
 * per connection.
 */
export const VSOCK_CONN_BUF_ALLOC = 256 * 1024;
/**
 * The receive buffers of all connections of one device add up to at most
 * this: a new connection gets VSOCK_CONN_BUF_ALLOC, or what is left of the
 * budget, but never less than VSOCK_MIN_CONN_BUF_ALLOC. So a guest holds at
 * most this plus VSOCK_MIN_CONN_BUF_ALLOC per connection past it of host
 * memory (46 MiB with VSOCK_MAX_CONNECTIONS), not VSOCK_CONN_BUF_ALLOC per
 * connection (256 MiB). The first 128 connections get the full size.
 */
export const VSOCK_DEVICE_BUF_BUDGET = 32 * 1024 * 1024;
/** The smallest buf_alloc a connection is given when the device's budget is spent. */
export const VSOCK_MIN_CONN_BUF_ALLOC = 16 * 1024;
/**
 * Guest data waiting for a socket is packed into chunks of at least this many
 * bytes, so a guest that sends one-byte packets cannot make the host keep one
 * small buffer (and its bookkeeping) per byte: a connection holds at most
 * buf_alloc / VSOCK_PENDING_CHUNK_BYTES + 3 chunks (the first partly sent,
 * the last partly filled, and our OK line).
 */
export const VSOCK_PENDING_CHUNK_BYTES = 4096;
/** Connections at once (each holds a host fd and up to its buf_alloc of memory); more are refused with RST. */
export const VSOCK_MAX_CONNECTIONS = 1023;
/** Host clients that connected to udsPath and have not finished their CONNECT line; more are closed at once. */
export const VSOCK_MAX_HANDSHAKES = 64;
/** Longest CONNECT line, newline included ("CONNECT 4294967295\n" is 19 bytes). */
export const VSOCK_MAX_CONNECT_LINE = 32;
/** RST replies to packets of no connection, waiting for an rx buffer; more are dropped (the guest flooded us). */
export const VSOCK_MAX_ORPHAN_REPLIES = 128;
/** Host clients accepted per wakeup of the listening socket. */
export const VSOCK_ACCEPT_BATCH = 16;
/** The first host-side port of host-initiated connections (Firecracker's docs show "OK 1073741824"). */
export const VSOCK_FIRST_EPHEMERAL_PORT = 0x4000_0000;
/** Largest vsock port number (u32). */
export const VSOCK_MAX_PORT = 0xffff_ffff;

/** Timeouts, in milliseconds. Tests shorten them. */
export interface VsockTimeouts {
  /** A host client must finish its CONNECT line within this. */
  readonly connectLineMs: number;
  /** The guest must answer our REQUEST (RESPONSE or RST) within this, or the host client is closed. */
  readonly connectResponseMs: number;
  /**
   * A closing connection (guest shut both ways, or we told the guest so) gets
   * this long to drain to the socket or to see the guest's RST; then it is reset.
   */
  readonly closeMs: number;
  /** Period of the housekeeping tick that enforces the deadlines above (runs only while one is pending). */
  readonly tickMs: number;
}

export const DEFAULT_VSOCK_TIMEOUTS: VsockTimeouts = {
  connectLineMs: 10_000,
  // Generous: a guest on an emulated CPU (the TCG test host) answers slowly.
  connectResponseMs: 5_000,
  closeMs: 2_000,
  tickMs: 100,
};
