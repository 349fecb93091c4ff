/**
 * virtio-blk constants (virtio 1.2 §5.2, linux/virtio_blk.h), named as in the spec.
 */
import { GiB, MiB } from '../../../lib/sys.js';

/** Bytes per virtio-blk sector: capacity and request sectors always count 512 bytes (§5.2.4). */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** Length of the GET_ID answer (§5.2.6). */
export const VIRTIO_BLK_ID_BYTES = 20;

// §5.2.3 Feature bits.
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// §5.2.4 struct virtio_blk_config: byte offsets (all fields little-endian).
export const VIRTIO_BLK_CFG_CAPACITY = 0; // le64, in 512-byte sectors
export const VIRTIO_BLK_CFG_SIZE_MAX = 8; // le32
export const VIRTIO_BLK_CFG_SEG_MAX = 12; // le32
export const VIRTIO_BLK_CFG_GEOMETRY = 16; // le16 cylinders, u8 heads, u8 sectors
export const VIRTIO_BLK_CFG_BLK_SIZE = 20; // le32
export const VIRTIO_BLK_CFG_TOPOLOGY = 24; // u8, u8, le16, le32
export const VIRTIO_BLK_CFG_WRITEBACK = 32; // u8
export const VIRTIO_BLK_CFG_NUM_QUEUES = 34; // le16
export const VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS = 36; // le32
export const VIRTIO_BLK_CFG_MAX_DISCARD_SEG = 40; // le32
export const VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT = 44; // le32
export const VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS = 48; // le32
export const VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG = 52; // le32
export const VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP = 56; // u8
/** Config space length up to and including write_zeroes_may_unmap's padding (secure erase and zoned fields are not offered). */
export const VIRTIO_BLK_CONFIG_SIZE = 60;

// §5.2.6 Request types.
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

// §5.2.6 Status values.
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** struct virtio_blk_req header: le32 type, le32 reserved, le64 sector. */
export const VIRTIO_BLK_REQ_HEADER_SIZE = 16;
/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
export const VIRTIO_BLK_DISCARD_WZ_SIZE = 16;
/** flags bit of a write-zeroes range: the device may deallocate it. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

// What this device offers (config-space limits).
/** Request queue size (QueueNumMax). */
export const BLOCK_QUEUE_SIZE = 256;
/** seg_max: data segments per request; the header and status take the other two descriptors of a direct chain. */
export const BLOCK_SEG_MAX = BLOCK_QUEUE_SIZE - 2;
/** size_max: largest single data segment, in bytes. */
export const BLOCK_SIZE_MAX = MiB;
/** max_discard_sectors and max_write_zeroes_sectors: 1 GiB per range. */
export const BLOCK_MAX_DISCARD_SECTORS = GiB / VIRTIO_BLK_SECTOR_SIZE;
export const BLOCK_MAX_WRITE_ZEROES_SECTORS = BLOCK_MAX_DISCARD_SECTORS;
/** max_discard_seg and max_write_zeroes_seg: ranges per request. */
export const BLOCK_MAX_DISCARD_SEG = 32;
export const BLOCK_MAX_WRITE_ZEROES_SEG = 32;
/** discard_sector_alignment: 4 KiB, the usual filesystem block that a hole punch can free. */
export const BLOCK_DISCARD_SECTOR_ALIGNMENT = 8;
