import { describe, expect, it } from 'vitest';
import { RingError, RingFullError } from '../src/ring/errors.ts';
import type { RingFeatures, Segment } from '../src/ring/types.ts';
import { DESC, DISABLE, ENABLE, PackedRingModel, deviceMustNotify, driverMustKick, needEventU16 } from './packed-ring.ts';

const F = (p: Partial<RingFeatures> = {}): RingFeatures => ({ indirect: false, eventIdx: false, inOrder: false, ...p });
const R: Segment = { addr: 0x1000, len: 10, writable: false };
const W: Segment = { addr: 0x2000, len: 20, writable: true };

describe('notification decisions', () => {
  it('needEvent: is the event index in [old, new)?', () => {
    expect(needEventU16(5, 6, 5)).toBe(true);
    expect(needEventU16(6, 6, 5)).toBe(false);
    expect(needEventU16(4, 6, 5)).toBe(false);
    expect(needEventU16(0xffff, 1, 0xfffe)).toBe(true); // across the u16 wrap
    expect(needEventU16(-1, 1, -2)).toBe(true); // negative offsets are taken mod 2^16
  });

  it('driverMustKick follows Linux: non-DESC → kick unless DISABLE; DESC → event in the window, a lap back if its wrap differs', () => {
    expect(driverMustKick({ offWrap: 0, flags: ENABLE }, 4, 1, true, 0)).toBe(true);
    expect(driverMustKick({ offWrap: 0, flags: DISABLE }, 4, 1, true, 1)).toBe(false);
    expect(driverMustKick({ offWrap: 0, flags: 3 }, 4, 1, true, 1)).toBe(true);
    // added slots 1,2 (wrap 1): event slot 2 → kick; slot 3 → no
    expect(driverMustKick({ offWrap: 0x8002, flags: DESC }, 4, 3, true, 2)).toBe(true);
    expect(driverMustKick({ offWrap: 0x8003, flags: DESC }, 4, 3, true, 2)).toBe(false);
    // added slots 3 (wrap 1) and 0 (wrap 0), driver now at slot 1 wrap 0: slot 3 of wrap 1 is in the window
    expect(driverMustKick({ offWrap: 0x8003, flags: DESC }, 4, 1, false, 2)).toBe(true);
    expect(driverMustKick({ offWrap: 0x0003, flags: DESC }, 4, 1, false, 2)).toBe(false);
  });

  it('deviceMustNotify follows DPDK: first time always, old a lap back when new <= old, DISABLE/ENABLE under EVENT_IDX still record', () => {
    const off = { offWrap: 0x8003, flags: DESC };
    expect(deviceMustNotify(off, true, 4, 1, true, { used: 0, valid: false })).toEqual({ notify: true, used: 1, valid: true });
    expect(deviceMustNotify(off, true, 4, 2, true, { used: 1, valid: true }).notify).toBe(false);
    expect(deviceMustNotify(off, true, 4, 0, false, { used: 2, valid: true }).notify).toBe(true); // wrote 2, 3
    // a whole lap: new == old means the window is the whole ring
    expect(deviceMustNotify({ offWrap: 0x0001, flags: DESC }, true, 4, 2, false, { used: 2, valid: true }).notify).toBe(true);
    expect(deviceMustNotify({ offWrap: 0, flags: DISABLE }, true, 4, 3, true, { used: 1, valid: true })).toEqual({ notify: false, used: 3, valid: true });
    // without EVENT_IDX the signalled state is untouched
    expect(deviceMustNotify({ offWrap: 0, flags: DESC }, false, 4, 3, true, { used: 1, valid: false })).toEqual({ notify: true, used: 1, valid: false });
  });
});

describe('PackedRingModel', () => {
  it('marks slots available with AVAIL = wrap, USED = !wrap, and toggles the wrap after the last slot', () => {
    const m = new PackedRingModel<string>(3, F());
    m.add([R, W], 'a');
    m.add([R], 'b');
    expect(m.slots.map((s) => [s.avail, s.used])).toEqual([
      [true, false],
      [true, false],
      [true, false],
    ]);
    expect([m.nextAvail, m.availWrap]).toEqual([0, false]);
    m.pop();
    m.push(0, 0);
    m.flush();
    m.reclaim();
    m.add([R], 'c'); // slot 0 on lap 2: AVAIL=0, USED=1
    expect([m.slots[0].avail, m.slots[0].used]).toEqual([false, true]);
    expect([m.nextAvail, m.availWrap]).toEqual([1, false]);
  });

  it('pops in ring order and refuses to pop what is not available', () => {
    const m = new PackedRingModel<string>(4, F());
    expect(m.pop()).toBeNull();
    m.add([R], 'a');
    m.add([R, W], 'b');
    expect(m.pop()).toMatchObject({ id: 0, ringDescriptors: 1 });
    expect(m.pop()).toMatchObject({ id: 1, ringDescriptors: 2, segments: [R, W] });
    expect(m.pop()).toBeNull();
  });

  it('writes used slots with AVAIL = USED = the device wrap, one per buffer, at the device\u2019s used position', () => {
    const m = new PackedRingModel<string>(3, F());
    m.add([R, W], 'a');
    m.add([W], 'b');
    m.pop();
    m.pop();
    m.push(1, 5);
    m.push(0, 0);
    m.flush();
    expect(m.slots[0]).toMatchObject({ avail: true, used: true, usedId: 1, usedLen: 5, usedWrite: true });
    expect(m.slots[1]).toMatchObject({ avail: true, used: true, usedId: 0, usedWrite: false });
    expect(m.saveState()).toMatchObject({ lastUsedIdx: 0, usedWrap: false });
    expect(m.reclaim()).toEqual({ token: 'b', len: 5, id: 1 });
    expect(m.reclaim()).toEqual({ token: 'a', len: 0, id: 0 });
    expect(m.reclaim()).toBeNull();
    expect(m.freeDescriptors).toBe(3);
  });

  it('IN_ORDER: folds fully used buffers into the next used descriptor; the driver reports them with their writable length', () => {
    const m = new PackedRingModel<string>(4, F({ inOrder: true }));
    m.add([W], 'a');
    m.add([W], 'b');
    m.add([R], 'c');
    m.pop();
    m.pop();
    m.pop();
    expect(() => m.push(1, 0)).toThrow(RingError);
    m.push(0, 20);
    m.push(1, 20);
    m.push(2, 0);
    m.flush();
    expect(m.touched).toEqual([0]);
    expect(m.slots[0]).toMatchObject({ usedId: 2 });
    expect([m.reclaim(), m.reclaim(), m.reclaim(), m.reclaim()]).toEqual([
      { token: 'a', len: 20, id: 0 },
      { token: 'b', len: 20, id: 1 },
      { token: 'c', len: 0, id: 2 },
      null,
    ]);
  });

  it('refuses a full ring with RingFullError and malformed buffers with TypeError', () => {
    const m = new PackedRingModel<string>(2, F());
    m.add([R, R], 'a');
    expect(() => m.add([R], 'b')).toThrow(RingFullError);
    expect(() => m.add([W, R], 'b')).toThrow(TypeError);
    expect(() => m.add([], 'b')).toThrow(TypeError);
  });

  it('event areas: enable/disable on both sides, DESC offsets carry the wrap bit', () => {
    const m = new PackedRingModel<string>(4, F({ eventIdx: true }));
    m.enableKicks();
    expect(m.deviceEvent).toEqual({ offWrap: 0x8000, flags: DESC });
    m.disableNotifications();
    expect(m.driverEvent.flags).toBe(DISABLE);
    expect(m.enableNotifications()).toBe(false);
    expect(m.driverEvent).toEqual({ offWrap: 0x8000, flags: DESC });
    expect(() => new PackedRingModel<string>(4, F()).setUsedEvent(1)).toThrow(TypeError);
  });

  it('saveState excludes unflushed pushes; restoreState forgets what the device held', () => {
    const m = new PackedRingModel<string>(4, F());
    m.add([R], 'a');
    m.add([R], 'b');
    m.pop();
    m.pop();
    m.push(0, 0);
    expect(m.saveState()).toMatchObject({ lastAvailIdx: 2, lastUsedIdx: 0 });
    m.restoreState({ lastUsedIdx: 2 });
    expect(m.deviceInFlight()).toEqual([]);
    expect(m.pendingUsed).toBe(0);
    expect(() => m.push(1, 0)).toThrow(RingError);
  });
});
