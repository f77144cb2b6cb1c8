import { describe, expect, it } from 'vitest';
import { featureMask, VirtioFeature as F } from '../virtio/index.ts';
import { decodeNetHeader, encodeNetHeader, NetHdrFlag, NetHdrGso, vhostHeaderLength } from './net-header.ts';

describe('virtio-net header', () => {
  const h = { flags: NetHdrFlag.NEEDS_CSUM, gsoType: NetHdrGso.TCPV4 | NetHdrGso.ECN, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 3 };

  it('encodes the 12-byte form little-endian (hand-computed bytes)', () => {
    const b = new Uint8Array(12);
    encodeNetHeader(h, b, 0, 12);
    // flags 01, gso 0x81, hdr_len 54=0x0036, gso_size 1448=0x05a8, csum_start 34=0x0022, csum_offset 16=0x0010, num_buffers 3
    expect([...b]).toEqual([0x01, 0x81, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x03, 0x00]);
    expect(decodeNetHeader(b, 0, 12)).toEqual(h);
  });

  it('the 10-byte form has no num_buffers', () => {
    const b = new Uint8Array(14).fill(0xee);
    encodeNetHeader(h, b, 2, 10);
    expect([...b]).toEqual([0xee, 0xee, 0x01, 0x81, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0xee, 0xee]);
    expect(decodeNetHeader(b, 2, 10)).toEqual({ ...h, numBuffers: 0 });
  });

  it('refuses other lengths and short buffers', () => {
    expect(() => encodeNetHeader(h, new Uint8Array(20), 0, 11 as 12)).toThrow(RangeError);
    expect(() => decodeNetHeader(new Uint8Array(11), 0, 12)).toThrow(RangeError);
  });

  it('header length is 12 with MRG_RXBUF, VERSION_1 or RING_PACKED, else 10 (DPDK vhost_hlen)', () => {
    expect(vhostHeaderLength(0n)).toBe(10);
    expect(vhostHeaderLength(featureMask(F.RING_EVENT_IDX, F.RING_INDIRECT_DESC, F.PROTOCOL_FEATURES))).toBe(10);
    expect(vhostHeaderLength(featureMask(F.NET_MRG_RXBUF))).toBe(12);
    expect(vhostHeaderLength(featureMask(F.VERSION_1))).toBe(12);
    expect(vhostHeaderLength(featureMask(F.RING_PACKED))).toBe(12);
    // the iPXE negotiation observed in the fact sheet: VERSION_1 + bit 30
    expect(vhostHeaderLength(0x140000000n)).toBe(12);
  });
});
