import { describe, expect, it } from 'vitest';
import { checkFrame, checkTxHeader, netHeaderLength, txNumBuffers, type FrameInfo } from './frames.ts';
import { udpFrame, VIRTIO_USER_FEATURES } from './testing.ts';

const bit = (n: number): bigint => 1n << BigInt(n);

describe('virtio-net header', () => {
  it('is 12 bytes with VERSION_1, MRG_RXBUF or RING_PACKED, else 10', () => {
    expect(netHeaderLength(0n)).toBe(10);
    expect(netHeaderLength(bit(32))).toBe(12);
    expect(netHeaderLength(bit(15))).toBe(12);
    expect(netHeaderLength(bit(34))).toBe(12);
    expect(netHeaderLength(VIRTIO_USER_FEATURES)).toBe(12);
  });

  it('accepts a zeroed TX header and NEEDS_CSUM inside the frame', () => {
    const h = new Uint8Array(12);
    expect(checkTxHeader(h, 12, 64, VIRTIO_USER_FEATURES)).toBeUndefined();
    h[0] = 1;
    h[6] = 34; // csum_start
    h[8] = 6; // csum_offset
    expect(checkTxHeader(h, 12, 64, VIRTIO_USER_FEATURES)).toBeUndefined();
    expect(checkTxHeader(h, 12, 40, VIRTIO_USER_FEATURES)).toBe('header-csum');
  });

  it('refuses unknown flags and a GSO type that was not negotiated', () => {
    const h = new Uint8Array(12);
    h[0] = 4;
    expect(checkTxHeader(h, 12, 64, VIRTIO_USER_FEATURES)).toBe('header-flags');
    h[0] = 0;
    h[1] = 1; // TCPV4
    expect(checkTxHeader(h, 12, 64, VIRTIO_USER_FEATURES)).toBe('header-gso');
    expect(checkTxHeader(h, 12, 64, VIRTIO_USER_FEATURES | bit(11))).toBeUndefined();
  });

  it('reads num_buffers of the 12-byte form only', () => {
    const h = new Uint8Array(12);
    h[10] = 1;
    expect(txNumBuffers(h, 12)).toBe(1);
    expect(txNumBuffers(h, 10)).toBe(0);
  });
});

describe('frame check', () => {
  it('accepts well-formed IPv4/UDP frames of any size, and reports their types', () => {
    for (const len of [42, 60, 64, 1514]) {
      const info: FrameInfo = { etherType: 0, ipProto: -1 };
      expect(checkFrame(udpFrame(len, len), 0, len, info)).toBeUndefined();
      expect(info).toEqual({ etherType: 0x0800, ipProto: 17 });
    }
  });

  it('finds the frame at an offset (behind the header)', () => {
    const f = udpFrame(64);
    const pkt = new Uint8Array(12 + 64);
    pkt.set(f, 12);
    expect(checkFrame(pkt, 12, 64)).toBeUndefined();
  });

  it('accepts Ethernet padding after a short datagram', () => {
    const f = new Uint8Array(60);
    f.set(udpFrame(50));
    expect(checkFrame(f, 0, 60)).toBeUndefined();
  });

  it('looks through VLAN tags', () => {
    const f = udpFrame(64);
    const tagged = new Uint8Array(68);
    tagged.set(f.subarray(0, 12));
    tagged.set([0x81, 0x00, 0x00, 0x05], 12);
    tagged.set(f.subarray(12), 16);
    const info: FrameInfo = { etherType: 0, ipProto: -1 };
    expect(checkFrame(tagged, 0, 68, info)).toBeUndefined();
    expect(info.etherType).toBe(0x0800);
  });

  it('names what is wrong', () => {
    expect(checkFrame(udpFrame(64), 0, 13)).toBe('runt');
    const bad = (mutate: (f: Uint8Array) => void, len = 64) => {
      const f = udpFrame(len);
      mutate(f);
      return checkFrame(f, 0, len);
    };
    expect(bad((f) => (f[24] ^= 1))).toBe('ipv4-checksum');
    expect(bad((f) => (f[14] = 0x65))).toBe('ipv4-version');
    expect(bad((f) => (f[14] = 0x44))).toBe('ipv4-ihl');
    expect(bad((f) => (f[16] = 0x10))).toBe('ipv4-length');
    expect(checkFrame(udpFrame(64), 0, 40)).toBe('ipv4-length');
    expect(bad((f) => (f[39] ^= 1))).toBe('udp-length');
  });

  it('checks IPv6 lengths and passes other EtherTypes', () => {
    const f = new Uint8Array(14 + 40 + 8);
    f[12] = 0x86;
    f[13] = 0xdd;
    f[14] = 0x60;
    f[19] = 8; // payload length
    f[20] = 17;
    f[14 + 40 + 5] = 8; // UDP length
    expect(checkFrame(f, 0, f.length)).toBeUndefined();
    f[19] = 9;
    expect(checkFrame(f, 0, f.length)).toBe('ipv6-length');
    const arp = new Uint8Array(42);
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect(checkFrame(arp, 0, 42)).toBeUndefined();
  });
});
