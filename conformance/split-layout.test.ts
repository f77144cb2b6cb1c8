import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../src/memory/index.ts';
import { DescriptorChain, type RingFeatures, type UsedBuffer } from '../src/ring/types.ts';
import { layoutSplitRing, SplitDevice, SplitDriver } from '../src/ring/split/index.ts';

/*
 * Byte layout of the split ring against an oracle written here from the spec's
 * structures (virtio 1.2 §2.7: virtq_desc, virtq_avail, virtq_used), not from the
 * production offsets: fields are written with a raw little-endian DataView and the
 * ring must read them, and the ring's writes are read back the same way.
 */

interface Case {
  size: number;
  /** GPA of the region holding ring and data. */
  regionGpa: number;
  /** Ring base offset inside the region. */
  at: number;
  legacyAlign?: number;
}

const CASES: Case[] = [
  { size: 1, regionGpa: 0, at: 0 },
  { size: 2, regionGpa: 0, at: 0x30 },
  { size: 8, regionGpa: 0x1_0000_0000, at: 0x1000 }, // GPAs above 4 GiB: high address words matter
  { size: 256, regionGpa: 0x8000_0000, at: 0x10 },
  { size: 4, regionGpa: 0, at: 0x2000, legacyAlign: 4096 },
  { size: 256, regionGpa: 0x40_0000, at: 0, legacyAlign: 4096 },
  { size: 32768, regionGpa: 0, at: 0 },
];

const ALL: RingFeatures = { indirect: true, eventIdx: true, inOrder: false };
const PLAIN: RingFeatures = { indirect: true, eventIdx: false, inOrder: false };

/** The oracle: part addresses and field offsets from the spec's structures. */
function oracle(c: Case) {
  const q = c.size;
  const desc = c.regionGpa + c.at;
  const avail = desc + 16 * q; // struct virtq_desc desc[Q], 16 bytes each
  const availEnd = avail + 2 + 2 + 2 * q + 2; // flags, idx, ring[Q], used_event
  const align = c.legacyAlign ?? 4; // used ring alignment 4, or Queue Align (legacy)
  const used = Math.ceil(availEnd / align) * align;
  const end = used + 2 + 2 + 8 * q + 2; // flags, idx, ring[Q] {le32 id, le32 len}, avail_event
  return {
    desc,
    avail,
    used,
    end,
    descAddr: (i: number) => desc + 16 * i,
    descLen: (i: number) => desc + 16 * i + 8,
    descFlags: (i: number) => desc + 16 * i + 12,
    descNext: (i: number) => desc + 16 * i + 14,
    availFlags: avail,
    availIdx: avail + 2,
    availRing: (i: number) => avail + 4 + 2 * i,
    usedEvent: avail + 4 + 2 * q,
    usedFlags: used,
    usedIdx: used + 2,
    usedId: (i: number) => used + 4 + 8 * i,
    usedLen: (i: number) => used + 4 + 8 * i + 4,
    availEvent: used + 4 + 8 * q,
  };
}

function build(c: Case, features: RingFeatures) {
  const o = oracle(c);
  const dataOff = Math.ceil((o.end - c.regionGpa) / 4096) * 4096;
  const indirectOff = dataOff + 0x10000;
  const regionSize = indirectOff + c.size * 4 * 16 + 4096;
  const mem = new GuestMemory([{ gpa: c.regionGpa, size: regionSize }]);
  const raw = new DataView(mem.regions[0].buffer, mem.regions[0].byteOffset, regionSize);
  const off = (gpa: number) => gpa - c.regionGpa;
  const r16 = (gpa: number) => raw.getUint16(off(gpa), true);
  const r32 = (gpa: number) => raw.getUint32(off(gpa), true);
  const r64 = (gpa: number) => Number(raw.getBigUint64(off(gpa), true));
  const w16 = (gpa: number, v: number) => raw.setUint16(off(gpa), v, true);
  const w32 = (gpa: number, v: number) => raw.setUint32(off(gpa), v, true);
  const w64 = (gpa: number, v: number) => raw.setBigUint64(off(gpa), BigInt(v), true);
  const layout = layoutSplitRing(c.regionGpa + c.at, c.size, c.legacyAlign ? { legacyAlign: c.legacyAlign } : undefined);
  return { o, mem, layout, data: c.regionGpa + dataOff, indirect: c.regionGpa + indirectOff, r16, r32, r64, w16, w32, w64 };
}

describe.each(CASES)('split ring bytes, Q=$size at region 0x$regionGpa+$at legacyAlign=$legacyAlign', (c) => {
  it('places the three parts where the spec structures put them', () => {
    const { o, layout } = build(c, ALL);
    expect(layout).toEqual({ size: c.size, desc: o.desc, avail: o.avail, used: o.used });
  });

  it('driver writes descriptors, avail ring, avail.idx, avail.flags and used_event at the spec offsets', () => {
    for (const features of [ALL, PLAIN]) {
      const b = build(c, features);
      const { o } = b;
      SplitDriver.init(b.mem, b.layout);
      const drv = new SplitDriver<number>(b.mem, b.layout, features, { indirectArea: { gpa: b.indirect, perBuffer: 4 } });
      const n = Math.min(c.size, 3);
      const segs = Array.from({ length: n }, (_, i) => ({ addr: b.data + 0x100 * i + 0x1234_0000_0000 * (i === 0 ? 1 : 0), len: 0x10 + i, writable: i === n - 1 && n > 1 }));
      const head = drv.add(segs, 1);
      expect(head).toBe(0);
      for (let i = 0; i < n; i++) {
        expect(b.r64(o.descAddr(i))).toBe(segs[i].addr);
        expect(b.r32(o.descLen(i))).toBe(segs[i].len);
        expect(b.r16(o.descFlags(i))).toBe((i < n - 1 ? 1 : 0) | (segs[i].writable ? 2 : 0));
        expect(b.r16(o.descNext(i))).toBe(i < n - 1 ? i + 1 : 0);
      }
      expect(b.r16(o.availRing(0))).toBe(0);
      expect(b.r16(o.availIdx)).toBe(0);
      drv.publish();
      expect(b.r16(o.availIdx)).toBe(1);
      if (c.size > n) {
        const h2 = drv.add([{ addr: b.data, len: 8, writable: false }, { addr: b.data + 8, len: 8, writable: true }], 2, { indirect: true });
        expect(h2).toBe(n);
        const table = b.indirect + h2 * 4 * 16;
        expect([b.r64(o.descAddr(h2)), b.r32(o.descLen(h2)), b.r16(o.descFlags(h2))]).toEqual([table, 32, 4]);
        expect([b.r64(table), b.r32(table + 8), b.r16(table + 12), b.r16(table + 14)]).toEqual([b.data, 8, 1, 1]);
        expect([b.r64(table + 16), b.r32(table + 24), b.r16(table + 28)]).toEqual([b.data + 8, 8, 2]);
        expect(b.r16(o.availRing(1 % c.size))).toBe(h2);
      }
      drv.disableNotifications();
      if (features.eventIdx) {
        expect(b.r16(o.availFlags)).toBe(0);
        drv.setUsedEvent(0xbeef);
        expect(b.r16(o.usedEvent)).toBe(0xbeef);
      } else {
        expect(b.r16(o.availFlags)).toBe(1);
        drv.enableNotifications();
        expect(b.r16(o.availFlags)).toBe(0);
      }
    }
  });

  it('driver reads used elements, used.idx, used.flags and avail_event at the spec offsets', () => {
    for (const features of [ALL, PLAIN]) {
      const b = build(c, features);
      const { o } = b;
      SplitDriver.init(b.mem, b.layout);
      const drv = new SplitDriver<string>(b.mem, b.layout, features);
      const q = c.size;
      for (let i = 0; i < q; i++) drv.add([{ addr: b.data, len: 100, writable: true }], `t${i}`);
      if (features.eventIdx) b.w16(o.availEvent, q === 1 ? 0 : 1);
      else b.w16(o.usedFlags, 1);
      // EVENT_IDX: 0 -> q covers avail_event (0 or 1); NO_NOTIFY: no kick.
      expect(drv.publish()).toBe(features.eventIdx);
      // Complete the last buffer first, then the rest, with raw writes.
      const order = [q - 1, ...Array.from({ length: q - 1 }, (_, i) => i)];
      order.forEach((id, k) => {
        b.w32(o.usedId(k), id);
        b.w32(o.usedLen(k), 7 + k);
      });
      b.w16(o.usedIdx, q);
      const u: UsedBuffer<string> = { token: '', len: 0, id: 0 };
      const got: [number, number, string][] = [];
      while (drv.reclaim(u)) got.push([u.id, u.len, u.token]);
      expect(got).toEqual(order.map((id, k) => [id, 7 + k, `t${id}`]));
    }
  });

  it('device reads descriptors, avail ring, avail.idx, avail.flags and used_event at the spec offsets', () => {
    for (const features of [ALL, PLAIN]) {
      const b = build(c, features);
      const { o } = b;
      const q = c.size;
      // A two-descriptor chain at the last table slots (or one descriptor when Q = 1).
      const d0 = q - 1;
      const d1 = q >= 2 ? q - 2 : -1;
      b.w64(o.descAddr(d0), b.data + 0x40);
      b.w32(o.descLen(d0), 0x11);
      b.w16(o.descFlags(d0), d1 >= 0 ? 1 : 0);
      b.w16(o.descNext(d0), d1 >= 0 ? d1 : 0);
      if (d1 >= 0) {
        b.w64(o.descAddr(d1), b.data + 0x80);
        b.w32(o.descLen(d1), 0x22);
        b.w16(o.descFlags(d1), 2);
      }
      b.w16(o.availRing(0), d0);
      b.w16(o.availIdx, 1);
      const dev = new SplitDevice(b.mem, b.layout, features, { notifyFirstFlush: false });
      const chain = new DescriptorChain(q);
      expect(dev.pop(chain)).toBe(true);
      const expected = [{ addr: b.data + 0x40, len: 0x11, writable: false }];
      if (d1 >= 0) expected.push({ addr: b.data + 0x80, len: 0x22, writable: true });
      expect(chain.id).toBe(d0);
      expect(chain.segments()).toEqual(expected);
      // Device writes: used element at slot 0 and used.idx; it reads avail.flags or used_event.
      dev.push(d0, d1 >= 0 ? 0x21 : 0);
      if (features.eventIdx) {
        b.w16(o.usedEvent, 0xffff); // not in (0, 1]
        b.w16(o.availFlags, 0); // flags are ignored with EVENT_IDX
      } else {
        b.w16(o.availFlags, 1); // NO_INTERRUPT
      }
      expect(dev.flush()).toBe(false);
      expect([b.r32(o.usedId(0)), b.r32(o.usedLen(0)), b.r16(o.usedIdx)]).toEqual([d0, d1 >= 0 ? 0x21 : 0, 1]);
      // The same chain again at avail position 1; now ask for the notification.
      b.w16(o.availRing(1 % q), d0);
      b.w16(o.availIdx, 2);
      if (features.eventIdx) {
        b.w16(o.usedEvent, 1);
        b.w16(o.availFlags, 1);
      } else {
        b.w16(o.availFlags, 0);
      }
      expect(dev.pop(chain)).toBe(true);
      dev.push(d0, 0);
      expect(dev.flush()).toBe(true);
      expect([b.r32(o.usedId(1 % q)), b.r16(o.usedIdx)]).toEqual([d0, 2]);
      dev.disableKicks();
      expect(b.r16(o.usedFlags)).toBe(features.eventIdx ? 0 : 1);
      dev.enableKicks();
      expect(b.r16(o.usedFlags)).toBe(0);
      if (features.eventIdx) expect(b.r16(o.availEvent)).toBe(2);
    }
  });

  it('device reads an indirect table and writes used elements at successive slots, wrapping at Q', () => {
    const b = build(c, ALL);
    const { o } = b;
    const q = c.size;
    const table = b.indirect;
    // Table entry 0 -> entry 2 -> entry 1 (order given by next, not by position).
    const ent = (j: number, addr: number, len: number, flags: number, next: number) => {
      b.w64(table + 16 * j, addr);
      b.w32(table + 16 * j + 8, len);
      b.w16(table + 16 * j + 12, flags);
      b.w16(table + 16 * j + 14, next);
    };
    const entries = Math.min(3, q);
    ent(0, b.data, 5, entries > 1 ? 1 : 0, entries > 2 ? 2 : 1);
    if (entries > 2) ent(2, b.data + 16, 6, 1, 1);
    if (entries > 1) ent(1, b.data + 32, 7, 2, 0);
    b.w64(o.descAddr(0), table);
    b.w32(o.descLen(0), 16 * entries);
    b.w16(o.descFlags(0), 4 | 2); // WRITE on the table descriptor is ignored (§2.7.5.3.2)
    const dev = new SplitDevice(b.mem, b.layout, ALL);
    const chain = new DescriptorChain(q);
    const expected = [{ addr: b.data, len: 5, writable: false }];
    if (entries > 2) expected.push({ addr: b.data + 16, len: 6, writable: false });
    if (entries > 1) expected.push({ addr: b.data + 32, len: 7, writable: true });
    // Post head 0 q+1 times over two rounds so used positions wrap past Q.
    let avail = 0;
    for (let round = 0; round < 2; round++) {
      const k = round === 0 ? q : 1;
      for (let i = 0; i < k; i++) b.w16(o.availRing((avail + i) % q), 0);
      avail += k;
      b.w16(o.availIdx, avail);
      for (let i = 0; i < k; i++) {
        expect(dev.pop(chain)).toBe(true);
        expect(chain.segments()).toEqual(expected);
        expect(chain.indirect).toBe(true);
        dev.push(0, 0);
      }
      dev.flush();
      for (let i = 0; i < k; i++) expect(b.r32(o.usedId(i % q))).toBe(0);
    }
    expect(b.r16(o.usedIdx)).toBe(q + 1);
  });

  it('IN_ORDER batch: one element at the first slot of the batch carrying the last id, used.idx advanced by the batch', () => {
    if (c.size < 4) return;
    const f = { indirect: false, eventIdx: false, inOrder: true };
    const b = build(c, f);
    const { o } = b;
    SplitDriver.init(b.mem, b.layout);
    const drv = new SplitDriver<number>(b.mem, b.layout, f);
    const dev = new SplitDevice(b.mem, b.layout, f);
    const chain = new DescriptorChain(c.size);
    for (let i = 0; i < 4; i++) drv.add([{ addr: b.data, len: 16, writable: true }], i);
    drv.publish();
    const heads: number[] = [];
    while (dev.pop(chain)) heads.push(chain.id);
    expect(heads).toEqual([0, 1, 2, 3]);
    // Descriptors in ring order: each single-descriptor buffer at its own slot.
    for (let i = 0; i < 4; i++) expect(b.r16(o.availRing(i))).toBe(i);
    b.w32(o.usedId(1), 0xdead);
    for (const h of heads) dev.push(h, 16);
    dev.flush();
    expect([b.r32(o.usedId(0)), b.r32(o.usedLen(0)), b.r16(o.usedIdx)]).toEqual([3, 16, 4]);
    expect(b.r32(o.usedId(1))).toBe(0xdead); // skipped slots are not written
  });
});
