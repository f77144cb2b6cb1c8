/**
 * The virtio-net header that precedes every frame in a virtio-net buffer
 * (virtio 1.2 §5.1.6; fact sheet §8). Little-endian fields:
 *
 *   0 flags u8 · 1 gso_type u8 · 2 hdr_len · 4 gso_size · 6 csum_start · 8 csum_offset
 *   · 10 num_buffers (12-byte form only)
 */
import { hasFeature, VirtioFeature } from '../virtio/index.ts';
import type { GuestMemory, PacketBuffer } from '../memory/index.ts';

export const NET_HDR_LEN_LEGACY = 10;
export const NET_HDR_LEN_MRG = 12;

export const NetHdrFlag = {
  NEEDS_CSUM: 1,
  DATA_VALID: 2,
  RSC_INFO: 4,
} as const;

export const NetHdrGso = {
  NONE: 0,
  TCPV4: 1,
  UDP: 3,
  TCPV6: 4,
  UDP_L4: 5,
  ECN: 0x80,
} as const;

export interface VirtioNetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  /** Only in the 12-byte form; 0 on TX, the count of buffers a mergeable RX packet uses. */
  numBuffers: number;
}

export type NetHeaderLength = typeof NET_HDR_LEN_LEGACY | typeof NET_HDR_LEN_MRG;

/**
 * DPDK's `vhost_hlen` (lib/vhost/vhost_user.c vhost_user_set_features): 12 when
 * MRG_RXBUF, VERSION_1 or RING_PACKED is negotiated, otherwise the legacy 10.
 */
export function vhostHeaderLength(features: bigint): NetHeaderLength {
  return hasFeature(features, VirtioFeature.NET_MRG_RXBUF) || hasFeature(features, VirtioFeature.VERSION_1) || hasFeature(features, VirtioFeature.RING_PACKED)
    ? NET_HDR_LEN_MRG
    : NET_HDR_LEN_LEGACY;
}

/** MRG_RXBUF negotiated: an RX packet may span several buffers. */
export function isMergeable(features: bigint): boolean {
  return hasFeature(features, VirtioFeature.NET_MRG_RXBUF);
}

export const ZERO_NET_HEADER: Readonly<VirtioNetHeader> = Object.freeze({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, numBuffers: 0 });

function checkLen(len: number): void {
  if (len !== NET_HDR_LEN_LEGACY && len !== NET_HDR_LEN_MRG) throw new RangeError(`virtio-net header length ${len} is neither 10 nor 12`);
}

/** Writes the header's `len` bytes at `off`. num_buffers is dropped in the 10-byte form. */
export function encodeNetHeader(h: VirtioNetHeader, out: Uint8Array, off = 0, len: NetHeaderLength = NET_HDR_LEN_MRG): void {
  checkLen(len);
  if (off < 0 || off + len > out.length) throw new RangeError(`a ${len}-byte header at ${off} does not fit ${out.length} bytes`);
  const put16 = (o: number, v: number) => {
    out[off + o] = v & 0xff;
    out[off + o + 1] = (v >>> 8) & 0xff;
  };
  out[off] = h.flags & 0xff;
  out[off + 1] = h.gsoType & 0xff;
  put16(2, h.hdrLen);
  put16(4, h.gsoSize);
  put16(6, h.csumStart);
  put16(8, h.csumOffset);
  if (len === NET_HDR_LEN_MRG) put16(10, h.numBuffers);
}

export function decodeNetHeader(bytes: Uint8Array, off = 0, len: NetHeaderLength = NET_HDR_LEN_MRG): VirtioNetHeader {
  checkLen(len);
  if (off < 0 || off + len > bytes.length) throw new RangeError(`a ${len}-byte header at ${off} does not fit ${bytes.length} bytes`);
  const get16 = (o: number) => bytes[off + o] | (bytes[off + o + 1] << 8);
  return {
    flags: bytes[off],
    gsoType: bytes[off + 1],
    hdrLen: get16(2),
    gsoSize: get16(4),
    csumStart: get16(6),
    csumOffset: get16(8),
    numBuffers: len === NET_HDR_LEN_MRG ? get16(10) : 0,
  };
}

/**
 * The header a back-end writes on RX when the packet carries no offload: all zero but
 * num_buffers (DPDK virtio_enqueue_offload clears the offload fields, mbuf_to_desc sets
 * num_buffers). Written into `scratch` (≥ 12 bytes) so the caller can scatter it.
 */
export function fillRxHeader(scratch: PacketBuffer, numBuffers: number): void {
  const b = scratch.bytes;
  for (let i = 0; i < NET_HDR_LEN_MRG; i++) b[i] = 0;
  b[10] = numBuffers & 0xff;
  b[11] = (numBuffers >>> 8) & 0xff;
}

/** num_buffers of the 12-byte header at `gpa` in guest memory. */
export function readNumBuffers(mem: GuestMemory, gpa: number): number {
  return mem.readU16(gpa + 10);
}
