import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../memory/index.ts';
import { RingFullError } from '../errors.ts';
import type { RingFeatures, Segment, UsedBuffer } from '../types.ts';
import { layoutSplitRing, splitRingFootprint } from './layout.ts';
import { SplitDriver } from './driver.ts';

const NONE: RingFeatures = { indirect: false, eventIdx: false, inOrder: false };
const DATA = 0x10000;

function setup(size: number, features: RingFeatures = NONE, indirect = false) {
  const layout = layoutSplitRing(0, size);
  const mem = new GuestMemory([{ gpa: 0, size: 0x20000 }]);
  SplitDriver.init(mem, layout);
  const indGpa = Math.ceil(splitRingFootprint(size) / 16) * 16;
  const driver = new SplitDriver<string>(mem, layout, features, indirect ? { indirectArea: { gpa: indGpa, perBuffer: 4 } } : undefined);
  // Raw views of the ring, addressed independently of the driver.
  const desc = (i: number) => ({
    addr: mem.readU64(layout.desc + 16 * i),
    len: mem.readU32(layout.desc + 16 * i + 8),
    flags: mem.readU16(layout.desc + 16 * i + 12),
    next: mem.readU16(layout.desc + 16 * i + 14),
  });
  const availIdx = () => mem.readU16(layout.avail + 2);
  const availRing = (i: number) => mem.readU16(layout.avail + 4 + 2 * i);
  /** Plays the device: writes used element `pos` and used.idx. */
  const use = (pos: number, id: number, len: number, idx = pos + 1) => {
    const at = layout.used + 4 + 8 * (pos % size);
    mem.writeU32(at, id);
    mem.writeU32(at + 4, len);
    mem.writeU16(layout.used + 2, idx & 0xffff);
  };
  return { layout, mem, driver, desc, availIdx, availRing, use, indGpa };
}

const r = (addr: number, len: number): Segment => ({ addr, len, writable: false });
const w = (addr: number, len: number): Segment => ({ addr, len, writable: true });
const out = (): UsedBuffer<string> => ({ token: '', len: -1, id: -1 });

describe('SplitDriver', () => {
  it('init zero-fills the ring areas', () => {
    const layout = layoutSplitRing(0, 8);
    const mem = new GuestMemory([{ gpa: 0, size: 4096 }]);
    mem.fill(0, 4096, 0xaa);
    SplitDriver.init(mem, layout);
    const zero = (from: number, len: number) => {
      for (let a = from; a < from + len; a++) expect(mem.readU8(a), `byte ${a}`).toBe(0);
    };
    zero(layout.desc, 128);
    zero(layout.avail, 6 + 16);
    zero(layout.used, 6 + 64);
    expect(mem.readU8(splitRingFootprint(8))).toBe(0xaa);
  });

  it('chains segments through the free list and writes the head into the avail ring without publishing', () => {
    const { driver, desc, availIdx, availRing } = setup(8);
    expect(driver.add([r(DATA, 10), w(DATA + 0x100, 20), w(DATA + 0x200, 30)], 'a')).toBe(0);
    expect(desc(0)).toEqual({ addr: DATA, len: 10, flags: 1, next: 1 });
    expect(desc(1)).toEqual({ addr: DATA + 0x100, len: 20, flags: 3, next: 2 });
    expect(desc(2)).toEqual({ addr: DATA + 0x200, len: 30, flags: 2, next: 0 });
    expect(availRing(0)).toBe(0);
    expect(availIdx()).toBe(0);
    expect(driver.freeDescriptors).toBe(5);
    expect(driver.inFlight).toBe(1);
    driver.publish();
    expect(availIdx()).toBe(1);
  });

  it('returns a reclaimed chain to the front of the free list (LIFO), in chain order', () => {
    const { driver, use, desc } = setup(4);
    expect(driver.add([r(DATA, 1), r(DATA, 1)], 'a')).toBe(0); // descs 0,1
    expect(driver.add([r(DATA, 1)], 'b')).toBe(2);
    driver.publish();
    use(0, 0, 0);
    const o = out();
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'a', len: 0, id: 0 });
    // Free list is now 0,1,3: a 3-descriptor buffer takes them in that order.
    expect(driver.add([r(DATA, 1), r(DATA, 2), r(DATA, 3)], 'c')).toBe(0);
    expect([desc(0).next, desc(1).next, desc(3).len]).toEqual([1, 3, 3]);
    expect(driver.freeDescriptors).toBe(0);
  });

  it('allocates in ring order with IN_ORDER: next = x+1, wrapping to 0', () => {
    const { driver, desc, use } = setup(4, { ...NONE, inOrder: true });
    driver.add([r(DATA, 1), r(DATA, 1), r(DATA, 1)], 'a'); // 0,1,2
    driver.publish();
    use(0, 0, 0);
    driver.reclaim(out());
    expect(driver.add([r(DATA, 1), r(DATA, 1)], 'b')).toBe(3); // 3 then 0
    expect(desc(3)).toMatchObject({ flags: 1, next: 0 });
    expect(desc(0)).toMatchObject({ flags: 0, next: 0 });
  });

  it('writes an indirect buffer as one INDIRECT descriptor pointing at its slot table', () => {
    const { driver, desc, mem, indGpa } = setup(8, { ...NONE, indirect: true }, true);
    driver.add([r(DATA, 1)], 'x');
    const head = driver.add([r(DATA, 12), w(DATA + 64, 100)], 'y', { indirect: true });
    expect(head).toBe(1);
    const table = indGpa + head * 4 * 16;
    expect(desc(1)).toEqual({ addr: table, len: 32, flags: 4, next: 0 });
    expect(mem.readU64(table)).toBe(DATA);
    expect(mem.readU32(table + 8)).toBe(12);
    expect(mem.readU16(table + 12)).toBe(1);
    expect(mem.readU16(table + 14)).toBe(1);
    expect(mem.readU64(table + 16)).toBe(DATA + 64);
    expect(mem.readU16(table + 28)).toBe(2);
    expect(driver.freeDescriptors).toBe(6);
  });

  it('rejects malformed buffers with TypeError and a full ring with RingFullError', () => {
    const { driver } = setup(4, { ...NONE, indirect: true }, true);
    expect(() => driver.add([], 'a')).toThrow(TypeError);
    expect(() => driver.add([w(DATA, 1), r(DATA, 1)], 'a')).toThrow(TypeError);
    expect(() => driver.add([r(DATA, -1)], 'a')).toThrow(TypeError);
    expect(() => driver.add([r(DATA, 2 ** 32)], 'a')).toThrow(TypeError);
    expect(() => driver.add([r(-16, 1)], 'a')).toThrow(TypeError);
    expect(() => driver.add([r(DATA, 2 ** 31), w(DATA, 2 ** 31)], 'a')).toThrow(TypeError);
    expect(() => driver.add([r(DATA, 1), r(DATA, 1), r(DATA, 1), r(DATA, 1), r(DATA, 1)], 'a')).toThrow(TypeError);
    expect(() => driver.add([r(DATA, 1), r(DATA, 1), r(DATA, 1), r(DATA, 1), r(DATA, 1)], 'a', { indirect: true })).toThrow(TypeError);
    const noInd = setup(4).driver;
    expect(() => noInd.add([r(DATA, 1)], 'a', { indirect: true })).toThrow(TypeError);
    expect(noInd.inFlight).toBe(0);
    driver.add([r(DATA, 1), r(DATA, 1), r(DATA, 1)], 'a');
    try {
      driver.add([r(DATA, 1), r(DATA, 1)], 'b');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(RingFullError);
      expect(e).toMatchObject({ needed: 2, free: 1 });
    }
    expect(driver.add([r(DATA, 1), w(DATA, 1)], 'c', { indirect: true })).toBe(3);
  });

  it('publish kicks unless used.flags NO_NOTIFY, and says nothing when nothing was added', () => {
    const { driver, mem, layout } = setup(8);
    expect(driver.publish()).toBe(false);
    driver.add([r(DATA, 1)], 'a');
    expect(driver.publish()).toBe(true);
    mem.writeU16(layout.used, 1);
    driver.add([r(DATA, 1)], 'b');
    expect(driver.publish()).toBe(false);
  });

  it('with EVENT_IDX kicks exactly when avail_event lies in (old, new]', () => {
    const { driver, mem, layout } = setup(8, { ...NONE, eventIdx: true });
    const availEvent = layout.used + 4 + 8 * 8;
    mem.writeU16(availEvent, 2);
    driver.add([r(DATA, 1)], 'a'); // idx 0 -> 1
    expect(driver.publish()).toBe(false);
    driver.add([r(DATA, 1)], 'b');
    driver.add([r(DATA, 1)], 'c'); // 1 -> 3 covers entry 2
    expect(driver.publish()).toBe(true);
    driver.add([r(DATA, 1)], 'd'); // 3 -> 4
    expect(driver.publish()).toBe(false);
    mem.writeU16(layout.used, 1); // flags are ignored with EVENT_IDX
    mem.writeU16(availEvent, 4);
    driver.add([r(DATA, 1)], 'e'); // 4 -> 5 covers entry 4
    expect(driver.publish()).toBe(true);
  });

  it('moves used_event with each reclaim while notifications are on, and not after disable or setUsedEvent', () => {
    const { driver, mem, layout, use } = setup(8, { ...NONE, eventIdx: true });
    const usedEvent = () => mem.readU16(layout.avail + 4 + 2 * 8);
    for (const t of ['a', 'b', 'c', 'd']) driver.add([r(DATA, 1)], t);
    driver.publish();
    for (let i = 0; i < 4; i++) use(i, i, 0);
    driver.reclaim(out());
    expect(usedEvent()).toBe(1);
    driver.disableNotifications();
    expect(mem.readU16(layout.avail)).toBe(0); // flags stay 0 with EVENT_IDX
    driver.reclaim(out());
    expect(usedEvent()).toBe(1);
    driver.setUsedEvent(7);
    driver.reclaim(out());
    expect(usedEvent()).toBe(7);
    expect(driver.enableNotifications()).toBe(true); // one used buffer still pending
    expect(usedEvent()).toBe(3);
    driver.reclaim(out());
    expect(usedEvent()).toBe(4);
    expect(driver.enableNotifications()).toBe(false);
  });

  it('without EVENT_IDX, notification control is avail.flags NO_INTERRUPT and setUsedEvent does nothing', () => {
    const { driver, mem, layout, use } = setup(8);
    driver.disableNotifications();
    expect(mem.readU16(layout.avail)).toBe(1);
    driver.setUsedEvent(5);
    expect(mem.readU16(layout.avail + 4 + 2 * 8)).toBe(0);
    expect(driver.enableNotifications()).toBe(false);
    expect(mem.readU16(layout.avail)).toBe(0);
    driver.add([r(DATA, 1)], 'a');
    driver.publish();
    use(0, 0, 0);
    driver.disableNotifications();
    expect(driver.hasUsed()).toBe(true);
    expect(driver.enableNotifications()).toBe(true);
  });

  it('expands an IN_ORDER batch: buffers before the element id are fully used', () => {
    const { driver, use } = setup(8, { ...NONE, inOrder: true });
    driver.add([r(DATA, 4), w(DATA, 100)], 'a'); // descs 0,1
    driver.add([w(DATA, 50), w(DATA, 7)], 'b'); // 2,3
    driver.add([r(DATA, 4)], 'c'); // 4
    driver.add([w(DATA, 9)], 'd'); // 5
    driver.publish();
    use(0, 4, 0, 3); // one element for a,b,c with c's id; used.idx += 3
    const got: UsedBuffer<string>[] = [];
    const o = out();
    while (driver.reclaim(o)) got.push({ ...o });
    expect(got).toEqual([
      { token: 'a', len: 100, id: 0 },
      { token: 'b', len: 57, id: 2 },
      { token: 'c', len: 0, id: 4 },
    ]);
    use(3, 5, 3, 4);
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'd', len: 3, id: 5 });
    expect(driver.freeDescriptors).toBe(8);
  });

  it('refuses a device that reports ids not in flight or runs used.idx ahead, consuming nothing', () => {
    const { driver, use } = setup(8);
    driver.add([r(DATA, 1)], 'a');
    driver.add([r(DATA, 1)], 'b'); // head 1, not published below
    driver.publish();
    driver.add([r(DATA, 1)], 'c'); // head 2, added but not published
    use(0, 0, 0, 3); // 3 used but only 2 published
    expect(() => driver.reclaim(out())).toThrow(expect.objectContaining({ code: 'used-overflow' }));
    use(0, 9, 0);
    expect(() => driver.reclaim(out())).toThrow(expect.objectContaining({ code: 'bad-id' }));
    use(0, 2, 0); // not published
    expect(() => driver.reclaim(out())).toThrow(expect.objectContaining({ code: 'bad-id' }));
    use(0, 1, 0);
    const o = out();
    expect(driver.reclaim(o)).toBe(true);
    expect(o.token).toBe('b');
    use(1, 1, 0, 2); // 1 again: already reclaimed
    expect(() => driver.reclaim(out())).toThrow(expect.objectContaining({ code: 'bad-id' }));
    expect(driver.inFlight).toBe(2);
  });

  it('takes over a ring at the index it finds, and refuses one with buffers in flight', () => {
    const layout = layoutSplitRing(0, 4);
    const mem = new GuestMemory([{ gpa: 0, size: 0x20000 }]);
    SplitDriver.init(mem, layout);
    mem.writeU16(layout.avail + 2, 65535);
    mem.writeU16(layout.used + 2, 65535);
    const d = new SplitDriver<string>(mem, layout, NONE);
    d.add([r(DATA, 1)], 'a');
    d.add([r(DATA, 1)], 'b');
    d.publish();
    expect(mem.readU16(layout.avail + 2)).toBe(1); // wrapped
    expect(mem.readU16(layout.avail + 4 + 2 * 3)).toBe(0); // position 65535 -> slot 3
    expect(mem.readU16(layout.avail + 4)).toBe(1); // position 0 -> slot 0
    mem.writeU16(layout.used + 2, 3);
    expect(() => new SplitDriver(mem, layout, NONE)).toThrow(RangeError);
  });

  it('initialises used.flags to 0 (§2.7.10) and refuses misaligned or unmapped rings', () => {
    const layout = layoutSplitRing(0, 4);
    const mem = new GuestMemory([{ gpa: 0, size: 4096 }]);
    mem.writeU16(layout.used, 1);
    new SplitDriver(mem, layout, NONE);
    expect(mem.readU16(layout.used)).toBe(0);
    expect(() => new SplitDriver(mem, { ...layout, used: layout.used + 2 }, NONE)).toThrow(RangeError);
    expect(() => new SplitDriver(mem, layoutSplitRing(4096, 4), NONE)).toThrow();
  });
});
