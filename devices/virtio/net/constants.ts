/**
 * virtio-net constants (virtio 1.2 §5.1), named as in the spec and
 * linux/virtio_net.h, plus flintvm's own limits.
 */

// §5.1.3 Feature bits (bit numbers).
/** Device handles packets with partial checksum (driver -> device checksum offload). */
export const VIRTIO_NET_F_CSUM = 0;
/** Driver handles packets with partial checksum (device -> driver). */
export const VIRTIO_NET_F_GUEST_CSUM = 1;
/** Device has given MAC address (config `mac`). */
export const VIRTIO_NET_F_MAC = 5;
/** Driver can receive TSOv4 / TSOv6 / TSO with ECN / UFO. */
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
/** Device can receive TSOv4 / TSOv6 / TSO with ECN / UFO. */
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
/** Driver can merge receive buffers: one packet may span several rx chains (§5.1.6.3.2). */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** Config `status` is available (link up/down). */
export const VIRTIO_NET_F_STATUS = 16;
/** Control channel available (not offered by flintvm). */
export const VIRTIO_NET_F_CTRL_VQ = 17;

// §5.1.4 Device configuration layout (little-endian).
export const VIRTIO_NET_CFG_MAC = 0;
export const VIRTIO_NET_CFG_STATUS = 6;
/** Bytes of config space flintvm exposes: mac[6] and status u16 (the fields its features cover). */
export const VIRTIO_NET_CONFIG_SIZE = 8;
/** Config `status` bit: the link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** An Ethernet MAC address is 6 bytes. */
export const ETH_ALEN = 6;
/** Destination MAC, source MAC, EtherType. */
export const ETH_HLEN = 14;

// §5.1.6 struct virtio_net_hdr (VIRTIO_F_VERSION_1 layout: num_buffers always present).
export const VIRTIO_NET_HDR_FLAGS = 0;
export const VIRTIO_NET_HDR_GSO_TYPE = 1;
export const VIRTIO_NET_HDR_HDR_LEN = 2;
export const VIRTIO_NET_HDR_GSO_SIZE = 4;
export const VIRTIO_NET_HDR_CSUM_START = 6;
export const VIRTIO_NET_HDR_CSUM_OFFSET = 8;
export const VIRTIO_NET_HDR_NUM_BUFFERS = 10;
/** sizeof(struct virtio_net_hdr) with num_buffers: what precedes every frame, on both queues. */
export const VIRTIO_NET_HDR_SIZE = 12;

// struct virtio_net_hdr flags.
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

// struct virtio_net_hdr gso_type.
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** Flag bit of gso_type: TCP segments carry ECN (CWR) bits. */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

// Queues (§5.1.2: receiveq1 then transmitq1; no control queue).
export const NET_RX_QUEUE = 0;
export const NET_TX_QUEUE = 1;
/** QueueNumMax of both queues. */
export const NET_QUEUE_SIZE = 256;

/**
 * Largest packet on either queue, header included: 12-byte header plus 65550
 * bytes (a 64 KiB TSO packet with its Ethernet header), as Firecracker and
 * crosvm bound it. TX chains longer than this are dropped; RX gathers this
 * much buffer space before reading from the tap when the guest merges buffers.
 */
export const NET_MAX_PACKET = 65562;
/**
 * Most iovecs one readv/writev gets (Linux UIO_MAXIOV). The device never
 * hands a backend more segments than this for one packet.
 */
export const NET_MAX_IOVECS = 1024;
/** Most guest segments one receive reads into: one iovec is left for the backend to detect a packet that did not fit. */
export const NET_RX_MAX_IOVECS = NET_MAX_IOVECS - 1;
/** Packets moved from the tap to the guest per wakeup before yielding to the loop (the tap fd is level-triggered, so the loop calls back). */
export const NET_RX_BUDGET = 64;
