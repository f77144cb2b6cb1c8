import { describe, expect, it } from 'vitest';
import { DirtyLog, GuestMemory } from '../../memory/index.ts';
import { RingError } from '../errors.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../types.ts';
import { layoutSplitRing, splitRingFootprint } from './layout.ts';
import { SplitDriver } from './driver.ts';
import { SplitDevice, type SplitDeviceOptions, type SplitDeviceState } from './device.ts';

const NONE: RingFeatures = { indirect: false, eventIdx: false, inOrder: false };
const DATA = 0x10000;

function setup(size: number, features: RingFeatures = NONE, opts?: SplitDeviceOptions, state?: Partial<SplitDeviceState>) {
  const layout = layoutSplitRing(0, size);
  const mem = new GuestMemory([{ gpa: 0, size: 0x20000 }]);
  SplitDriver.init(mem, layout);
  const indGpa = Math.ceil(splitRingFootprint(size) / 16) * 16;
  const driver = new SplitDriver<string>(mem, layout, features, size <= 64 ? { indirectArea: { gpa: indGpa, perBuffer: 8 } } : undefined);
  const device = new SplitDevice(mem, layout, features, opts, state);
  const chain = new DescriptorChain(size);
  const usedElem = (slot: number) => ({ id: mem.readU32(layout.used + 4 + 8 * slot), len: mem.readU32(layout.used + 8 + 8 * slot) });
  const usedIdx = () => mem.readU16(layout.used + 2);
  return { layout, mem, driver, device, chain, usedElem, usedIdx };
}

const r = (addr: number, len: number): Segment => ({ addr, len, writable: false });
const w = (addr: number, len: number): Segment => ({ addr, len, writable: true });
const out = (): UsedBuffer<string> => ({ token: '', len: -1, id: -1 });
const code = (c: string) => expect.objectContaining({ name: 'RingError', code: c });

describe('SplitDevice', () => {
  it('pops nothing from an empty ring and counts what is published', () => {
    const { driver, device, chain } = setup(4);
    expect(device.pop(chain)).toBe(false);
    expect(device.availableCount()).toBe(0);
    driver.add([r(DATA, 1)], 'a');
    expect(device.availableCount()).toBe(0); // added, not published
    driver.publish();
    expect(device.availableCount()).toBe(1);
    expect(device.pop(chain)).toBe(true);
    expect(device.availableCount()).toBe(0);
  });

  it('walks a direct chain and an indirect one into the reusable container', () => {
    const { driver, device, chain } = setup(8, { ...NONE, indirect: true });
    driver.add([r(DATA, 10), w(DATA + 0x40, 20), w(DATA + 0x80, 30)], 'a');
    driver.add([r(DATA + 0x100, 5), r(DATA + 0x200, 6), w(DATA + 0x300, 7)], 'b', { indirect: true });
    driver.publish();
    expect(device.pop(chain)).toBe(true);
    expect(chain).toMatchObject({ id: 0, count: 3, ringDescriptors: 3, readableBytes: 10, writableBytes: 50, indirect: false });
    expect(chain.segments()).toEqual([r(DATA, 10), w(DATA + 0x40, 20), w(DATA + 0x80, 30)]);
    expect(device.pop(chain)).toBe(true);
    expect(chain).toMatchObject({ id: 3, count: 3, ringDescriptors: 1, readableBytes: 11, writableBytes: 7, indirect: true });
    expect(chain.segments()).toEqual([r(DATA + 0x100, 5), r(DATA + 0x200, 6), w(DATA + 0x300, 7)]);
  });

  it('writes used elements in push order at used.idx and publishes them only at flush', () => {
    const { driver, device, chain, usedElem, usedIdx } = setup(4);
    for (const t of ['a', 'b', 'c']) driver.add([w(DATA, 100)], t);
    driver.publish();
    while (device.pop(chain));
    device.push(2, 30);
    device.push(0, 10);
    expect(usedIdx()).toBe(0);
    expect(usedElem(0)).toEqual({ id: 2, len: 30 });
    expect(usedElem(1)).toEqual({ id: 0, len: 10 });
    device.flush();
    expect(usedIdx()).toBe(2);
    const o = out();
    driver.reclaim(o);
    expect(o).toEqual({ token: 'c', len: 30, id: 2 });
  });

  it('refuses pushes of heads not popped, pushed twice, out of IN_ORDER order, or longer than the writable part', () => {
    const { driver, device, chain } = setup(4);
    driver.add([w(DATA, 8)], 'a');
    driver.add([r(DATA, 8)], 'b');
    driver.publish();
    expect(() => device.push(0, 0)).toThrow(code('used-overflow'));
    device.pop(chain);
    device.pop(chain);
    expect(() => device.push(0, 9)).toThrow(RangeError);
    expect(() => device.push(1, 1)).toThrow(RangeError);
    expect(() => device.push(7, 0)).toThrow(code('used-overflow'));
    expect(() => device.push(0, -1)).toThrow(RangeError);
    device.push(0, 8);
    expect(() => device.push(0, 8)).toThrow(code('used-overflow'));

    const io = setup(4, { ...NONE, inOrder: true });
    io.driver.add([r(DATA, 8)], 'a');
    io.driver.add([r(DATA, 8)], 'b');
    io.driver.publish();
    io.device.pop(io.chain);
    io.device.pop(io.chain);
    expect(() => io.device.push(1, 0)).toThrow(code('used-overflow'));
    io.device.push(0, 0);
    io.device.push(1, 0);
  });

  it('accepts a head the driver re-posted while in flight once per pop, even past Q pops (as DPDK does)', () => {
    const { device, chain, mem, layout } = setup(2, { ...NONE, inOrder: true });
    mem.writeU64(layout.desc, DATA);
    mem.writeU32(layout.desc + 8, 8);
    for (let i = 0; i < 3; i++) {
      mem.writeU16(layout.avail + 4 + 2 * (i % 2), 0);
      mem.writeU16(layout.avail + 2, i + 1);
      expect(device.pop(chain)).toBe(true);
      expect(chain.id).toBe(0);
    }
    for (let i = 0; i < 3; i++) device.push(0, 0);
    expect(() => device.push(0, 0)).toThrow(code('used-overflow'));
    device.flush();
    expect(mem.readU16(layout.used + 2)).toBe(3);
  });

  it('IN_ORDER: folds consecutive fully-used pushes into one element at the batch start, carrying the last id', () => {
    const { driver, device, chain, usedElem, usedIdx } = setup(8, { ...NONE, inOrder: true });
    driver.add([r(DATA, 4)], 'a'); // 0
    driver.add([r(DATA, 4), w(DATA, 64)], 'b'); // 1,2
    driver.add([w(DATA, 16)], 'c'); // 3
    driver.add([w(DATA, 16)], 'd'); // 4
    driver.add([w(DATA, 16)], 'e'); // 5
    driver.publish();
    while (device.pop(chain));
    device.push(0, 0); // fully used (no writable part)
    device.push(1, 64); // fully used
    device.push(3, 10); // partial: folds into the batch as its last buffer, ends folding
    device.push(4, 16); // new element
    expect(device.flush()).toBe(true);
    expect(usedIdx()).toBe(4);
    expect(usedElem(0)).toEqual({ id: 3, len: 10 });
    expect(usedElem(1)).toEqual({ id: 0, len: 0 }); // untouched (skipped slot)
    expect(usedElem(3)).toEqual({ id: 4, len: 16 });
    device.push(5, 16); // a new flush starts a new element
    device.flush();
    expect(usedElem(4)).toEqual({ id: 5, len: 16 });
    const got: [string, number][] = [];
    const o = out();
    while (driver.reclaim(o)) got.push([o.token, o.len]);
    expect(got).toEqual([['a', 0], ['b', 64], ['c', 10], ['d', 16], ['e', 16]]);
  });

  it('flush without pushes touches nothing; without EVENT_IDX it notifies unless NO_INTERRUPT', () => {
    const { driver, device, chain, mem, layout } = setup(4);
    expect(device.flush()).toBe(false);
    driver.add([r(DATA, 1)], 'a');
    driver.add([r(DATA, 1)], 'b');
    driver.publish();
    device.pop(chain);
    device.push(chain.id, 0);
    expect(device.flush()).toBe(true);
    expect(device.flush()).toBe(false);
    mem.writeU16(layout.avail, 1);
    device.pop(chain);
    device.push(chain.id, 0);
    expect(device.flush()).toBe(false);
  });

  it('EVENT_IDX: notifies on the first flush after start (DPDK), then when used_event is in (signalled, new]', () => {
    for (const first of [true, false]) {
      const { driver, device, chain, mem, layout } = setup(8, { ...NONE, eventIdx: true }, { notifyFirstFlush: first });
      const usedEvent = layout.avail + 4 + 2 * 8;
      driver.disableNotifications(); // leaves used_event at 0
      mem.writeU16(usedEvent, 5);
      for (let i = 0; i < 8; i++) driver.add([r(DATA, 1)], String(i));
      driver.publish();
      const step = () => {
        device.pop(chain);
        device.push(chain.id, 0);
        return device.flush();
      };
      expect(step()).toBe(first); // 0 -> 1, used_event 5 not crossed
      expect(device.saveState()).toEqual({ lastAvailIdx: 1, lastUsedIdx: 1, signalledUsedValid: true, signalledUsed: 1 });
      expect([step(), step(), step()]).toEqual([false, false, false]); // -> 4
      expect(step()).toBe(false); // -> 5: entry 4 written, used_event 5 not yet
      expect(step()).toBe(true); // -> 6: entry 5 written
      expect(step()).toBe(false);
    }
  });

  it('kick suppression: used.flags NO_NOTIFY, or with EVENT_IDX avail_event = last avail (DPDK)', () => {
    const plain = setup(4);
    plain.device.disableKicks();
    expect(plain.mem.readU16(plain.layout.used)).toBe(1);
    plain.driver.add([r(DATA, 1)], 'a');
    expect(plain.driver.publish()).toBe(false);
    plain.device.enableKicks();
    expect(plain.mem.readU16(plain.layout.used)).toBe(0);
    plain.driver.add([r(DATA, 1)], 'b');
    expect(plain.driver.publish()).toBe(true);

    const ev = setup(4, { ...NONE, eventIdx: true });
    const availEvent = () => ev.mem.readU16(ev.layout.used + 4 + 8 * 4);
    ev.driver.add([r(DATA, 1)], 'a');
    ev.driver.add([r(DATA, 1)], 'b');
    ev.driver.publish();
    ev.device.pop(ev.chain);
    ev.device.disableKicks(); // no-op with EVENT_IDX
    expect(ev.mem.readU16(ev.layout.used)).toBe(0);
    expect(availEvent()).toBe(0);
    ev.device.enableKicks();
    expect(availEvent()).toBe(1);
    ev.device.pop(ev.chain);
    ev.driver.add([r(DATA, 1)], 'c'); // 2 -> 3 does not cover 1
    expect(ev.driver.publish()).toBe(false);
  });

  it('marks the used ring pages it writes in the dirty log, and nothing for pops', () => {
    const { driver, device, chain, mem, layout } = setup(1024);
    const log = new DirtyLog(new SharedArrayBuffer(64));
    mem.setDirtyLog(log);
    for (let i = 0; i < 1000; i++) driver.add([r(DATA, 1)], String(i));
    driver.publish();
    log.clear();
    for (let i = 0; i < 1000; i++) device.pop(chain);
    expect(log.dirtyPages()).toEqual([]);
    for (let i = 0; i < 1000; i++) device.push(i, 0);
    const page = (gpa: number) => Math.floor(gpa / 4096);
    const first = page(layout.used + 4);
    const last = page(layout.used + 4 + 8 * 999 + 7);
    expect(last - first).toBeGreaterThanOrEqual(2);
    expect(log.dirtyPages()).toEqual(Array.from({ length: last - first + 1 }, (_, i) => first + i));
    log.clear();
    device.flush();
    expect(log.dirtyPages()).toEqual([page(layout.used + 2)]);
  });

  it('accepts a buffer that straddles two adjacent regions, and refuses one that runs past them', () => {
    const layout = layoutSplitRing(0, 4);
    const mem = new GuestMemory([
      { gpa: 0, size: 0x1000 },
      { gpa: 0x1000, size: 0x1000 },
    ]);
    SplitDriver.init(mem, layout);
    const driver = new SplitDriver<string>(mem, layout, NONE);
    const device = new SplitDevice(mem, layout, NONE);
    const chain = new DescriptorChain(4);
    driver.add([r(0xf00, 0x200), w(0x1f00, 0x100)], 'across');
    driver.add([r(0x1f00, 0x101)], 'past the end');
    driver.publish();
    expect(device.pop(chain)).toBe(true);
    expect(chain.segments()).toEqual([r(0xf00, 0x200), w(0x1f00, 0x100)]);
    expect(() => device.pop(chain)).toThrow(code('bad-address'));
  });

  it('reads an indirect table that straddles two regions through a copy', () => {
    const layout = layoutSplitRing(0, 4);
    const mem = new GuestMemory([
      { gpa: 0, size: 0x1000 },
      { gpa: 0x1000, size: 0x1000 },
    ]);
    SplitDriver.init(mem, layout);
    const device = new SplitDevice(mem, layout, { ...NONE, indirect: true });
    const table = 0xff0; // entry 0 in the first region, entry 1 in the second
    mem.writeU64(table, 0x100);
    mem.writeU32(table + 8, 4);
    mem.writeU16(table + 12, 1);
    mem.writeU16(table + 14, 1);
    mem.writeU64(table + 16, 0x1100);
    mem.writeU32(table + 24, 8);
    mem.writeU16(table + 28, 2);
    mem.writeU64(layout.desc, table);
    mem.writeU32(layout.desc + 8, 32);
    mem.writeU16(layout.desc + 12, 4);
    mem.writeU16(layout.avail + 2, 1);
    const chain = new DescriptorChain(4);
    expect(device.pop(chain)).toBe(true);
    expect(chain.segments()).toEqual([r(0x100, 4), w(0x1100, 8)]);
  });

  it('refuses chains longer than its limit or than the caller’s container', () => {
    const { driver, device } = setup(8, NONE, { maxChain: 2 });
    driver.add([r(DATA, 1), r(DATA, 1), r(DATA, 1)], 'a');
    driver.publish();
    expect(() => device.pop(new DescriptorChain(8))).toThrow(code('chain-too-long'));
    const s = setup(8);
    s.driver.add([r(DATA, 1), r(DATA, 1), r(DATA, 1)], 'a');
    s.driver.publish();
    expect(() => s.device.pop(new DescriptorChain(2))).toThrow(code('chain-too-long'));
    expect(s.device.pop(new DescriptorChain(3))).toBe(true);
  });

  describe('state', () => {
    it('saveState round-trips through restoreState and the constructor', () => {
      const { device, mem, layout } = setup(8);
      const st: SplitDeviceState = { lastAvailIdx: 65534, lastUsedIdx: 65533, signalledUsedValid: true, signalledUsed: 65500 };
      device.restoreState(st);
      expect(device.saveState()).toEqual(st);
      expect(new SplitDevice(mem, layout, NONE, undefined, st).saveState()).toEqual(st);
      device.restoreState({ signalledUsedValid: false });
      expect(device.saveState()).toEqual({ ...st, signalledUsedValid: false });
      expect(() => device.restoreState({ lastAvailIdx: 65536 })).toThrow(RangeError);
    });

    it('a device restored from saveState continues exactly like the one it replaced', () => {
      const feats = { ...NONE, eventIdx: true };
      // Two identical rings; on one, the device is replaced mid-stream.
      const a = setup(8, feats);
      const b = setup(8, feats);
      const trace: unknown[][] = [[], []];
      const run = (s: ReturnType<typeof setup>, k: number, swapAt: number) => {
        let dev = s.device;
        const o = out();
        for (let i = 0; i < 40; i++) {
          if (i === swapAt) dev = new SplitDevice(s.mem, s.layout, feats, undefined, dev.saveState());
          s.driver.add([r(DATA, 1), w(DATA, 16)], `t${i}`);
          if (i % 3 === 0) trace[k].push(['kick', s.driver.publish()]);
          while (dev.pop(s.chain)) {
            trace[k].push(['pop', s.chain.id]);
            dev.push(s.chain.id, i % 16);
          }
          if (i % 2 === 0) trace[k].push(['notify', dev.flush()]);
          if (i % 5 === 0) dev.enableKicks();
          while (s.driver.reclaim(o)) trace[k].push(['used', o.token, o.len]);
        }
        trace[k].push(['state', dev.saveState()], ['bytes', Array.from(s.mem.regions[0].bytes.subarray(0, splitRingFootprint(8)))]);
      };
      run(a, 0, -1);
      run(b, 1, 17);
      expect(trace[1]).toEqual(trace[0]);
    });

    it('chains popped by a previous instance can be pushed once each after restore', () => {
      const { driver, device, chain, mem, layout } = setup(4);
      driver.add([w(DATA, 8)], 'a');
      driver.add([w(DATA, 8)], 'b');
      driver.publish();
      device.pop(chain);
      device.pop(chain);
      const next = new SplitDevice(mem, layout, NONE, undefined, device.saveState());
      next.push(1, 8);
      next.push(0, 8);
      expect(() => next.push(0, 8)).toThrow(code('used-overflow'));
      next.flush();
      const got: string[] = [];
      const o = out();
      while (driver.reclaim(o)) got.push(o.token);
      expect(got).toEqual(['b', 'a']);
    });

    it('rebaseFromUsed sets both indices to used.idx, and later pops resume there', () => {
      const { driver, device, chain, usedIdx } = setup(4);
      for (const t of ['a', 'b', 'c']) driver.add([r(DATA, 1)], t);
      driver.publish();
      device.pop(chain);
      device.pop(chain);
      device.push(0, 0);
      device.flush();
      device.pop(chain);
      device.rebaseFromUsed();
      expect(usedIdx()).toBe(1);
      expect(device.saveState()).toMatchObject({ lastAvailIdx: 1, lastUsedIdx: 1 });
      expect(device.availableCount()).toBe(2);
      expect(device.pop(chain)).toBe(true);
      expect(chain.id).toBe(1); // 'b' again: it was popped but never used
      expect(() => device.push(2, 0)).toThrow(code('used-overflow')); // 'c' is not popped by this instance's reckoning
    });

    it('rebase after out-of-order completion re-pops a used buffer, which the driver refuses (DPDK: "resent for Tx")', () => {
      const { driver, device, chain } = setup(4);
      driver.add([r(DATA, 1)], 'a');
      driver.add([r(DATA, 1)], 'b');
      driver.publish();
      device.pop(chain);
      device.pop(chain);
      device.push(1, 0); // b completes first
      device.flush();
      const o = out();
      expect(driver.reclaim(o)).toBe(true);
      expect(o.token).toBe('b');
      device.rebaseFromUsed(); // last avail = 1: 'a' is skipped, 'b' comes again
      expect(device.pop(chain)).toBe(true);
      expect(chain.id).toBe(1);
      device.push(1, 0);
      device.flush();
      expect(() => driver.reclaim(out())).toThrow(code('bad-id'));
      expect(driver.inFlight).toBe(1); // 'a' is lost
    });
  });

  it('reports avail-overrun from availableCount and pop without moving', () => {
    const { device, mem, layout, chain } = setup(4);
    mem.writeU16(layout.avail + 2, 5);
    expect(() => device.availableCount()).toThrow(code('avail-overrun'));
    expect(() => device.pop(chain)).toThrow(RingError);
    expect(device.saveState().lastAvailIdx).toBe(0);
  });
});
