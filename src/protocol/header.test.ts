import { describe, expect, it } from 'vitest';
import {
  DPDK_22_11_MAX_PAYLOAD,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  QEMU_MAX_PAYLOAD,
  REPLY_FLAGS,
  VERSION,
  VERSION_MASK,
  decodeHeader,
  encodeHeader,
  isReply,
  replyFlagsFor,
  requestFlags,
  versionOf,
  wantsReply,
} from './header.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('header', () => {
  it('has the vhost-user flag values and a 12-byte size', () => {
    expect(HEADER_SIZE).toBe(12);
    expect([VERSION, VERSION_MASK, FLAG_REPLY, FLAG_NEED_REPLY, REPLY_FLAGS]).toEqual([0x1, 0x3, 0x4, 0x8, 0x5]);
    expect(DPDK_22_11_MAX_PAYLOAD).toBe(632);
    expect(QEMU_MAX_PAYLOAD).toBeGreaterThan(DPDK_22_11_MAX_PAYLOAD);
  });

  it('encodes request, flags, size as little-endian u32s in that order', () => {
    expect(hex(encodeHeader({ request: 1, flags: 5, size: 8 }))).toBe('010000000500000008000000');
    expect(hex(encodeHeader({ request: 0x01020304, flags: 0x9, size: 0x28 }))).toBe('040302010900000028000000');
  });

  it('decodes what it encodes, at an offset inside a larger buffer', () => {
    const buf = new Uint8Array(20);
    encodeHeader({ request: 0xfffffffe, flags: 0x0d, size: 632 }, buf, 5);
    expect(decodeHeader(buf, 5)).toEqual({ request: 0xfffffffe, flags: 0x0d, size: 632 });
  });

  it('reads flag bits', () => {
    expect(versionOf(0x9)).toBe(1);
    expect(versionOf(0x6)).toBe(2);
    expect(isReply(0x5)).toBe(true);
    expect(isReply(0x9)).toBe(false);
    expect(wantsReply(0x9)).toBe(true);
    expect(wantsReply(0x5)).toBe(false);
  });

  it('builds request flags 0x1 / 0x9 and DPDK reply flags 0x5 whatever NEED_REPLY was', () => {
    expect(requestFlags()).toBe(0x1);
    expect(requestFlags(true)).toBe(0x9);
    expect(replyFlagsFor(0x1)).toBe(0x5);
    expect(replyFlagsFor(0x9)).toBe(0x5);
    // DPDK rewrites only the version and NEED_REPLY bits: a reserved bit set by the sender survives.
    expect(replyFlagsFor(0x11)).toBe(0x15);
    expect(replyFlagsFor(0x2)).toBe(0x5);
  });
});
