import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GuestMemory, MemoryRegion } from '../src/memory/index.ts';
import { DescriptorChain, type RingFeatures } from '../src/ring/types.ts';
import { RingError, type RingErrorCode } from '../src/ring/errors.ts';
import { layoutPackedRing, PackedDevice } from '../src/ring/packed/index.ts';

// A hostile driver writes raw descriptor bytes. Every malformed chain must be refused
// with its typed RingError code, before the device moves, without writing anything,
// without reading outside guest memory (guest memory refuses such reads with a typed
// error of its own, and a DataView past a region's end would throw a RangeError; both
// would surface here as "not a RingError"), and the next pop must refuse it again.

const AVAIL = 0x80;
const USED = 0x8000;
const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;

const RING_GPA = 0x10000;
const DATA_GPA = 0x100000; // data region, followed by an adjacent second data region
const REGION = 0x10000;
const DATA2_GPA = DATA_GPA + REGION;
const GAP = 0x50000; // unmapped
const CANARY = 0xa5;
const PAD = 4096;

const ALL: RingFeatures = { indirect: true, eventIdx: false, inOrder: false };

interface Desc {
  addr: bigint | number;
  len: number;
  id: number;
  flags: number;
}

function rig(size = 4, features: RingFeatures = ALL, capacity = 64) {
  // Each region sits inside a larger buffer whose padding holds canary bytes.
  const specs = [RING_GPA, DATA_GPA, DATA2_GPA].map((gpa) => {
    const buffer = new SharedArrayBuffer(REGION + 2 * PAD);
    new Uint8Array(buffer).fill(CANARY);
    new Uint8Array(buffer, PAD, REGION).fill(0);
    return { gpa, size: REGION, buffer, offset: PAD };
  });
  const mem = new GuestMemory(specs);
  const layout = layoutPackedRing(RING_GPA, size);
  const device = new PackedDevice(mem, layout, features);
  const chain = new DescriptorChain(capacity);
  const reads: [number, number][] = [];
  const read = mem.read.bind(mem);
  mem.read = (gpa: number, dst: Uint8Array) => {
    reads.push([gpa, dst.length]);
    read(gpa, dst);
  };
  const setDesc = (slot: number, d: Desc) => writeDescAt(mem, layout.desc + 16 * slot, d);
  const ringBytes = () => {
    const b = new Uint8Array(16 * size + 8);
    mem.read(layout.desc, b);
    reads.pop();
    return b;
  };
  const canariesIntact = () =>
    specs.every((s) => {
      const all = new Uint8Array(s.buffer);
      return all.subarray(0, PAD).every((x) => x === CANARY) && all.subarray(PAD + REGION).every((x) => x === CANARY);
    });
  return { mem, layout, device, chain, setDesc, ringBytes, canariesIntact, reads };
}

function writeDescAt(mem: GuestMemory, gpa: number, d: Desc): void {
  mem.writeU64(gpa, BigInt(d.addr));
  mem.writeU32(gpa + 8, d.len);
  mem.writeU16(gpa + 12, d.id);
  mem.writeU16(gpa + 14, d.flags);
}

type Rig = ReturnType<typeof rig>;

/** pop must throw RingError(code) and leave the device, the ring and everything outside guest memory as they were. */
function expectRefused(r: Rig, code: RingErrorCode): void {
  const state = r.device.saveState();
  const bytes = r.ringBytes();
  for (let attempt = 0; attempt < 2; attempt++) {
    let err: unknown = null;
    try {
      r.device.pop(r.chain);
    } catch (e) {
      err = e;
    }
    expect(err, `attempt ${attempt}`).toBeInstanceOf(RingError);
    expect((err as RingError).code).toBe(code);
    expect(r.device.saveState()).toEqual(state);
    expect(r.ringBytes()).toEqual(bytes);
    expect(r.canariesIntact()).toBe(true);
  }
}

/** Pops `n` good single-descriptor buffers so the device stands at slot n. */
function advance(r: Rig, n: number): void {
  for (let i = 0; i < n; i++) {
    r.setDesc(i, { addr: DATA_GPA, len: 8, id: i, flags: AVAIL });
    expect(r.device.pop(r.chain)).toBe(true);
    r.device.push(r.chain.id, 0);
  }
  r.device.flush();
}

const TABLE = DATA_GPA + 0x8000;

interface Case {
  name: string;
  code: RingErrorCode;
  size?: number;
  features?: RingFeatures;
  capacity?: number;
  write(r: Rig): void;
}

const cases: Case[] = [
  {
    name: 'a NEXT chain longer than the ring (every slot says NEXT)',
    code: 'chain-too-long',
    write: (r) => [0, 1, 2, 3].forEach((i) => r.setDesc(i, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT })),
  },
  {
    name: 'a one-slot ring whose only descriptor says NEXT',
    code: 'chain-too-long',
    size: 1,
    write: (r) => r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT }),
  },
  {
    name: 'an indirect table longer than the ring',
    code: 'chain-too-long',
    write: (r) => {
      for (let i = 0; i < 5; i++) writeDescAt(r.mem, TABLE + 16 * i, { addr: DATA_GPA, len: 8, id: 0, flags: 0 });
      r.setDesc(0, { addr: TABLE, len: 5 * 16, id: 0, flags: AVAIL | INDIRECT });
    },
  },
  {
    name: 'more segments than the chain container holds',
    code: 'chain-too-long',
    capacity: 2,
    write: (r) => {
      r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT });
      r.setDesc(1, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT });
      r.setDesc(2, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL });
    },
  },
  {
    name: 'an INDIRECT entry inside an indirect table (nested)',
    code: 'nested-indirect',
    write: (r) => {
      writeDescAt(r.mem, TABLE, { addr: DATA_GPA, len: 8, id: 0, flags: 0 });
      writeDescAt(r.mem, TABLE + 16, { addr: TABLE, len: 32, id: 0, flags: INDIRECT });
      r.setDesc(0, { addr: TABLE, len: 32, id: 0, flags: AVAIL | INDIRECT });
    },
  },
  {
    name: 'INDIRECT together with NEXT',
    code: 'indirect-with-next',
    write: (r) => {
      writeDescAt(r.mem, TABLE, { addr: DATA_GPA, len: 8, id: 0, flags: 0 });
      r.setDesc(0, { addr: TABLE, len: 16, id: 0, flags: AVAIL | INDIRECT | NEXT });
      r.setDesc(1, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL });
    },
  },
  {
    name: 'INDIRECT on a later element of a NEXT chain',
    code: 'indirect-with-next',
    write: (r) => {
      writeDescAt(r.mem, TABLE, { addr: DATA_GPA, len: 8, id: 0, flags: 0 });
      r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT });
      r.setDesc(1, { addr: TABLE, len: 16, id: 0, flags: AVAIL | INDIRECT });
    },
  },
  ...[0, 8, 24].map(
    (len): Case => ({
      name: `an indirect table of length ${len}`,
      code: 'bad-indirect-len',
      write: (r) => r.setDesc(0, { addr: TABLE, len, id: 0, flags: AVAIL | INDIRECT }),
    }),
  ),
  {
    name: 'INDIRECT without VIRTIO_F_INDIRECT_DESC',
    code: 'indirect-not-negotiated',
    features: { ...ALL, indirect: false },
    write: (r) => {
      writeDescAt(r.mem, TABLE, { addr: DATA_GPA, len: 8, id: 0, flags: 0 });
      r.setDesc(0, { addr: TABLE, len: 16, id: 0, flags: AVAIL | INDIRECT });
    },
  },
  {
    name: 'a readable element after a writable one',
    code: 'readable-after-writable',
    write: (r) => {
      r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT | WRITE });
      r.setDesc(1, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL });
    },
  },
  {
    name: 'a readable entry after a writable one inside an indirect table',
    code: 'readable-after-writable',
    write: (r) => {
      writeDescAt(r.mem, TABLE, { addr: DATA_GPA, len: 8, id: 0, flags: WRITE });
      writeDescAt(r.mem, TABLE + 16, { addr: DATA_GPA, len: 8, id: 0, flags: 0 });
      r.setDesc(0, { addr: TABLE, len: 32, id: 0, flags: AVAIL | INDIRECT });
    },
  },
  ...(
    [
      ['in the unmapped gap', GAP, 16],
      ['running past the end of the last data region', DATA2_GPA + REGION - 8, 16],
      ['running from the ring region into the gap', RING_GPA + REGION - 8, 16],
      ['above 2^53', 0xffff_ffff_ffff_f000n, 0x100],
      ['at 2^64 - 1', 0xffff_ffff_ffff_ffffn, 2],
    ] as const
  ).map(
    ([where, addr, len]): Case => ({
      name: `a buffer ${where}`,
      code: 'bad-address',
      write: (r) => {
        r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT });
        r.setDesc(1, { addr, len, id: 0, flags: AVAIL | WRITE });
      },
    }),
  ),
  {
    name: 'an indirect table in unmapped memory',
    code: 'bad-address',
    write: (r) => r.setDesc(0, { addr: GAP, len: 32, id: 0, flags: AVAIL | INDIRECT }),
  },
  {
    name: 'an indirect table running past the end of guest memory',
    code: 'bad-address',
    write: (r) => r.setDesc(0, { addr: DATA2_GPA + REGION - 16, len: 32, id: 0, flags: AVAIL | INDIRECT }),
  },
  {
    name: 'an indirect table whose entry points outside guest memory',
    code: 'bad-address',
    write: (r) => {
      writeDescAt(r.mem, TABLE, { addr: GAP, len: 8, id: 0, flags: 0 });
      r.setDesc(0, { addr: TABLE, len: 16, id: 0, flags: AVAIL | INDIRECT });
    },
  },
  {
    name: 'buffer id equal to the queue size',
    code: 'bad-id',
    write: (r) => r.setDesc(0, { addr: DATA_GPA, len: 8, id: 4, flags: AVAIL }),
  },
  {
    name: 'buffer id 0xffff in the last element of a chain',
    code: 'bad-id',
    write: (r) => {
      r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT });
      r.setDesc(1, { addr: DATA_GPA, len: 8, id: 0xffff, flags: AVAIL });
    },
  },
  {
    name: 'NEXT into a slot that is still zero',
    code: 'partial-chain',
    write: (r) => r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT }),
  },
  {
    name: 'NEXT into a slot marked for the other wrap',
    code: 'partial-chain',
    write: (r) => {
      r.setDesc(0, { addr: DATA_GPA, len: 8, id: 0, flags: AVAIL | NEXT });
      r.setDesc(1, { addr: DATA_GPA, len: 8, id: 0, flags: USED });
    },
  },
];

describe('packed device against a hostile driver', () => {
  it.each(cases)('refuses $name with $code, moving nothing and touching nothing outside guest memory', (c) => {
    const r = rig(c.size ?? 4, c.features ?? ALL, c.capacity ?? 64);
    c.write(r);
    expectRefused(r, c.code);
    // The tables that are outside guest memory were refused before any copy was tried.
    for (const [gpa, len] of r.reads) expect(r.mem.isMapped(gpa, len)).toBe(true);
  });

  it('refuses a chain whose wrapped part still carries the previous lap\u2019s AVAIL bit', () => {
    const r = rig(3);
    advance(r, 2); // device at slot 2, lap 1
    r.setDesc(2, { addr: DATA_GPA, len: 8, id: 2, flags: AVAIL | NEXT });
    r.setDesc(0, { addr: DATA_GPA, len: 8, id: 2, flags: AVAIL }); // should be USED (wrap 0)
    expectRefused(r, 'partial-chain');
    r.setDesc(0, { addr: DATA_GPA, len: 8, id: 2, flags: USED });
    expect(r.device.pop(r.chain)).toBe(true);
    expect([r.chain.id, r.chain.ringDescriptors]).toEqual([2, 2]);
    expect(r.device.saveState()).toMatchObject({ lastAvailIdx: 1, availWrap: false });
  });

  it('refuses an id that is already in flight', () => {
    const r = rig(4);
    r.setDesc(0, { addr: DATA_GPA, len: 8, id: 1, flags: AVAIL });
    r.setDesc(1, { addr: DATA_GPA, len: 8, id: 1, flags: AVAIL });
    expect(r.device.pop(r.chain)).toBe(true);
    expectRefused(r, 'bad-id');
    r.device.push(1, 0); // once it is back, the same id is fine
    expect(r.device.pop(r.chain)).toBe(true);
  });

  it('refuses a chain of 2^32 bytes in total and accepts 2^32 - 1', () => {
    // 2 GiB of guest-physical space: 2048 regions of 1 MiB that alias one buffer.
    const MiB = 1 << 20;
    const buffer = new SharedArrayBuffer(MiB);
    const regions = Array.from({ length: 2048 }, (_, i) => new MemoryRegion({ gpa: i * MiB, size: MiB, buffer }));
    const mem = new GuestMemory(regions);
    const layout = layoutPackedRing(0, 4);
    const device = new PackedDevice(mem, layout, ALL);
    const chain = new DescriptorChain(8);
    writeDescAt(mem, 0, { addr: 0, len: 0x8000_0000, id: 0, flags: AVAIL | NEXT });
    writeDescAt(mem, 16, { addr: 0, len: 0x8000_0000, id: 0, flags: AVAIL | WRITE });
    const state = device.saveState();
    expect(() => device.pop(chain)).toThrow(expect.objectContaining({ name: 'RingError', code: 'too-long' }));
    expect(device.saveState()).toEqual(state);
    writeDescAt(mem, 16, { addr: 0, len: 0x7fff_ffff, id: 0, flags: AVAIL | WRITE });
    expect(device.pop(chain)).toBe(true);
    expect([chain.readableBytes, chain.writableBytes]).toEqual([0x8000_0000, 0x7fff_ffff]);
  });

  it('accepts buffers and tables that straddle two adjacent regions, and a zero-length element anywhere', () => {
    const r = rig(4);
    const table = DATA2_GPA - 16; // entry 0 in the first data region, entry 1 in the second
    writeDescAt(r.mem, table, { addr: DATA2_GPA - 4, len: 8, id: 0, flags: 0 });
    writeDescAt(r.mem, table + 16, { addr: DATA2_GPA, len: 8, id: 0, flags: WRITE });
    r.setDesc(0, { addr: table, len: 32, id: 1, flags: AVAIL | INDIRECT });
    r.setDesc(1, { addr: GAP, len: 0, id: 2, flags: AVAIL }); // touches no byte
    expect(r.device.pop(r.chain)).toBe(true);
    expect(r.chain.segments()).toEqual([
      { addr: DATA2_GPA - 4, len: 8, writable: false },
      { addr: DATA2_GPA, len: 8, writable: true },
    ]);
    expect(r.device.pop(r.chain)).toBe(true);
    expect(r.chain.segments()).toEqual([{ addr: GAP, len: 0, writable: false }]);
  });

  it('arbitrary ring and table bytes: pop either refuses with a RingError and moves nothing, or returns a chain inside guest memory', () => {
    const addrArb = fc.oneof(
      fc.constantFrom(DATA_GPA, DATA2_GPA - 8, DATA2_GPA + REGION - 4, GAP, RING_GPA + REGION - 2, 0, TABLE),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    );
    const lenArb = fc.oneof(fc.constantFrom(0, 8, 16, 32, 48, 0x10000, 0xffff_ffff), fc.nat());
    const flagsArb = fc.tuple(fc.nat(7), fc.boolean(), fc.boolean(), fc.nat(0xffff)).map(
      ([low, a, u, noise]) => (low | (a ? AVAIL : 0) | (u ? USED : 0) | (noise & 0x7f78)) & 0xffff,
    );
    const descArb = fc.record({ addr: addrArb, len: lenArb, id: fc.oneof(fc.nat(7), fc.nat(0xffff)), flags: flagsArb });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.array(descArb, { minLength: 6, maxLength: 6 }),
        fc.array(descArb, { minLength: 8, maxLength: 8 }),
        fc.record({ indirect: fc.boolean(), eventIdx: fc.boolean(), inOrder: fc.boolean() }),
        (size, ring, table, features) => {
          const r = rig(size, features, 16);
          ring.slice(0, size).forEach((d, i) => r.setDesc(i, d));
          table.forEach((d, i) => writeDescAt(r.mem, TABLE + 16 * i, d));
          for (let k = 0; k < size + 1; k++) {
            const state = r.device.saveState();
            let ok: boolean;
            try {
              ok = r.device.pop(r.chain);
            } catch (e) {
              expect(e).toBeInstanceOf(RingError);
              expect(r.device.saveState()).toEqual(state);
              break;
            }
            if (!ok) break;
            expect(r.chain.id).toBeLessThan(size);
            expect(r.chain.ringDescriptors).toBeLessThanOrEqual(size);
            for (const s of r.chain.segments()) expect(r.mem.isMapped(s.addr, s.len)).toBe(true);
            r.device.push(r.chain.id, 0);
            r.device.flush();
          }
          expect(r.canariesIntact()).toBe(true);
          for (const [gpa, len] of r.reads) expect(r.mem.isMapped(gpa, len)).toBe(true);
        },
      ),
      { numRuns: 400 },
    );
  });
});
