import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  decodeFrame,
  encodeFrame,
  formatMac,
  FRAME_HEADER_LEN,
  frameChecksum,
  FrameKind,
  parseMac,
  readMac,
  verifyFrame,
  writeFrame,
  writeMac,
} from './packet.ts';

describe('MAC addresses', () => {
  it('parses and formats as testpmd prints them', () => {
    expect(parseMac('52:54:00:00:00:01')).toBe(0x5254_0000_0001);
    expect(formatMac(0x5648_4f53_5401)).toBe('56:48:4F:53:54:01');
    expect(() => parseMac('52:54:00:00:01')).toThrow(TypeError);
  });

  it('property: writeMac then readMac is the identity on 48-bit values', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), (mac) => {
        const b = new Uint8Array(8);
        writeMac(b, 1, mac);
        return readMac(b, 1) === mac && parseMac(formatMac(mac)) === mac;
      }),
    );
  });
});

describe('frames', () => {
  it('lays out the header big-endian at fixed offsets', () => {
    const f = encodeFrame({ dst: 0x0102_0304_0506, src: 0x0a0b_0c0d_0e0f, kind: FrameKind.Segment, flow: 0x11223344, seq: 0x55667788, ack: 0x99aabbcc, flags: 7 }, 64);
    expect([...f.subarray(0, 14)]).toEqual([1, 2, 3, 4, 5, 6, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x88, 0xb5]);
    expect([...f.subarray(14, 32)]).toEqual([0x56, 0x53, 1, 7, 0, 64, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc]);
    const d = decodeFrame(f);
    expect(d).toMatchObject({ dst: 0x0102_0304_0506, src: 0x0a0b_0c0d_0e0f, kind: 1, flags: 7, flow: 0x11223344, seq: 0x55667788, ack: 0x99aabbcc, len: 64, valid: true });
    expect(d.checksum).toBe(frameChecksum(f, 64));
  });

  it('payloads differ between neighbouring sequence numbers', () => {
    const a = encodeFrame({ dst: 0, src: 0, kind: 0, flow: 1, seq: 1 }, 100);
    const b = encodeFrame({ dst: 0, src: 0, kind: 0, flow: 1, seq: 2 }, 100);
    expect(Buffer.from(a.subarray(FRAME_HEADER_LEN)).equals(Buffer.from(b.subarray(FRAME_HEADER_LEN)))).toBe(false);
  });

  it('a truncated or padded frame fails the length check', () => {
    const f = encodeFrame({ dst: 1, src: 2, kind: 0, flow: 0, seq: 9 }, 80);
    expect(verifyFrame(f, 80)).toBe(true);
    expect(verifyFrame(f, 79)).toBe(false);
    const padded = new Uint8Array(90);
    padded.set(f);
    expect(verifyFrame(padded, 90)).toBe(false);
  });

  it('property: rewriting the MACs keeps a frame valid', () => {
    fc.assert(
      fc.property(fc.integer({ min: 36, max: 1600 }), fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 0, max: 2 ** 48 - 1 }), (len, d, s) => {
        const f = encodeFrame({ dst: 1, src: 2, kind: 0, flow: 3, seq: 4 }, len);
        writeMac(f, 0, d);
        writeMac(f, 6, s);
        return verifyFrame(f, len);
      }),
    );
  });

  it('property: any single changed byte outside the MACs is detected', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 36, max: 400 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        fc.nat(),
        fc.nat(),
        (len, at, delta, flow, seq) => {
          const f = new Uint8Array(len);
          writeFrame(f, { dst: 5, src: 6, kind: FrameKind.Data, flow: flow >>> 0, seq: seq >>> 0 }, len);
          const i = 12 + (at % (len - 12));
          f[i] = (f[i] + delta) & 0xff;
          return !verifyFrame(f, len);
        },
      ),
    );
  });

  it('refuses lengths outside the frame range', () => {
    expect(() => encodeFrame({ dst: 0, src: 0, kind: 0, flow: 0, seq: 0 }, 35)).toThrow(RangeError);
    expect(() => writeFrame(new Uint8Array(40), { dst: 0, src: 0, kind: 0, flow: 0, seq: 0 }, 41)).toThrow(RangeError);
  });
});
