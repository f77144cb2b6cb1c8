import type { GuestMemory, MemoryRegion } from '../../memory/index.ts';
import { checkPackedLayout, PACKED_DESC_SIZE, PACKED_EVENT_SIZE, type PackedLayout } from './layout.ts';

/**
 * The three fixed areas of a packed ring, translated once (as DPDK's vring
 * translation does at SET_VRING_ADDR) into typed-array views plus element indices.
 * The areas may sit in different regions. Typed arrays are host-endian; GuestMemory
 * refuses to load on a big-endian host, so these read the little-endian ring fields.
 *
 * Descriptor i: u32 at desc32 + 4i (addr lo), +1 (addr hi), +2 (len);
 *               u16 at desc16 + 8i + 6 (id), + 7 (flags).
 * Event area:   u16 at ev16 (off_wrap), ev16 + 1 (flags).
 */
export interface PackedViews {
  readonly descRegion: MemoryRegion;
  readonly d16: Uint16Array;
  readonly d32: Uint32Array;
  readonly desc16: number;
  readonly desc32: number;
  readonly drv16: Uint16Array;
  readonly drvIdx: number;
  readonly dev16: Uint16Array;
  readonly devIdx: number;
}

export function translatePackedRing(mem: GuestMemory, layout: PackedLayout): PackedViews {
  checkPackedLayout(layout);
  const desc = mem.area(layout.desc, PACKED_DESC_SIZE * layout.size);
  const drv = mem.area(layout.driverEvent, PACKED_EVENT_SIZE);
  const dev = mem.area(layout.deviceEvent, PACKED_EVENT_SIZE);
  // Atomics need naturally aligned elements; the spec alignments give that as long as
  // the region itself starts on a 4-byte guest boundary, which real regions (pages) do.
  if (desc.offset % 4 !== 0 || drv.offset % 2 !== 0 || dev.offset % 2 !== 0) {
    throw new RangeError('packed ring areas are not naturally aligned inside their memory region');
  }
  return {
    descRegion: desc.region,
    d16: desc.region.u16,
    d32: desc.region.u32,
    desc16: desc.offset / 2,
    desc32: desc.offset / 4,
    drv16: drv.region.u16,
    drvIdx: drv.offset / 2,
    dev16: dev.region.u16,
    devIdx: dev.offset / 2,
  };
}
