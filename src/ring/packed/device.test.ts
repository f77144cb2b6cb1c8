import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../memory/index.ts';
import { RingError } from '../errors.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../types.ts';
import { layoutPackedRing } from './layout.ts';
import { PackedDriver } from './driver.ts';
import { PackedDevice, decodePackedBase, dpdkGetPackedBase, dpdkSetPackedBase, encodePackedBase } from './device.ts';

const F = (p: Partial<RingFeatures> = {}): RingFeatures => ({ indirect: false, eventIdx: false, inOrder: false, ...p });
const R = (len = 16): Segment => ({ addr: 0x8000, len, writable: false });
const W = (len = 16): Segment => ({ addr: 0x9000, len, writable: true });

function rig(size: number, features = F(), opts: { notifyFirstFlush?: boolean } = {}) {
  const mem = GuestMemory.create(0x40000);
  const layout = layoutPackedRing(0x1000, size);
  PackedDriver.init(mem, layout);
  const driver = new PackedDriver<string>(mem, layout, features);
  const device = new PackedDevice(mem, layout, features, opts);
  const chain = new DescriptorChain(16);
  const setDriverEvent = (offWrap: number, flags: number) => {
    mem.writeU16(layout.driverEvent, offWrap);
    mem.writeU16(layout.driverEvent + 2, flags);
  };
  return { mem, layout, driver, device, chain, setDriverEvent };
}

const out = (): UsedBuffer<string> => ({ token: '', len: -1, id: -1 });

describe('PackedDevice.pop / push / flush', () => {
  it('pops in ring order, completes out of order, and each used descriptor goes where the device writes next', () => {
    const { driver, device, chain, mem, layout } = rig(6);
    driver.add([R(), W()], 'a'); // id 0, slots 0-1
    driver.add([R()], 'b'); // id 1, slot 2
    driver.add([W(), W(), W()], 'c'); // id 2, slots 3-5
    const popped: number[] = [];
    while (device.pop(chain)) popped.push(chain.id);
    expect(popped).toEqual([0, 1, 2]);
    device.push(2, 48); // c first: lands in slot 0, next used slot 3
    device.push(0, 16); // a: slot 3, next 5
    device.push(1, 0); // b: slot 5, next 6 = 0 (wrap)
    expect(device.flush()).toBe(true);
    expect([0, 3, 5].map((s) => mem.readU16(layout.desc + 16 * s + 12))).toEqual([2, 0, 1]);
    expect(device.saveState()).toMatchObject({ lastUsedIdx: 0, usedWrap: false, lastAvailIdx: 0, availWrap: false });
    const o = out();
    const got: string[] = [];
    while (driver.reclaim(o)) got.push(`${o.token}:${o.len}`);
    expect(got).toEqual(['c:48', 'a:16', 'b:0']);
  });

  it('push refuses an id the device does not hold, or (IN_ORDER) one that is not the oldest', () => {
    const { driver, device, chain } = rig(4);
    expect(() => device.push(0, 0)).toThrow(expect.objectContaining({ code: 'used-overflow' }));
    driver.add([R()], 'a');
    device.pop(chain);
    device.push(0, 0);
    expect(() => device.push(0, 0)).toThrow(RingError); // twice
    expect(() => device.push(7, 0)).toThrow(RingError);
    expect(() => device.push(1.5, 0)).toThrow(RingError);
    const io = rig(4, F({ inOrder: true }));
    io.driver.add([R()], 'a');
    io.driver.add([R()], 'b');
    io.device.pop(io.chain);
    io.device.pop(io.chain);
    expect(() => io.device.push(1, 0)).toThrow(expect.objectContaining({ code: 'used-overflow' }));
    io.device.push(0, 0);
    io.device.push(1, 0);
  });

  it('flush with nothing pushed returns false and writes nothing', () => {
    const { device } = rig(4);
    expect(device.flush()).toBe(false);
  });

  it('IN_ORDER: a run of fully used buffers is one used descriptor (id of the last) at the run\u2019s first slot', () => {
    const { driver, device, chain, mem, layout } = rig(8, F({ inOrder: true }));
    driver.add([R(), W(10)], 'a'); // id 0 slots 0-1, writable 10
    driver.add([W(20)], 'b'); // id 1 slot 2
    driver.add([W(30)], 'c'); // id 2 slot 3
    driver.add([R()], 'd'); // id 3 slot 4
    while (device.pop(chain));
    device.push(0, 10); // full
    device.push(1, 5); // partial: ends the run
    device.push(2, 30); // full
    device.push(3, 0); // full (no writable part), last
    device.flush();
    const slot = (s: number) => ({ id: mem.readU16(layout.desc + 16 * s + 12), flags: mem.readU16(layout.desc + 16 * s + 14) });
    expect(slot(0)).toEqual({ id: 1, flags: 0x8082 }); // a+b folded, b's len 5
    expect(slot(3)).toEqual({ id: 3, flags: 0x8080 }); // c+d folded, d's len 0: no WRITE
    expect(slot(2).flags & 0x8080).toBe(0x80); // b's own slot still holds its available descriptor
    const o = out();
    const got: string[] = [];
    while (driver.reclaim(o)) got.push(`${o.token}:${o.len}`);
    expect(got).toEqual(['a:10', 'b:5', 'c:30', 'd:0']);
  });
});

describe('PackedDevice notify decision (DPDK vhost_vring_call_packed)', () => {
  function cycle(r: ReturnType<typeof rig>, n = 1): boolean {
    for (let i = 0; i < n; i++) r.driver.add([R()], 'x');
    while (r.device.pop(r.chain)) r.device.push(r.chain.id, 0);
    const notify = r.device.flush();
    const o = out();
    while (r.driver.reclaim(o));
    return notify;
  }

  it('without EVENT_IDX: notify unless the driver flags are exactly DISABLE', () => {
    const r = rig(4);
    expect(cycle(r)).toBe(true);
    r.setDriverEvent(0, 1);
    expect(cycle(r)).toBe(false);
    r.setDriverEvent(0, 2); // DESC without EVENT_IDX is still "not DISABLE"
    expect(cycle(r)).toBe(true);
    r.setDriverEvent(0, 3);
    expect(cycle(r)).toBe(true);
  });

  it('EVENT_IDX: the first flush after start notifies even when the event slot was not crossed, unless notifyFirstFlush is false', () => {
    const r = rig(4, F({ eventIdx: true }));
    r.setDriverEvent(0x8003, 2);
    expect(cycle(r)).toBe(true);
    expect(cycle(r)).toBe(false);
    const q = rig(4, F({ eventIdx: true }), { notifyFirstFlush: false });
    q.setDriverEvent(0x8003, 2);
    expect(cycle(q)).toBe(false);
    expect(q.device.saveState()).toMatchObject({ signalledUsedValid: true, signalledUsed: 1 });
  });

  it('EVENT_IDX DESC: notifies when the write window [old, new) covers the event slot, with lap adjustments', () => {
    const r = rig(4, F({ eventIdx: true }));
    r.setDriverEvent(0, 0);
    cycle(r); // first flush; signalled = 1
    r.setDriverEvent(0x8002, 2); // slot 2, wrap 1
    expect(cycle(r)).toBe(false); // wrote slot 1
    expect(cycle(r)).toBe(true); // wrote slot 2
    // event at slot 1 of wrap 0; window slot 3 (wrap 1) then slots 0,1 (wrap 0)
    r.setDriverEvent(0x0001, 2);
    expect(cycle(r)).toBe(false); // slot 3
    expect(cycle(r, 2)).toBe(true); // slots 0, 1 of the next lap
    // a whole lap since the last signal (new == old): the window is the whole ring
    r.setDriverEvent(0x0003, 2);
    expect(r.device.saveState()).toMatchObject({ lastUsedIdx: 2, signalledUsed: 2, usedWrap: false });
    expect(cycle(r, 4)).toBe(true);
    // DISABLE / ENABLE under EVENT_IDX still move signalled_used
    r.setDriverEvent(0, 1);
    expect(cycle(r)).toBe(false);
    expect(r.device.saveState().signalledUsed).toBe(3);
  });
});

describe('PackedDevice kicks (device event area)', () => {
  it('enableKicks / disableKicks write the device event area; the driver\u2019s publish follows it', () => {
    const r = rig(4, F({ eventIdx: true }));
    r.device.disableKicks();
    r.driver.add([R()], 'a');
    expect(r.driver.publish()).toBe(false);
    r.device.enableKicks(); // off_wrap = slot 0, wrap 1: slot 0 was already made available
    expect([r.mem.readU16(r.layout.deviceEvent), r.mem.readU16(r.layout.deviceEvent + 2)]).toEqual([0x8000, 2]);
    r.driver.add([R()], 'b'); // slot 1
    expect(r.driver.publish()).toBe(false);
    while (r.device.pop(r.chain));
    r.device.enableKicks(); // slot 2
    r.driver.add([R()], 'c');
    expect(r.driver.publish()).toBe(true);
  });
});

describe('PackedDevice state', () => {
  it('saveState reports the published used position; restoreState forgets what was in flight', () => {
    const r = rig(4);
    r.driver.add([R(), R()], 'a');
    r.driver.add([R()], 'b');
    r.device.pop(r.chain);
    r.device.pop(r.chain);
    r.device.push(0, 0);
    expect(r.device.saveState()).toMatchObject({ lastAvailIdx: 3, lastUsedIdx: 0, usedWrap: true }); // push not flushed
    r.device.flush();
    expect(r.device.saveState()).toMatchObject({ lastAvailIdx: 3, lastUsedIdx: 2 });
    expect(r.device.inFlight).toBe(1);
    r.device.restoreState({ lastAvailIdx: 3, availWrap: true, lastUsedIdx: 3, usedWrap: true });
    expect(r.device.inFlight).toBe(0);
    expect(() => r.device.push(1, 0)).toThrow(RingError);
  });

  it('constructs from saved state, and refuses indices that are not ring slots', () => {
    const r = rig(5);
    const d = new PackedDevice(r.mem, r.layout, F(), {}, { lastAvailIdx: 4, availWrap: false, lastUsedIdx: 2, usedWrap: true });
    expect(d.saveState()).toEqual({ lastAvailIdx: 4, availWrap: false, lastUsedIdx: 2, usedWrap: true, signalledUsedValid: false, signalledUsed: 0 });
    expect(() => new PackedDevice(r.mem, r.layout, F(), {}, { lastAvailIdx: 5 })).toThrow(RangeError);
    expect(() => r.device.restoreState({ lastUsedIdx: -1 })).toThrow(RangeError);
    expect(() => r.device.restoreState({ signalledUsed: 0x10000 })).toThrow(RangeError);
    expect(r.device.saveState().lastAvailIdx).toBe(0);
  });

  it('a device stopped and restarted from saveState() continues the same ring', () => {
    const r = rig(3);
    const o = out();
    for (let i = 0; i < 7; i++) {
      r.driver.add([R()], `x${i}`);
      const d = new PackedDevice(r.mem, r.layout, F(), {}, r.device.saveState());
      expect(d.pop(r.chain)).toBe(true);
      d.push(r.chain.id, 0);
      d.flush();
      r.device = d;
      expect(r.driver.reclaim(o)).toBe(true);
      expect(o.token).toBe(`x${i}`);
    }
  });
});

describe('packed vring base encoding (fact sheet §5.6)', () => {
  it('newer spec / QEMU: avail in bits 0-15, used in bits 16-31, round trip', () => {
    expect(encodePackedBase(0, true)).toBe(0x8000_8000);
    expect(encodePackedBase(5, false, 3, true)).toBe(0x8003_0005);
    expect(encodePackedBase(0x7fff, true, 0x7fff, true)).toBe(0xffff_ffff);
    expect(decodePackedBase(0x8003_0005)).toEqual({ lastAvailIdx: 5, availWrap: false, lastUsedIdx: 3, usedWrap: true });
    for (const [a, aw, u, uw] of [
      [0, true, 0, true],
      [1234, false, 17, true],
      [32767, true, 0, false],
    ] as const) {
      expect(decodePackedBase(encodePackedBase(a, aw, u, uw))).toEqual({ lastAvailIdx: a, availWrap: aw, lastUsedIdx: u, usedWrap: uw });
    }
    expect(() => encodePackedBase(0x8000, true)).toThrow(RangeError);
    expect(() => decodePackedBase(2 ** 32)).toThrow(RangeError);
    expect(() => decodePackedBase(-1)).toThrow(RangeError);
  });

  it('DPDK 22.11 GET returns only the avail half (bits 16-31 zero), whatever the used position', () => {
    expect(dpdkGetPackedBase({ lastAvailIdx: 0, availWrap: true })).toBe(0x8000); // what virtio-user sends initially
    const state = { lastAvailIdx: 9, availWrap: false, lastUsedIdx: 4, usedWrap: true, signalledUsedValid: true, signalledUsed: 4 };
    expect(dpdkGetPackedBase(state)).toBe(9);
    expect(dpdkGetPackedBase(state)).not.toBe(encodePackedBase(9, false, 4, true));
  });

  it('DPDK 22.11 SET reads bits 0-15 only and puts the used position at the avail position', () => {
    expect(dpdkSetPackedBase(0x8003_0005)).toEqual({ lastAvailIdx: 5, availWrap: false, lastUsedIdx: 5, usedWrap: false });
    expect(dpdkSetPackedBase(0x8000)).toEqual({ lastAvailIdx: 0, availWrap: true, lastUsedIdx: 0, usedWrap: true });
    // the QEMU consequence: after a DPDK GET, QEMU sends back a used half of 0/0, which DPDK ignores
    const qemuEcho = decodePackedBase(dpdkGetPackedBase({ lastAvailIdx: 7, availWrap: true }));
    expect(qemuEcho).toEqual({ lastAvailIdx: 7, availWrap: true, lastUsedIdx: 0, usedWrap: false });
    expect(dpdkSetPackedBase(encodePackedBase(7, true, 0, false))).toEqual({ lastAvailIdx: 7, availWrap: true, lastUsedIdx: 7, usedWrap: true });
  });

  it('a device restored from a DPDK base with buffers in flight forgets them (used jumps to avail)', () => {
    const r = rig(4);
    r.driver.add([R()], 'a');
    r.driver.add([R()], 'b');
    r.device.pop(r.chain);
    r.device.pop(r.chain);
    r.device.push(0, 0);
    r.device.flush();
    const d = new PackedDevice(r.mem, r.layout, F(), {}, dpdkSetPackedBase(dpdkGetPackedBase(r.device.saveState())));
    expect(d.saveState()).toMatchObject({ lastAvailIdx: 2, lastUsedIdx: 2 });
    // id 1 was in flight: the new device does not know it
    expect(() => d.push(1, 0)).toThrow(RingError);
  });
});
