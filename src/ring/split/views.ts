import type { GuestMemory, MemoryRegion } from '../../memory/index.ts';
import type { RingFeatures } from '../types.ts';
import { checkSplitSize, splitAreaSizes, type SplitLayout } from './layout.ts';

/**
 * A ring part translated once into typed-array indices of its region's views, so
 * the hot path addresses fields by index with no region lookup. The areas are
 * checked once here; every later index stays inside them by construction.
 */
export interface AreaViews {
  region: MemoryRegion;
  gpa: number;
  u16: Uint16Array;
  u32: Uint32Array;
  /** Index of the area's first byte in `u16` (byte offset / 2). */
  base16: number;
  /** Index of the area's first byte in `u32` (byte offset / 4), or -1 if not 4-aligned in the region. */
  base32: number;
}

export function areaViews(mem: GuestMemory, gpa: number, size: number, align: 2 | 4, what: string): AreaViews {
  const a = mem.area(gpa, size);
  const off = a.region.byteOffset + a.offset;
  // The region's views start at its byte offset (a multiple of 8), so alignment
  // inside the region is alignment in the underlying buffer too.
  if (a.offset % align !== 0 || off % align !== 0) {
    throw new RangeError(`${what} at 0x${gpa.toString(16)} is not ${align}-byte aligned inside its memory region`);
  }
  return {
    region: a.region,
    gpa,
    u16: a.region.u16,
    u32: a.region.u32,
    base16: a.offset >>> 1,
    base32: a.offset % 4 === 0 ? a.offset >>> 2 : -1,
  };
}

/**
 * What both halves of a split ring share: the three parts translated once, as DPDK's
 * translate_ring_addresses does (too short an area is refused here), and the field
 * positions inside the region views that every hot-path access indexes.
 */
export abstract class SplitRingParts {
  readonly size: number;
  protected readonly mask: number;
  protected readonly eventIdx: boolean;
  protected readonly inOrder: boolean;
  protected readonly indirectOk: boolean;

  protected readonly dU16: Uint16Array;
  protected readonly dU32: Uint32Array;
  protected readonly d16: number;
  protected readonly d32: number;
  protected readonly aU16: Uint16Array;
  protected readonly aFlags: number;
  protected readonly aIdx: number;
  protected readonly aRing: number;
  protected readonly aUsedEvent: number;
  protected readonly uU16: Uint16Array;
  protected readonly uU32: Uint32Array;
  protected readonly uFlags: number;
  protected readonly uIdx: number;
  /** Index in `uU32` of used.ring[0].id. */
  protected readonly uRing: number;
  protected readonly uAvailEvent: number;

  constructor(mem: GuestMemory, layout: SplitLayout, features: RingFeatures) {
    checkSplitSize(layout.size);
    const q = layout.size;
    this.size = q;
    this.mask = q - 1;
    this.eventIdx = features.eventIdx;
    this.inOrder = features.inOrder;
    this.indirectOk = features.indirect;
    if (layout.desc % 16 !== 0 || layout.avail % 2 !== 0 || layout.used % 4 !== 0) {
      throw new RangeError('split ring parts must be aligned 16 (desc), 2 (avail), 4 (used) (virtio 1.2 §2.7)');
    }
    const sizes = splitAreaSizes(q, features.eventIdx);
    const d = areaViews(mem, layout.desc, sizes.desc, 4, 'descriptor table');
    const a = areaViews(mem, layout.avail, sizes.avail, 2, 'avail ring');
    const u = areaViews(mem, layout.used, sizes.used, 4, 'used ring');
    this.dU16 = d.u16;
    this.dU32 = d.u32;
    this.d16 = d.base16;
    this.d32 = d.base32;
    this.aU16 = a.u16;
    this.aFlags = a.base16;
    this.aIdx = a.base16 + 1;
    this.aRing = a.base16 + 2;
    this.aUsedEvent = a.base16 + 2 + q;
    this.uU16 = u.u16;
    this.uU32 = u.u32;
    this.uFlags = u.base16;
    this.uIdx = u.base16 + 1;
    this.uRing = u.base32 + 1;
    this.uAvailEvent = u.base16 + 2 + 4 * q;
  }
}
