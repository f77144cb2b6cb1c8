import { describe, expect, it } from 'vitest';
import { layoutSplitRing, splitAreaSizes, splitRingFootprint, SplitOffsets } from './layout.ts';

describe('split ring layout', () => {
  it('gives the spec sizes: 16Q, 4+2Q(+2), 4+8Q(+2)', () => {
    expect(splitAreaSizes(256, false)).toEqual({ desc: 4096, avail: 516, used: 2052 });
    expect(splitAreaSizes(256, true)).toEqual({ desc: 4096, avail: 518, used: 2054 });
    expect(splitAreaSizes(1, true)).toEqual({ desc: 16, avail: 8, used: 14 });
    expect(splitAreaSizes(32768, true)).toEqual({ desc: 524288, avail: 65542, used: 262150 });
  });

  it('places avail right after the table and used at the next 4-byte boundary after used_event', () => {
    // Q=256: avail at 4096, its 6+512 bytes end at 4614, used at 4616.
    expect(layoutSplitRing(0, 256)).toEqual({ size: 256, desc: 0, avail: 4096, used: 4616 });
    // Q=1: avail at 16 ends at 24 (already aligned).
    expect(layoutSplitRing(0x1000, 1)).toEqual({ size: 1, desc: 0x1000, avail: 0x1010, used: 0x1018 });
    // Q=2: avail at 32, 6+4 bytes end at 42, used at 44.
    expect(layoutSplitRing(0, 2)).toEqual({ size: 2, desc: 0, avail: 32, used: 44 });
  });

  it('legacy layout puts the used ring at the next Queue Align boundary', () => {
    expect(layoutSplitRing(0, 256, { legacyAlign: 4096 }).used).toBe(8192);
    expect(layoutSplitRing(0x10000, 1024, { legacyAlign: 4096 })).toEqual({ size: 1024, desc: 0x10000, avail: 0x14000, used: 0x15000 });
    // The spec's legacy virtq_size (with ALIGN rounding to qalign) is never smaller than the exact footprint.
    for (const q of [1, 16, 256, 1024, 32768]) {
      const align = (x: number) => Math.ceil(x / 4096) * 4096;
      const virtqSize = align(16 * q + 2 * (3 + q)) + align(2 * 3 + 8 * q);
      expect(splitRingFootprint(q, { legacyAlign: 4096 })).toBeLessThanOrEqual(virtqSize);
      expect(align(splitRingFootprint(q, { legacyAlign: 4096 }))).toBe(virtqSize);
    }
  });

  it('footprint reaches one past avail_event', () => {
    expect(splitRingFootprint(256)).toBe(4616 + 6 + 8 * 256);
    expect(splitRingFootprint(1)).toBe(24 + 14);
    expect(SplitOffsets.usedEvent(256)).toBe(516);
    expect(SplitOffsets.availEvent(256)).toBe(2052);
  });

  it('refuses sizes that are not powers of two in 1..32768 and misaligned bases', () => {
    for (const q of [0, 3, 6, 100, 65536, 32769, 1.5, -4, NaN]) expect(() => layoutSplitRing(0, q)).toThrow(RangeError);
    expect(() => splitAreaSizes(12, false)).toThrow(RangeError);
    expect(() => layoutSplitRing(8, 4)).toThrow(RangeError);
    expect(() => layoutSplitRing(-16, 4)).toThrow(RangeError);
    expect(() => layoutSplitRing(0, 4, { legacyAlign: 3000 })).toThrow(RangeError);
  });
});
