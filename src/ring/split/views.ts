import type { GuestMemory, MemoryRegion } from '../../memory/index.ts';

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
