/**
 * The little packet handling the real back-end's data path needs: the virtio-net header
 * in front of each frame (fact sheet §8) and a well-formedness check of what a guest
 * transmits — Ethernet, optional VLAN tags, IPv4 (header checksum included: virtio has no
 * offload for it), IPv6, UDP/TCP lengths. It judges structure, not content: any payload
 * passes.
 */
import { hasFeature, VirtioFeature } from '../../virtio/index.ts';

/** virtio-net header length: 12 with VERSION_1, MRG_RXBUF or RING_PACKED (DPDK's `vhost_hlen`), else 10. */
export function netHeaderLength(features: bigint): 10 | 12 {
  return hasFeature(features, VirtioFeature.VERSION_1) || hasFeature(features, VirtioFeature.NET_MRG_RXBUF) || hasFeature(features, VirtioFeature.RING_PACKED)
    ? 12
    : 10;
}

export const NET_HDR_F_NEEDS_CSUM = 1;
export const NET_HDR_F_DATA_VALID = 2;
export const NET_HDR_GSO_NONE = 0;
export const NET_HDR_GSO_ECN = 0x80;

export type FrameProblem =
  | 'short-header' // fewer readable bytes than the virtio-net header
  | 'header-flags' // flags other than NEEDS_CSUM on TX
  | 'header-gso' // a GSO type the back-end did not offer (net_vhost leaves TSO off)
  | 'header-csum' // NEEDS_CSUM with csum_start/offset outside the frame
  | 'runt' // shorter than an Ethernet header
  | 'too-long' // longer than the largest frame the check copies
  | 'tx-writable' // a TX chain with device-writable descriptors
  | 'bad-address' // a segment outside guest memory
  | 'ipv4-version'
  | 'ipv4-ihl'
  | 'ipv4-length'
  | 'ipv4-checksum'
  | 'ipv6-length'
  | 'udp-length'
  | 'tcp-header';

export interface FrameInfo {
  /** Innermost EtherType after VLAN tags. */
  etherType: number;
  /** IP protocol (IPv4 protocol / IPv6 next header), -1 when not IP. */
  ipProto: number;
}

const ETH_HLEN = 14;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

function u16be(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

function u16le(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

/** The ones'-complement sum of an IPv4 header is 0xffff when its checksum is right. */
function ipv4ChecksumOk(b: Uint8Array, o: number, len: number): boolean {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += u16be(b, o + i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

/**
 * Checks the virtio-net header of a TX packet (`hdrLen` bytes at 0 of `pkt`), given the
 * negotiated features. `frameLen` is the frame's length after the header.
 */
export function checkTxHeader(pkt: Uint8Array, hdrLen: number, frameLen: number, features: bigint): FrameProblem | undefined {
  const flags = pkt[0]!;
  const gso = pkt[1]!;
  if ((flags & ~NET_HDR_F_NEEDS_CSUM) !== 0) return 'header-flags';
  const gsoType = gso & ~NET_HDR_GSO_ECN;
  if (gsoType !== NET_HDR_GSO_NONE) {
    const ok =
      (gsoType === 1 && hasFeature(features, VirtioFeature.NET_HOST_TSO4)) ||
      (gsoType === 4 && hasFeature(features, VirtioFeature.NET_HOST_TSO6)) ||
      (gsoType === 3 && hasFeature(features, VirtioFeature.NET_HOST_UFO));
    if (!ok) return 'header-gso';
  }
  if ((flags & NET_HDR_F_NEEDS_CSUM) !== 0) {
    const start = u16le(pkt, 6);
    const off = u16le(pkt, 8);
    if (start + off + 2 > frameLen) return 'header-csum';
  }
  return undefined;
}

/**
 * num_buffers of a TX header (0 without the 12-byte form). It means nothing on TX and devices
 * ignore it, so a non-zero value is noted, not held against the frame: DPDK's virtio PMD
 * (`virtqueue_clear_net_hdr`, drivers/net/virtio/virtqueue.h) clears the other six fields when
 * it prepends the header in the mbuf's headroom, but not num_buffers, so an mbuf that last
 * carried a received packet goes out with that packet's num_buffers.
 */
export function txNumBuffers(pkt: Uint8Array, hdrLen: number): number {
  return hdrLen >= 12 ? u16le(pkt, 10) : 0;
}

/** Checks the frame at `f[o, o+len)`; fills `info` when well-formed. */
export function checkFrame(f: Uint8Array, o: number, len: number, info?: FrameInfo): FrameProblem | undefined {
  if (len < ETH_HLEN) return 'runt';
  let at = o + 12;
  let type = u16be(f, at);
  at += 2;
  while ((type === ETH_P_8021Q || type === ETH_P_8021AD) && at + 4 <= o + len) {
    type = u16be(f, at + 2);
    at += 4;
  }
  const end = o + len;
  let proto = -1;
  if (type === ETH_P_IP) {
    if (at + 20 > end) return 'ipv4-length';
    const vihl = f[at]!;
    if (vihl >> 4 !== 4) return 'ipv4-version';
    const ihl = (vihl & 15) * 4;
    if (ihl < 20 || at + ihl > end) return 'ipv4-ihl';
    const total = u16be(f, at + 2);
    // Ethernet padding may follow the datagram; the datagram may not run past the frame.
    if (total < ihl || at + total > end) return 'ipv4-length';
    if (!ipv4ChecksumOk(f, at, ihl)) return 'ipv4-checksum';
    proto = f[at + 9]!;
    const fragmented = (u16be(f, at + 6) & 0x3fff) !== 0;
    if (!fragmented) {
      const l4 = at + ihl;
      const l4len = total - ihl;
      if (proto === IPPROTO_UDP && (l4len < 8 || u16be(f, l4 + 4) !== l4len)) return 'udp-length';
      if (proto === IPPROTO_TCP && (l4len < 20 || (f[l4 + 12]! >> 4) * 4 < 20 || (f[l4 + 12]! >> 4) * 4 > l4len)) return 'tcp-header';
    }
  } else if (type === ETH_P_IPV6) {
    if (at + 40 > end) return 'ipv6-length';
    if (f[at]! >> 4 !== 6) return 'ipv6-length';
    const payload = u16be(f, at + 4);
    if (at + 40 + payload > end) return 'ipv6-length';
    proto = f[at + 6]!;
    if (proto === IPPROTO_UDP && (payload < 8 || u16be(f, at + 40 + 4) !== payload)) return 'udp-length';
  }
  if (info !== undefined) {
    info.etherType = type;
    info.ipProto = proto;
  }
  return undefined;
}
