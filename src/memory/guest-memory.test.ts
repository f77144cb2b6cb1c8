import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GuestMemory, GuestMemoryError, DirtyLog, MemoryRegion, PacketBuffer } from './index.ts';

/** Two regions laid out like QEMU 7.2's 128 MiB guest (fact sheet §9), scaled down. */
function twoRegions(): GuestMemory {
  return new GuestMemory([
    { gpa: 0x0, size: 0xa000, uva: 0x7f00_0000_0000 },
    { gpa: 0xc000, size: 0x4000, uva: 0x7f00_0000_c000 },
  ]);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof GuestMemoryError) return e.code;
    throw e;
  }
  return undefined;
}

describe('GuestMemory', () => {
  it('reads back little-endian scalars at their exact byte offsets', () => {
    const m = GuestMemory.create(64, 0x1000);
    m.writeU16(0x1000, 0x1234);
    m.writeU32(0x1004, 0xdeadbeef);
    m.writeU64(0x1008, 0x0102030405060708n);
    const raw = new Uint8Array(m.regions[0].buffer);
    expect([...raw.subarray(0, 2)]).toEqual([0x34, 0x12]);
    expect([...raw.subarray(4, 8)]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    expect([...raw.subarray(8, 16)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(m.readU16(0x1000)).toBe(0x1234);
    expect(m.readU32(0x1004)).toBe(0xdeadbeef);
    expect(m.readU64(0x1008)).toBe(0x0102030405060708);
    expect(m.readU64Big(0x1008)).toBe(0x0102030405060708n);
  });

  it('honours the region offset inside its buffer (mmap_offset)', () => {
    const buf = new SharedArrayBuffer(256);
    const m = new GuestMemory([{ gpa: 0x4000, size: 128, buffer: buf, offset: 64 }]);
    m.writeU8(0x4000, 0xab);
    expect(new Uint8Array(buf)[64]).toBe(0xab);
    expect(() => new GuestMemory([{ gpa: 0, size: 256, buffer: buf, offset: 8 }])).toThrow(GuestMemoryError);
  });

  it('refuses unmapped and out-of-range accesses with typed errors', () => {
    const m = twoRegions();
    expect(codeOf(() => m.readU8(0xa000))).toBe('unmapped'); // the hole between regions
    expect(codeOf(() => m.readU32(0x9ffe))).toBe('out-of-range'); // straddles into the hole
    expect(codeOf(() => m.readU64(0x10000))).toBe('unmapped'); // past the end
    expect(codeOf(() => m.readU16(-2))).toBe('unmapped');
    expect(codeOf(() => m.readU16(2 ** 60))).toBe('unmapped');
    expect(codeOf(() => m.read(0xbfff, new Uint8Array(4)))).toBe('unmapped');
    expect(codeOf(() => m.read(0x9fff, new Uint8Array(4)))).toBe('out-of-range');
  });

  it('writes nothing when any part of a range is unmapped', () => {
    const m = twoRegions();
    const before = new Uint8Array(m.regions[0].bytes);
    expect(codeOf(() => m.write(0x9ff0, new Uint8Array(64).fill(0xee)))).toBe('out-of-range');
    expect(m.regions[0].bytes).toEqual(before);
  });

  it('copies byte ranges that straddle adjacent regions', () => {
    const m = new GuestMemory([
      { gpa: 0, size: 16 },
      { gpa: 16, size: 16 },
    ]);
    const src = Uint8Array.from({ length: 20 }, (_, i) => i + 1);
    m.write(6, src);
    const dst = new Uint8Array(20);
    m.read(6, dst);
    expect(dst).toEqual(src);
    expect(m.regions[1].bytes[9]).toBe(20);
    expect(m.isMapped(0, 32)).toBe(true);
    expect(m.isMapped(0, 33)).toBe(false);
  });

  it('translates front-end virtual addresses through the matching region', () => {
    const m = twoRegions();
    expect(m.uvaToGpa(0x7f00_0000_c010, 16)).toBe(0xc010);
    expect(m.gpaToUva(0x10)).toBe(0x7f00_0000_0010);
    const err = (() => {
      try {
        m.uvaToGpa(0x7f00_0000_fff0, 32);
      } catch (e) {
        return e as GuestMemoryError;
      }
    })();
    expect(err?.code).toBe('out-of-range');
    expect(err?.space).toBe('uva');
    expect(codeOf(() => m.uvaToGpa(0x1000, 1))).toBe('unmapped');
  });

  it('rejects overlapping or unusable region tables', () => {
    expect(codeOf(() => new GuestMemory([{ gpa: 0, size: 32 }, { gpa: 16, size: 32, uva: 0x1000 }]))).toBe('bad-region');
    expect(codeOf(() => new GuestMemory([{ gpa: 0, size: 32, uva: 0 }, { gpa: 64, size: 32, uva: 16 }]))).toBe('bad-region');
    expect(codeOf(() => new GuestMemory([{ gpa: 0, size: 0 }]))).toBe('bad-region');
    expect(codeOf(() => new GuestMemory([{ gpa: 2 ** 53 - 8, size: 64 }]))).toBe('bad-region');
    expect(codeOf(() => new GuestMemory([]))).toBe('bad-region');
  });

  it('gives a ring area as a window into a single region', () => {
    const m = twoRegions();
    const a = m.area(0xc100, 0x100);
    expect(a.region.gpa).toBe(0xc000);
    expect(a.offset).toBe(0x100);
    expect(codeOf(() => m.area(0x9f00, 0x200))).toBe('out-of-range');
  });

  it('publishes 16-bit indices with Atomics on the shared buffer', () => {
    const m = GuestMemory.create(64);
    m.storeU16Release(6, 0xbeef);
    expect(Atomics.load(m.regions[0].u16, 3)).toBe(0xbeef);
    expect(m.loadU16Acquire(6)).toBe(0xbeef);
  });

  it('marks every page a write touches in the dirty log, and none other', () => {
    const m = GuestMemory.create(5 * 4096);
    const log = new DirtyLog(new SharedArrayBuffer(8));
    m.setDirtyLog(log);
    m.write(4096 - 2, new Uint8Array(4)); // pages 0 and 1
    m.writeU32(4 * 4096, 1); // page 4
    expect(log.dirtyPages()).toEqual([0, 1, 4]);
    log.clear();
    m.setDirtyLog(null);
    m.writeU8(3 * 4096, 1);
    expect(log.dirtyPages()).toEqual([]);
  });

  it('never lets an access escape guest memory, whatever the address and length', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: -100, max: 0x11000 }), fc.double({ noNaN: false })),
        fc.integer({ min: 0, max: 0x2000 }),
        (addr, len) => {
          const m = twoRegions();
          const dst = new Uint8Array(len);
          try {
            m.read(addr, dst);
          } catch (e) {
            expect(e).toBeInstanceOf(GuestMemoryError);
            return;
          }
          // success only when the whole range lies inside one of the two regions
          const inside = m.regions.some((r: MemoryRegion) => addr >= r.gpa && addr + len <= r.gpaEnd);
          expect(inside || len === 0).toBe(true);
        },
      ),
    );
  });

  it('copies packets out and in byte-exactly, aligned or not, across regions, and logs what it writes', () => {
    const m = new GuestMemory([
      { gpa: 0, size: 256 },
      { gpa: 256, size: 256 },
    ]);
    const pattern = Uint8Array.from({ length: 512 }, (_, i) => (i * 7 + 3) & 0xff);
    m.write(0, pattern);
    for (const [gpa, off, len] of [
      [64, 0, 64], // aligned: the word path
      [67, 0, 61], // unaligned source
      [64, 3, 29], // unaligned destination
      [200, 8, 120], // straddles the region boundary
      [8, 0, 13], // word path with a byte tail
    ]) {
      const pkt = new PacketBuffer(256);
      m.copyOut(gpa, pkt, off, len);
      expect([...pkt.bytes.subarray(off, off + len)]).toEqual([...pattern.subarray(gpa, gpa + len)]);
      expect(pkt.bytes.subarray(0, off).every((b) => b === 0)).toBe(true);
      expect(pkt.bytes[off + len] ?? 0).toBe(0);
    }
    const log = new DirtyLog(new SharedArrayBuffer(8));
    m.setDirtyLog(log);
    const src = new PacketBuffer(64);
    src.bytes.set(pattern.subarray(100, 164));
    m.copyIn(320, src, 0, 64);
    const back = new Uint8Array(64);
    m.read(320, back);
    expect(back).toEqual(pattern.subarray(100, 164));
    expect(log.isDirty(320)).toBe(true);
  });

  it('refuses a packet copy that leaves guest memory and changes nothing', () => {
    const m = GuestMemory.create(128);
    const pkt = new PacketBuffer(64);
    pkt.bytes.fill(9);
    expect(codeOf(() => m.copyOut(96, pkt, 0, 64))).toBe('out-of-range');
    expect(pkt.bytes.every((b) => b === 9)).toBe(true);
    expect(codeOf(() => m.copyIn(96, pkt, 0, 64))).toBe('out-of-range');
    expect(m.regions[0].bytes.every((b) => b === 0)).toBe(true);
  });
});
