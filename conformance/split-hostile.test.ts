import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GuestMemory } from '../src/memory/index.ts';
import { RingError, type RingErrorCode } from '../src/ring/errors.ts';
import { DescriptorChain, type RingFeatures } from '../src/ring/types.ts';
import { layoutSplitRing, SplitDevice, type SplitDeviceOptions } from '../src/ring/split/index.ts';

/*
 * A hostile driver writes raw ring bytes; the device must answer every malformed
 * chain with its typed RingError, read and write nothing outside guest memory, and
 * leave its state where it was. What happens next follows DPDK 22.11
 * (lib/vhost/virtio_net.c virtio_dev_tx_split): a chain that fill_vec_buf_split
 * rejects ends the burst without advancing last_avail_idx, so the same chain is
 * tried (and refused) again on every poll and the queue stalls there; chains before
 * it were consumed normally. Nothing of the bad chain is consumed, so a driver that
 * rewrites it makes the queue move again.
 *
 * Guest memory is one region that is a window into a larger buffer, with sentinel
 * bytes on both sides; every case checks the sentinels and that pop wrote nothing.
 */

const Q = 8;
const GUARD = 4096;
const MEM = 0x10000;
const DATA = 0x4000;
const TABLE = 0x8000;
const ALL: RingFeatures = { indirect: true, eventIdx: true, inOrder: false };
const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

interface Desc {
  addr: number | bigint;
  len: number;
  flags: number;
  next?: number;
}

class Hostile {
  readonly buffer = new SharedArrayBuffer(GUARD + MEM + GUARD);
  readonly raw = new DataView(this.buffer);
  readonly mem: GuestMemory;
  readonly layout = layoutSplitRing(0, Q);
  readonly device: SplitDevice;
  readonly chain: DescriptorChain;
  private avail = 0;

  constructor(features: RingFeatures = ALL, opts?: SplitDeviceOptions, chainCapacity = Q, extraRegions: { gpa: number; size: number }[] = []) {
    new Uint8Array(this.buffer).fill(0xa5);
    new Uint8Array(this.buffer, GUARD, MEM).fill(0);
    this.mem = new GuestMemory([{ gpa: 0, size: MEM, buffer: this.buffer, offset: GUARD }, ...extraRegions]);
    this.device = new SplitDevice(this.mem, this.layout, features, opts);
    this.chain = new DescriptorChain(chainCapacity);
  }

  private at(gpa: number): number {
    return GUARD + gpa;
  }

  desc(i: number, d: Desc, table?: number): void {
    const base = table !== undefined ? table + 16 * i : this.layout.desc + 16 * i;
    this.raw.setBigUint64(this.at(base), BigInt(d.addr), true);
    this.raw.setUint32(this.at(base + 8), d.len >>> 0, true);
    this.raw.setUint16(this.at(base + 12), d.flags, true);
    this.raw.setUint16(this.at(base + 14), d.next ?? 0, true);
  }

  /** Puts `head` in the next avail slot and publishes it. */
  post(head: number): void {
    this.raw.setUint16(this.at(this.layout.avail + 4 + 2 * (this.avail % Q)), head, true);
    this.avail = (this.avail + 1) & 0xffff;
    this.raw.setUint16(this.at(this.layout.avail + 2), this.avail, true);
  }

  setAvailIdx(v: number): void {
    this.avail = v & 0xffff;
    this.raw.setUint16(this.at(this.layout.avail + 2), this.avail, true);
  }

  snapshot(): Uint8Array {
    return new Uint8Array(this.buffer).slice();
  }

  sentinelsIntact(): boolean {
    const b = new Uint8Array(this.buffer);
    for (let i = 0; i < GUARD; i++) if (b[i] !== 0xa5 || b[GUARD + MEM + i] !== 0xa5) return false;
    return true;
  }

  /**
   * pop must throw RingError `code`, write nothing, keep the device state, and do
   * the same again on a retry (the queue stalls on the bad chain).
   */
  expectRefused(code: RingErrorCode): void {
    const before = this.snapshot();
    const state = this.device.saveState();
    for (let attempt = 0; attempt < 2; attempt++) {
      let err: unknown;
      try {
        this.device.pop(this.chain);
      } catch (e) {
        err = e;
      }
      expect(err, `expected RingError ${code}`).toBeInstanceOf(RingError);
      expect((err as RingError).code).toBe(code);
      expect(this.device.saveState()).toEqual(state);
      expect(sameBytes(this.snapshot(), before), 'pop wrote to memory').toBe(true);
    }
    expect(this.sentinelsIntact()).toBe(true);
  }
}

/** Each case builds one malformed chain at head 0 (after a good chain at head 7) and names the error. */
interface Case {
  name: string;
  code: RingErrorCode;
  features?: RingFeatures;
  opts?: SplitDeviceOptions;
  capacity?: number;
  build: (h: Hostile) => void;
}

const good = { addr: DATA, len: 64, flags: 0 };

const CASES: Case[] = [
  { name: 'two descriptors pointing at each other', code: 'desc-loop', build: (h) => (h.desc(0, { ...good, flags: F_NEXT, next: 1 }), h.desc(1, { ...good, flags: F_NEXT, next: 0 })) },
  { name: 'a descriptor pointing at itself', code: 'desc-loop', build: (h) => h.desc(0, { ...good, flags: F_NEXT, next: 0 }) },
  {
    name: 'a loop back into the middle of the chain',
    code: 'desc-loop',
    build: (h) => (h.desc(0, { ...good, flags: F_NEXT, next: 3 }), h.desc(3, { ...good, flags: F_NEXT, next: 5 }), h.desc(5, { ...good, flags: F_NEXT, next: 3 })),
  },
  {
    name: 'a loop inside an indirect table',
    code: 'desc-loop',
    build: (h) => {
      h.desc(0, { addr: TABLE, len: 48, flags: F_INDIRECT });
      h.desc(0, { ...good, flags: F_NEXT, next: 2 }, TABLE);
      h.desc(2, { ...good, flags: F_NEXT, next: 0 }, TABLE);
    },
  },
  {
    name: 'a chain longer than the device limit',
    code: 'chain-too-long',
    opts: { maxChain: 3 },
    build: (h) => {
      for (let i = 0; i < 4; i++) h.desc(i, { ...good, flags: i < 3 ? F_NEXT : 0, next: i + 1 });
    },
  },
  {
    name: 'a chain longer than the container the caller passed',
    code: 'chain-too-long',
    capacity: 2,
    build: (h) => {
      for (let i = 0; i < 3; i++) h.desc(i, { ...good, flags: i < 2 ? F_NEXT : 0, next: i + 1 });
    },
  },
  { name: 'an indirect table of more descriptors than the queue size', code: 'chain-too-long', build: (h) => h.desc(0, { addr: TABLE, len: 16 * (Q + 1), flags: F_INDIRECT }) },
  {
    name: 'direct descriptors plus an indirect table longer than the limit',
    code: 'chain-too-long',
    opts: { maxChain: 4 },
    build: (h) => {
      h.desc(0, { ...good, flags: F_NEXT, next: 1 });
      h.desc(1, { addr: TABLE, len: 64, flags: F_INDIRECT });
      for (let j = 0; j < 4; j++) h.desc(j, { ...good, flags: j < 3 ? F_NEXT : 0, next: j + 1 }, TABLE);
    },
  },
  { name: 'next equal to the queue size', code: 'bad-next', build: (h) => h.desc(0, { ...good, flags: F_NEXT, next: Q }) },
  { name: 'next 0xffff', code: 'bad-next', build: (h) => h.desc(0, { ...good, flags: F_NEXT, next: 0xffff }) },
  {
    name: 'next outside an indirect table',
    code: 'bad-next',
    build: (h) => (h.desc(0, { addr: TABLE, len: 32, flags: F_INDIRECT }), h.desc(0, { ...good, flags: F_NEXT, next: 2 }, TABLE)),
  },
  {
    name: 'an indirect table inside an indirect table',
    code: 'nested-indirect',
    build: (h) => (h.desc(0, { addr: TABLE, len: 32, flags: F_INDIRECT }), h.desc(0, { ...good, flags: F_NEXT, next: 1 }, TABLE), h.desc(1, { addr: TABLE, len: 32, flags: F_INDIRECT }, TABLE)),
  },
  { name: 'INDIRECT and NEXT on one descriptor', code: 'indirect-with-next', build: (h) => (h.desc(0, { addr: TABLE, len: 32, flags: F_INDIRECT | F_NEXT, next: 1 }), h.desc(1, good)) },
  { name: 'an indirect table of length 0', code: 'bad-indirect-len', build: (h) => h.desc(0, { addr: TABLE, len: 0, flags: F_INDIRECT }) },
  { name: 'an indirect table of 24 bytes', code: 'bad-indirect-len', build: (h) => h.desc(0, { addr: TABLE, len: 24, flags: F_INDIRECT }) },
  { name: 'an indirect table of 8 bytes', code: 'bad-indirect-len', build: (h) => h.desc(0, { addr: TABLE, len: 8, flags: F_INDIRECT }) },
  {
    name: 'INDIRECT without VIRTIO_F_INDIRECT_DESC',
    code: 'indirect-not-negotiated',
    features: { ...ALL, indirect: false },
    build: (h) => (h.desc(0, { addr: TABLE, len: 16, flags: F_INDIRECT }), h.desc(0, good, TABLE)),
  },
  { name: 'readable after writable', code: 'readable-after-writable', build: (h) => (h.desc(0, { ...good, flags: F_WRITE | F_NEXT, next: 1 }), h.desc(1, good)) },
  {
    name: 'a readable indirect entry after a writable direct descriptor',
    code: 'readable-after-writable',
    build: (h) => (h.desc(0, { ...good, flags: F_WRITE | F_NEXT, next: 1 }), h.desc(1, { addr: TABLE, len: 16, flags: F_INDIRECT }), h.desc(0, good, TABLE)),
  },
  {
    name: 'readable after writable inside an indirect table',
    code: 'readable-after-writable',
    build: (h) => (h.desc(0, { addr: TABLE, len: 32, flags: F_INDIRECT }), h.desc(0, { ...good, flags: F_WRITE | F_NEXT, next: 1 }, TABLE), h.desc(1, good, TABLE)),
  },
  { name: 'a buffer starting past the end of memory', code: 'bad-address', build: (h) => h.desc(0, { addr: MEM, len: 1, flags: 0 }) },
  { name: 'a buffer running past the end of memory', code: 'bad-address', build: (h) => h.desc(0, { addr: MEM - 16, len: 17, flags: F_WRITE }) },
  { name: 'a buffer at a 64-bit address', code: 'bad-address', build: (h) => h.desc(0, { addr: 0x8000_0000_0000_0000n, len: 64, flags: 0 }) },
  { name: 'a buffer just below 2^64 wrapping to 0', code: 'bad-address', build: (h) => h.desc(0, { addr: 0xffff_ffff_ffff_fff0n, len: 32, flags: 0 }) },
  { name: 'a second descriptor outside memory', code: 'bad-address', build: (h) => (h.desc(0, { ...good, flags: F_NEXT, next: 1 }), h.desc(1, { addr: 0x1_0000_0000, len: 1, flags: F_WRITE })) },
  { name: 'an indirect table past the end of memory', code: 'bad-address', build: (h) => h.desc(0, { addr: MEM, len: 16, flags: F_INDIRECT }) },
  { name: 'an indirect table running past the end of memory', code: 'bad-address', build: (h) => h.desc(0, { addr: MEM - 16, len: 32, flags: F_INDIRECT }) },
  { name: 'an indirect entry outside memory', code: 'bad-address', build: (h) => (h.desc(0, { addr: TABLE, len: 16, flags: F_INDIRECT }), h.desc(0, { addr: MEM + 4096, len: 4, flags: 0 }, TABLE)) },
];

describe('split device against a hostile driver', () => {
  describe.each(CASES)('$name → $code', (c) => {
    it('is refused with its code, consuming and writing nothing, and again on retry', () => {
      const h = new Hostile(c.features ?? ALL, c.opts, c.capacity ?? Q);
      h.desc(7, { addr: DATA + 0x100, len: 32, flags: 0 });
      h.post(7);
      c.build(h);
      h.post(0);
      expect(h.device.pop(h.chain)).toBe(true); // the good chain before it is unaffected
      expect(h.chain.id).toBe(7);
      h.expectRefused(c.code);
      expect(h.device.saveState().lastAvailIdx).toBe(1);
      expect(h.device.availableCount()).toBe(1);
      // The driver rewrites head 0 as a plain buffer: the queue moves again.
      h.desc(0, { addr: DATA, len: 16, flags: 0 });
      expect(h.device.pop(h.chain)).toBe(true);
      expect(h.chain.segments()).toEqual([{ addr: DATA, len: 16, writable: false }]);
      expect(h.sentinelsIntact()).toBe(true);
    });
  });

  it('refuses a head outside the queue in the avail ring (bad-head)', () => {
    for (const head of [Q, 0xffff]) {
      const h = new Hostile();
      h.post(head);
      h.expectRefused('bad-head');
    }
  });

  it('refuses avail.idx more than the queue size ahead (avail-overrun), also from availableCount', () => {
    for (const idx of [Q + 1, 0x8000, 0xffff]) {
      const h = new Hostile();
      h.desc(0, good);
      h.setAvailIdx(idx);
      h.expectRefused('avail-overrun');
      expect(() => h.device.availableCount()).toThrow(expect.objectContaining({ code: 'avail-overrun' }));
      h.setAvailIdx(Q); // exactly a full ring is fine
      expect(h.device.availableCount()).toBe(Q);
    }
  });

  it('refuses a chain totalling 2^32 bytes or more (too-long)', () => {
    // Two 2 GiB descriptors, both inside a lazily-allocated 2 GiB region, sum to 2^32.
    const big = 0x1_0000_0000;
    const h = new Hostile(ALL, undefined, Q, [{ gpa: big, size: 0x8000_0000 }]);
    h.desc(0, { addr: big, len: 0x8000_0000, flags: F_NEXT, next: 1 });
    h.desc(1, { addr: big, len: 0x8000_0000, flags: F_WRITE });
    h.post(0);
    h.expectRefused('too-long');
    // One byte less is a legal chain.
    h.desc(1, { addr: big, len: 0x7fff_ffff, flags: F_WRITE });
    expect(h.device.pop(h.chain)).toBe(true);
    expect(h.chain.readableBytes + h.chain.writableBytes).toBe(2 ** 32 - 1);
  });

  it('refuses a buffer in the gap between two regions, and accepts one in the second region', () => {
    const h = new Hostile(ALL, undefined, Q, [{ gpa: 0x20000, size: 0x1000 }]);
    h.desc(0, { addr: 0x1f000, len: 0x1000, flags: 0 });
    h.post(0);
    h.expectRefused('bad-address');
    h.desc(0, { addr: 0x20000, len: 0x1000, flags: 0 });
    expect(h.device.pop(h.chain)).toBe(true);
  });

  it('random descriptor bytes: pop returns a well-formed chain inside guest memory or a RingError, and writes nothing', () => {
    const addrArb = fc.oneof(
      fc.integer({ min: DATA, max: DATA + 0x100 }),
      fc.integer({ min: MEM - 64, max: MEM + 64 }),
      fc.constantFrom(TABLE, TABLE + 16, 0, MEM),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    );
    const descArb = fc.record({
      addr: addrArb,
      len: fc.oneof(fc.integer({ min: 0, max: 128 }), fc.constantFrom(16, 32, 48, 16 * Q, 16 * (Q + 1)), fc.nat({ max: 0xffffffff })),
      flags: fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff })),
      next: fc.oneof(fc.integer({ min: 0, max: Q + 1 }), fc.integer({ min: 0, max: 0xffff })),
    });
    fc.assert(
      fc.property(
        fc.array(descArb, { minLength: Q, maxLength: Q }),
        fc.array(descArb, { minLength: Q, maxLength: Q }),
        fc.array(fc.integer({ min: 0, max: Q + 2 }), { minLength: 1, maxLength: Q }),
        fc.boolean(),
        (table, indirect, heads, indirectOk) => {
          const h = new Hostile({ ...ALL, indirect: indirectOk });
          table.forEach((d, i) => h.desc(i, d));
          indirect.forEach((d, i) => h.desc(i, d, TABLE));
          for (const x of heads) h.post(x);
          for (let k = 0; k < heads.length; k++) {
            const before = h.snapshot();
            const state = h.device.saveState();
            try {
              if (!h.device.pop(h.chain)) break;
            } catch (e) {
              expect(e).toBeInstanceOf(RingError);
              expect(h.device.saveState()).toEqual(state);
              expect(sameBytes(h.snapshot(), before), 'pop wrote to memory').toBe(true);
              break;
            }
            expect(sameBytes(h.snapshot(), before), 'pop wrote to memory').toBe(true);
            const segs = h.chain.segments();
            expect(segs.length).toBeGreaterThan(0);
            expect(segs.length).toBeLessThanOrEqual(Q);
            let sawWritable = false;
            for (const s of segs) {
              expect(h.mem.isMapped(s.addr, s.len)).toBe(true);
              if (s.writable) sawWritable = true;
              else expect(sawWritable).toBe(false);
            }
            expect(h.chain.readableBytes + h.chain.writableBytes).toBeLessThan(2 ** 32);
            h.device.push(h.chain.id, 0);
            h.device.flush();
          }
          expect(h.sentinelsIntact()).toBe(true);
        },
      ),
      { numRuns: Number(process.env.VHOSTSIM_FC_RUNS ?? 300) },
    );
  });
});
