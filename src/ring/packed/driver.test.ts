import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../memory/index.ts';
import { RingError, RingFullError } from '../errors.ts';
import type { RingFeatures, Segment, UsedBuffer } from '../types.ts';
import { layoutPackedRing } from './layout.ts';
import { PackedDriver } from './driver.ts';

const F = (p: Partial<RingFeatures> = {}): RingFeatures => ({ indirect: false, eventIdx: false, inOrder: false, ...p });
const R = (addr = 0x8000, len = 16): Segment => ({ addr, len, writable: false });
const W = (addr = 0x9000, len = 16): Segment => ({ addr, len, writable: true });

function rig(size: number, features = F(), indirect = false) {
  const mem = GuestMemory.create(0x40000);
  const layout = layoutPackedRing(0x1000, size);
  PackedDriver.init(mem, layout);
  const driver = new PackedDriver<string>(mem, layout, features, indirect ? { indirectArea: { gpa: 0x20000, perBuffer: 4 } } : {});
  const desc = (i: number) => ({ id: mem.readU16(layout.desc + 16 * i + 12), flags: mem.readU16(layout.desc + 16 * i + 14) });
  /** Writes a used descriptor at slot `i` the way a device would. */
  const use = (i: number, id: number, len: number, wrap: boolean) => {
    mem.writeU32(layout.desc + 16 * i + 8, len);
    mem.writeU16(layout.desc + 16 * i + 12, id);
    mem.writeU16(layout.desc + 16 * i + 14, (wrap ? 0x8080 : 0) | (len > 0 ? 2 : 0));
  };
  const setDeviceEvent = (offWrap: number, flags: number) => {
    mem.writeU16(layout.deviceEvent, offWrap);
    mem.writeU16(layout.deviceEvent + 2, flags);
  };
  return { mem, layout, driver, desc, use, setDeviceEvent };
}

const out = (): UsedBuffer<string> => ({ token: '', len: -1, id: -1 });

describe('PackedDriver.add', () => {
  it('hands out ids 0, 1, 2 … and reuses the most recently freed first', () => {
    const { driver, use } = rig(4);
    expect([driver.add([R()], 'a'), driver.add([R()], 'b'), driver.add([R()], 'c')]).toEqual([0, 1, 2]);
    use(0, 1, 0, true); // the device completes id 1 first
    expect(driver.reclaim(out())).toBe(true);
    expect(driver.add([R()], 'd')).toBe(1);
    expect(driver.add([R()], 'e')).toBe(3);
  });

  it('counts free descriptors per ring slot, and RingFullError leaves everything as it was', () => {
    const { driver, desc } = rig(5);
    driver.add([R(), R(), W()], 'a');
    expect(driver.freeDescriptors).toBe(2);
    expect(driver.inFlight).toBe(1);
    expect(() => driver.add([R(), R(), R()], 'b')).toThrow(RingFullError);
    try {
      driver.add([R(), R(), R()], 'b');
    } catch (e) {
      expect((e as RingFullError).needed).toBe(3);
      expect((e as RingFullError).free).toBe(2);
    }
    expect(driver.freeDescriptors).toBe(2);
    expect(desc(3).flags).toBe(0);
    expect(driver.add([R(), W()], 'c')).toBe(1);
    expect(driver.freeDescriptors).toBe(0);
  });

  it('refuses malformed buffers with TypeError / RangeError', () => {
    const { driver } = rig(4, F({ indirect: true }), true);
    expect(() => driver.add([], 'x')).toThrow(TypeError);
    expect(() => driver.add([W(), R()], 'x')).toThrow(TypeError);
    expect(() => driver.add([R(-1)], 'x')).toThrow(RangeError);
    expect(() => driver.add([R(0x8000, 2 ** 32)], 'x')).toThrow(RangeError);
    expect(() => driver.add([R(0x8000, 0xffff_ffff), R(0x8000, 1)], 'x')).toThrow(RangeError); // total 2^32
    expect(() => driver.add([R(), R(), R(), R(), R()], 'x')).toThrow(RangeError); // longer than the ring
    expect(() => driver.add([R(), R(), R(), R(), R()], 'x', { indirect: true })).toThrow(RangeError); // table of 4
    expect(driver.freeDescriptors).toBe(4);
    expect(driver.inFlight).toBe(0);
  });

  it('indirect needs the feature and an area', () => {
    expect(() => rig(4).driver.add([R()], 'x', { indirect: true })).toThrow(TypeError);
    expect(() => rig(4, F({ indirect: true })).driver.add([R()], 'x', { indirect: true })).toThrow(TypeError);
    const { driver } = rig(4, F({ indirect: true }), true);
    driver.add([R(), R(), W()], 'x', { indirect: true });
    expect(driver.freeDescriptors).toBe(3);
  });

  it('a fresh driver over a used ring area: init zero-fills ring and both event areas', () => {
    const mem = GuestMemory.create(0x10000);
    const layout = layoutPackedRing(0x1000, 3);
    mem.fill(0x1000, 16 * 3 + 16, 0xff);
    PackedDriver.init(mem, layout);
    const b = new Uint8Array(16 * 3 + 8);
    mem.read(0x1000, b);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(mem.readU8(0x1000 + 16 * 3 + 8)).toBe(0xff); // nothing past the footprint
  });
});

describe('PackedDriver.publish (Linux virtqueue_kick_prepare_packed)', () => {
  it('ENABLE kicks, DISABLE does not, any other non-DESC value kicks', () => {
    const { driver, setDeviceEvent } = rig(4);
    driver.add([R()], 'a');
    expect(driver.publish()).toBe(true);
    setDeviceEvent(0, 1);
    driver.add([R()], 'b');
    expect(driver.publish()).toBe(false);
    setDeviceEvent(0, 0x0101); // reserved bits: not exactly DISABLE
    expect(driver.publish()).toBe(true);
  });

  it('DESC: kicks iff the event slot lies in the descriptors added since the last publish, with the wrap bit moving it a lap back', () => {
    const { driver, setDeviceEvent, use } = rig(4, F({ eventIdx: true }));
    setDeviceEvent(0x8001, 2); // slot 1, wrap 1
    driver.add([R()], 'a'); // slot 0
    expect(driver.publish()).toBe(false);
    driver.add([R(), R()], 'b'); // slots 1, 2
    expect(driver.publish()).toBe(true);
    expect(driver.publish()).toBe(false); // nothing new
    // complete everything so the ring can wrap
    use(0, 0, 0, true);
    use(1, 1, 0, true);
    const o = out();
    while (driver.reclaim(o));
    setDeviceEvent(0x8003, 2); // slot 3, wrap 1
    driver.add([R(), R()], 'c'); // slots 3 and 0 (wrap 0 afterwards)
    expect(driver.positions()).toMatchObject({ nextAvail: 1, availWrap: false });
    expect(driver.publish()).toBe(true);
    setDeviceEvent(0x0003, 2); // slot 3 of the lap the driver is on now: not reached yet
    driver.add([R()], 'd'); // slot 1
    expect(driver.publish()).toBe(false);
  });
});

describe('PackedDriver.reclaim', () => {
  it('reads AVAIL == USED == used wrap only, reports len only with WRITE, skips the buffer\u2019s descriptor count', () => {
    const { driver, use, mem, layout } = rig(3);
    const o = out();
    driver.add([R(), W()], 'two'); // slots 0,1
    driver.add([W()], 'one'); // slot 2
    expect(driver.reclaim(o)).toBe(false);
    mem.writeU16(layout.desc + 14, 0x8000); // USED only: not a used descriptor
    expect(driver.hasUsed()).toBe(false);
    use(0, 0, 7, true);
    expect(driver.hasUsed()).toBe(true);
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'two', len: 7, id: 0 });
    expect(driver.positions()).toMatchObject({ nextUsed: 2, usedWrap: true });
    use(2, 1, 0, true);
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'one', len: 0, id: 1 });
    expect(driver.positions()).toMatchObject({ nextUsed: 0, usedWrap: false });
    expect(driver.freeDescriptors).toBe(3);
  });

  it('throws RingError bad-id for a used id the driver does not have out, without moving', () => {
    const { driver, use } = rig(3);
    driver.add([R()], 'a');
    use(0, 2, 0, true);
    expect(() => driver.reclaim(out())).toThrow(expect.objectContaining({ code: 'bad-id' }));
    use(0, 9, 0, true);
    expect(() => driver.reclaim(out())).toThrow(RingError);
    expect(driver.positions()).toMatchObject({ nextUsed: 0, usedWrap: true });
    expect(driver.inFlight).toBe(1);
  });

  it('IN_ORDER: one used descriptor for id k completes every earlier buffer, skipped ones with their full writable length', () => {
    const { driver, use } = rig(8, F({ inOrder: true }));
    driver.add([R(), W(0x9000, 100)], 'a'); // id 0, slots 0-1
    driver.add([W(0x9000, 50), W(0x9000, 25)], 'b'); // id 1, slots 2-3
    driver.add([R()], 'c'); // id 2, slot 4
    use(0, 1, 60, true); // the device wrote one used descriptor for a and b, at a's slot
    const o = out();
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'a', len: 100, id: 0 });
    expect(driver.hasUsed()).toBe(true); // b is implied
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'b', len: 60, id: 1 });
    expect(driver.reclaim(o)).toBe(false);
    expect(driver.positions()).toMatchObject({ nextUsed: 4 });
    use(4, 2, 0, true);
    expect(driver.reclaim(o)).toBe(true);
    expect(o).toEqual({ token: 'c', len: 0, id: 2 });
  });
});

describe('PackedDriver notifications (driver event area)', () => {
  it('enableNotifications re-checks for a used buffer after enabling', () => {
    const { driver, use, mem, layout } = rig(4, F({ eventIdx: true }));
    driver.add([R()], 'a');
    driver.disableNotifications();
    expect(mem.readU16(layout.driverEvent + 2)).toBe(1);
    use(0, 0, 0, true);
    expect(driver.enableNotifications()).toBe(true);
    expect([mem.readU16(layout.driverEvent), mem.readU16(layout.driverEvent + 2)]).toEqual([0x8000, 2]);
    driver.reclaim(out());
    expect(driver.enableNotifications()).toBe(false);
    expect(mem.readU16(layout.driverEvent)).toBe(0x8001);
  });

  it('setUsedEvent needs EVENT_IDX and a u16', () => {
    expect(() => rig(4).driver.setUsedEvent(1)).toThrow(TypeError);
    const { driver } = rig(4, F({ eventIdx: true }));
    expect(() => driver.setUsedEvent(0x10000)).toThrow(RangeError);
    expect(() => driver.setUsedEvent(-1)).toThrow(RangeError);
  });
});
