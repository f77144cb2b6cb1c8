import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../memory/index.ts';
import { checkPackedLayout, checkPackedSize, layoutPackedRing, packedRingFootprint, PACKED_MAX_SIZE } from './layout.ts';
import { translatePackedRing } from './views.ts';

describe('packed layout', () => {
  it('accepts every size 1..32768, powers of two or not', () => {
    for (const size of [1, 2, 3, 5, 255, 257, 1000, 1025, 32767, 32768]) {
      expect(() => checkPackedSize(size)).not.toThrow();
      const l = layoutPackedRing(0x4000, size);
      expect(l.deviceEvent + 4 - l.desc).toBe(packedRingFootprint(size));
    }
    expect(PACKED_MAX_SIZE).toBe(32768);
  });

  it('refuses 0, 32769, fractions, and misaligned bases', () => {
    for (const size of [0, 32769, 65536, 1.5, -3, Infinity]) expect(() => checkPackedSize(size)).toThrow(RangeError);
    for (const base of [1, 4, 8, 0x1004, -16, 2 ** 53]) expect(() => layoutPackedRing(base, 8)).toThrow(RangeError);
  });

  it('checks a layout from elsewhere for the spec alignments (16 ring, 4 event areas)', () => {
    expect(() => checkPackedLayout({ size: 4, desc: 0x1000, driverEvent: 0x2002, deviceEvent: 0x3000 })).toThrow(/driver event/);
    expect(() => checkPackedLayout({ size: 4, desc: 0x1000, driverEvent: 0x2000, deviceEvent: 0x3001 })).toThrow(/device event/);
    expect(() => checkPackedLayout({ size: 4, desc: 0x1008, driverEvent: 0x2000, deviceEvent: 0x3000 })).toThrow(/16-aligned/);
    // the three areas may be anywhere (vhost-user sends them separately)
    expect(() => checkPackedLayout({ size: 4, desc: 0x3000, driverEvent: 0x1000, deviceEvent: 0x2004 })).not.toThrow();
  });

  it('translates the areas once, each in its own region if need be, and refuses unmapped ones', () => {
    const mem = new GuestMemory([
      { gpa: 0, size: 0x1000 },
      { gpa: 0x10000, size: 0x1000 },
    ]);
    const v = translatePackedRing(mem, { size: 4, desc: 0x100, driverEvent: 0x10000, deviceEvent: 0x10ffc });
    expect(v.desc32).toBe(0x100 / 4);
    expect(v.drvIdx).toBe(0);
    expect(v.devIdx).toBe(0xffc / 2);
    expect(v.drv16).not.toBe(v.d16);
    expect(() => translatePackedRing(mem, { size: 4, desc: 0x100, driverEvent: 0x2000, deviceEvent: 0x10000 })).toThrow(/not mapped/);
    // the ring must fit in one region: 0xff0 + 4·16 runs past the first
    expect(() => translatePackedRing(mem, { size: 4, desc: 0xff0, driverEvent: 0x10000, deviceEvent: 0x10004 })).toThrow();
  });
});
