import { describe, expect, it } from 'vitest';
import { GuestMemory, DirtyLog } from '../src/memory/index.ts';
import { DescriptorChain, type RingFeatures, type UsedBuffer } from '../src/ring/types.ts';
import { layoutPackedRing, packedRingFootprint, PackedDriver, PackedDevice } from '../src/ring/packed/index.ts';

// Byte layout of the packed ring, checked against an oracle written independently of
// the ring code: offsets are computed here from virtio 1.2 "struct pvirtq_desc"
// (addr le64 @0, len le32 @8, id le16 @12, flags le16 @14) and "struct
// pvirtq_event_suppress" (off_wrap le16 @0, flags le16 @2), and bytes are written and
// read with a plain DataView over the backing buffer.

const AVAIL = 0x80;
const USED = 0x8000;
const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;

const F = (p: Partial<RingFeatures> = {}): RingFeatures => ({ indirect: false, eventIdx: false, inOrder: false, ...p });

/** A ring of `size` at guest address `base` inside one region at `regionGpa`, with an oracle view. */
function rig(size: number, opts: { base?: number; regionGpa?: number; features?: RingFeatures; memSize?: number; indirect?: boolean } = {}) {
  const regionGpa = opts.regionGpa ?? 0x10000;
  const base = opts.base ?? regionGpa + 0x100;
  const memSize = opts.memSize ?? Math.max(0x40000, 16 * size + 0x20000);
  const buffer = new SharedArrayBuffer(memSize);
  const mem = new GuestMemory([{ gpa: regionGpa, size: memSize, buffer }]);
  const dv = new DataView(buffer);
  const layout = layoutPackedRing(base, size);
  const features = opts.features ?? F();
  const indirectGpa = regionGpa + memSize - size * 4 * 16;
  const driver = new PackedDriver<string>(mem, layout, features, opts.indirect ? { indirectArea: { gpa: indirectGpa, perBuffer: 4 } } : {});
  const device = new PackedDevice(mem, layout, features);
  const o = (gpa: number) => gpa - regionGpa; // oracle: guest address → byte offset in the buffer
  const descAt = (i: number) => o(base) + 16 * i;
  const drvEv = o(base) + 16 * size;
  const devEv = drvEv + 4;
  const oracle = {
    desc(i: number) {
      const at = descAt(i);
      return { addr: dv.getBigUint64(at, true), len: dv.getUint32(at + 8, true), id: dv.getUint16(at + 12, true), flags: dv.getUint16(at + 14, true) };
    },
    setDesc(i: number, d: { addr: bigint | number; len: number; id: number; flags: number }) {
      const at = descAt(i);
      dv.setBigUint64(at, BigInt(d.addr), true);
      dv.setUint32(at + 8, d.len, true);
      dv.setUint16(at + 12, d.id, true);
      dv.setUint16(at + 14, d.flags, true);
    },
    driverEvent: () => ({ offWrap: dv.getUint16(drvEv, true), flags: dv.getUint16(drvEv + 2, true) }),
    deviceEvent: () => ({ offWrap: dv.getUint16(devEv, true), flags: dv.getUint16(devEv + 2, true) }),
    setDriverEvent(offWrap: number, flags: number) {
      dv.setUint16(drvEv, offWrap, true);
      dv.setUint16(drvEv + 2, flags, true);
    },
    setDeviceEvent(offWrap: number, flags: number) {
      dv.setUint16(devEv, offWrap, true);
      dv.setUint16(devEv + 2, flags, true);
    },
    dv,
    o,
  };
  return { mem, layout, driver, device, oracle, regionGpa, indirectGpa, chain: new DescriptorChain(64) };
}

const used = (): UsedBuffer<string> => ({ token: '', len: 0, id: 0 });

describe('packed ring placement', () => {
  it.each([1, 3, 1025, 32768])('size %i: ring at base, driver area at base+16·size, device area 4 bytes later', (size) => {
    for (const base of [0, 0x1000, 0x12340]) {
      const l = layoutPackedRing(base, size);
      expect(l).toEqual({ size, desc: base, driverEvent: base + 16 * size, deviceEvent: base + 16 * size + 4 });
      expect(l.desc % 16).toBe(0);
      expect(l.driverEvent % 4).toBe(0);
      expect(l.deviceEvent % 4).toBe(0);
      expect(packedRingFootprint(size)).toBe(16 * size + 8);
    }
  });

  it('refuses sizes outside 1..32768 and a base that is not 16-aligned', () => {
    for (const bad of [0, -1, 32769, 2.5, NaN]) expect(() => layoutPackedRing(0, bad)).toThrow(RangeError);
    expect(() => layoutPackedRing(8, 4)).toThrow(RangeError);
    expect(() => packedRingFootprint(0)).toThrow(RangeError);
  });
});

describe('available descriptors as the driver writes them', () => {
  it('addr le64, len le32, id le16 in every element, flags with NEXT/WRITE and AVAIL=1 USED=0 on the first lap', () => {
    const { driver, oracle } = rig(8);
    const hi = 0x1_2345_6780; // above 4 GiB: both halves of the le64 must be right
    const id = driver.add(
      [
        { addr: hi, len: 100, writable: false },
        { addr: 0x20000, len: 0x10203, writable: true },
        { addr: 0x30000, len: 7, writable: true },
      ],
      'a',
    );
    expect(id).toBe(0);
    expect(oracle.desc(0)).toEqual({ addr: BigInt(hi), len: 100, id: 0, flags: AVAIL | NEXT });
    expect(oracle.desc(1)).toEqual({ addr: 0x20000n, len: 0x10203, id: 0, flags: AVAIL | NEXT | WRITE });
    expect(oracle.desc(2)).toEqual({ addr: 0x30000n, len: 7, id: 0, flags: AVAIL | WRITE });
    expect(oracle.desc(3).flags).toBe(0);
  });

  it('after the driver wraps: AVAIL=0 USED=1, and a chain across the end changes wrap mid-chain', () => {
    const size = 3;
    const { driver, device, oracle, chain } = rig(size);
    const out = used();
    const seg = (n: number) => Array.from({ length: n }, (_, i) => ({ addr: 0x20000 + 0x100 * i, len: 16, writable: false }));
    driver.add(seg(2), 'a'); // slots 0,1 (wrap 1)
    while (device.pop(chain)) device.push(chain.id, 0);
    device.flush();
    while (driver.reclaim(out));
    driver.add(seg(2), 'b'); // slot 2 (wrap 1) then slot 0 (wrap 0)
    expect(oracle.desc(2).flags).toBe(AVAIL | NEXT);
    expect(oracle.desc(0).flags).toBe(USED);
    expect(driver.positions()).toEqual({ nextAvail: 1, availWrap: false, nextUsed: 2, usedWrap: true });
  });

  it('indirect: one ring descriptor with INDIRECT, addr = the id\u2019s table, len = 16·n; the table holds addr/len/WRITE', () => {
    const { driver, oracle, indirectGpa } = rig(8, { features: F({ indirect: true }), indirect: true });
    driver.add([{ addr: 0x20000, len: 1, writable: false }], 'x'); // id 0, direct
    const id = driver.add(
      [
        { addr: 0x21000, len: 10, writable: false },
        { addr: 0x22000, len: 20, writable: true },
      ],
      'y',
      { indirect: true },
    );
    expect(id).toBe(1);
    const table = indirectGpa + id * 4 * 16;
    expect(oracle.desc(1)).toEqual({ addr: BigInt(table), len: 32, id: 1, flags: AVAIL | INDIRECT });
    const t = oracle.o(table);
    expect([oracle.dv.getBigUint64(t, true), oracle.dv.getUint32(t + 8, true), oracle.dv.getUint16(t + 14, true)]).toEqual([0x21000n, 10, 0]);
    expect([oracle.dv.getBigUint64(t + 16, true), oracle.dv.getUint32(t + 24, true), oracle.dv.getUint16(t + 30, true)]).toEqual([0x22000n, 20, WRITE]);
  });
});

describe('the device reads what a driver wrote byte by byte', () => {
  it('walks a chain written by the oracle, taking the id from the LAST descriptor', () => {
    const { device, oracle, chain } = rig(4);
    oracle.setDesc(0, { addr: 0x20000, len: 5, id: 3, flags: AVAIL | NEXT });
    oracle.setDesc(1, { addr: 0x20100, len: 6, id: 2, flags: AVAIL | NEXT | WRITE });
    oracle.setDesc(2, { addr: 0x20200, len: 7, id: 1, flags: AVAIL | WRITE });
    expect(device.pop(chain)).toBe(true);
    expect(chain.id).toBe(1);
    expect(chain.ringDescriptors).toBe(3);
    expect(chain.segments()).toEqual([
      { addr: 0x20000, len: 5, writable: false },
      { addr: 0x20100, len: 6, writable: true },
      { addr: 0x20200, len: 7, writable: true },
    ]);
    expect([chain.readableBytes, chain.writableBytes]).toEqual([5, 13]);
    expect(device.saveState().lastAvailIdx).toBe(3);
  });

  it('AVAIL/USED against the device wrap: wrap-1 slots are available only as A=1 U=0, wrap-0 slots only as A=0 U=1', () => {
    const { device, oracle, chain } = rig(2);
    for (const flags of [0, USED, AVAIL | USED]) {
      oracle.setDesc(0, { addr: 0x20000, len: 1, id: 0, flags });
      expect(device.pop(chain), `flags 0x${flags.toString(16)}`).toBe(false);
    }
    oracle.setDesc(0, { addr: 0x20000, len: 1, id: 0, flags: AVAIL });
    oracle.setDesc(1, { addr: 0x20000, len: 1, id: 1, flags: AVAIL });
    expect(device.pop(chain) && device.pop(chain)).toBe(true);
    device.push(0, 0);
    device.push(1, 0);
    device.flush();
    // second lap: the device now expects A=0 U=1
    expect(device.saveState()).toMatchObject({ lastAvailIdx: 0, availWrap: false });
    oracle.setDesc(0, { addr: 0x20000, len: 1, id: 0, flags: AVAIL });
    expect(device.pop(chain)).toBe(false);
    oracle.setDesc(0, { addr: 0x20000, len: 1, id: 0, flags: USED });
    expect(device.pop(chain)).toBe(true);
  });
});

describe('used descriptors as the device writes them', () => {
  it('id @12, len @8, flags AVAIL=USED=wrap plus WRITE iff len > 0; addr left as the driver wrote it; first lap then second', () => {
    const size = 2;
    const { driver, device, oracle, chain } = rig(size);
    const out = used();
    driver.add([{ addr: 0x20000, len: 64, writable: true }], 'a');
    driver.add([{ addr: 0x20100, len: 64, writable: false }], 'b');
    device.pop(chain);
    device.pop(chain);
    device.push(1, 0); // out of order: id 1 lands in slot 0
    device.push(0, 33);
    device.flush();
    // len is written even when 0 (DPDK writes it for every entry); it is reserved without WRITE
    expect(oracle.desc(0)).toEqual({ addr: 0x20000n, len: 0, id: 1, flags: AVAIL | USED });
    expect(oracle.desc(1)).toEqual({ addr: 0x20100n, len: 33, id: 0, flags: AVAIL | USED | WRITE });
    while (driver.reclaim(out));
    // second lap: used flags are A=0 U=0
    driver.add([{ addr: 0x20000, len: 64, writable: true }], 'c');
    device.pop(chain);
    device.push(chain.id, 9);
    device.flush();
    expect(oracle.desc(0)).toMatchObject({ id: chain.id, len: 9, flags: WRITE });
  });

  it('the driver reads used descriptors written by the oracle: len only when WRITE is set', () => {
    const { driver, oracle } = rig(4);
    const out = used();
    driver.add([{ addr: 0x20000, len: 64, writable: true }], 'a'); // id 0, slot 0
    driver.add([{ addr: 0x20000, len: 64, writable: true }], 'b'); // id 1, slot 1
    oracle.setDesc(0, { addr: 0, len: 1234, id: 1, flags: AVAIL | USED }); // no WRITE: len must read as 0
    oracle.setDesc(1, { addr: 0, len: 55, id: 0, flags: AVAIL | USED | WRITE });
    expect(driver.reclaim(out)).toBe(true);
    expect(out).toEqual({ token: 'b', len: 0, id: 1 });
    expect(driver.reclaim(out)).toBe(true);
    expect(out).toEqual({ token: 'a', len: 55, id: 0 });
    expect(driver.reclaim(out)).toBe(false);
  });

  it('marks the used descriptors\u2019 pages dirty for live migration, and only on flush', () => {
    const { mem, driver, device, chain, layout } = rig(300, { regionGpa: 0, base: 0 });
    const log = new DirtyLog(new SharedArrayBuffer(64));
    mem.setDirtyLog(log);
    for (let i = 0; i < 300; i++) driver.add([{ addr: 0x20000, len: 1, writable: false }], 'x');
    log.bitmap.fill(0);
    for (let i = 0; i < 300; i++) {
      device.pop(chain);
      device.push(chain.id, 0);
    }
    expect(log.dirtyPages()).toEqual([]);
    device.flush();
    // 300 descriptors · 16 bytes span pages 0 and 1 of the ring
    expect(log.dirtyPages()).toEqual([layout.desc >> 12, (layout.desc >> 12) + 1]);
  });
});

describe('event suppression areas', () => {
  it('device area: enableKicks writes off_wrap = last_avail | wrap<<15 and flags DESC under EVENT_IDX; DISABLE = 1; ENABLE = 0 without', () => {
    const size = 3;
    const { driver, device, oracle, chain } = rig(size, { features: F({ eventIdx: true }) });
    device.enableKicks();
    expect(oracle.deviceEvent()).toEqual({ offWrap: 0x8000, flags: 2 });
    for (let i = 0; i < 4; i++) {
      driver.add([{ addr: 0x20000, len: 1, writable: false }], 'x');
      device.pop(chain);
      device.push(chain.id, 0);
      device.flush();
      driver.reclaim(used());
    }
    device.enableKicks(); // device at slot 1 of its second lap (wrap 0)
    expect(oracle.deviceEvent()).toEqual({ offWrap: 1, flags: 2 });
    device.disableKicks();
    expect(oracle.deviceEvent()).toEqual({ offWrap: 1, flags: 1 });
    const plain = rig(3);
    plain.device.disableKicks();
    plain.device.enableKicks();
    expect(plain.oracle.deviceEvent()).toEqual({ offWrap: 0, flags: 0 });
  });

  it('driver area: enableNotifications writes off_wrap = next used | wrap<<15 and DESC; setUsedEvent writes the given off_wrap', () => {
    const { driver, oracle } = rig(5, { features: F({ eventIdx: true }) });
    driver.disableNotifications();
    expect(oracle.driverEvent()).toEqual({ offWrap: 0, flags: 1 });
    expect(driver.enableNotifications()).toBe(false);
    expect(oracle.driverEvent()).toEqual({ offWrap: 0x8000, flags: 2 });
    driver.setUsedEvent(0x0003);
    expect(oracle.driverEvent()).toEqual({ offWrap: 3, flags: 2 });
    const plain = rig(5);
    plain.driver.disableNotifications();
    plain.driver.enableNotifications();
    expect(plain.oracle.driverEvent()).toEqual({ offWrap: 0, flags: 0 });
  });

  it('the driver\u2019s kick decision reads the device area written by the oracle', () => {
    const { driver, oracle } = rig(4, { features: F({ eventIdx: true }) });
    const seg = [{ addr: 0x20000, len: 1, writable: false }];
    oracle.setDeviceEvent(0, 1); // DISABLE
    driver.add(seg, 'a');
    expect(driver.publish()).toBe(false);
    oracle.setDeviceEvent(0, 0); // ENABLE
    expect(driver.publish()).toBe(true); // Linux kicks even with nothing new
    oracle.setDeviceEvent(3, 3); // reserved flags value: not DESC, not DISABLE → kick
    expect(driver.publish()).toBe(true);
    // DESC at slot 2, wrap 1: the window of the next add is slot 1 only → no kick; then slot 2 → kick
    oracle.setDeviceEvent(0x8002, 2);
    driver.add(seg, 'b');
    expect(driver.publish()).toBe(false);
    driver.add(seg, 'c');
    expect(driver.publish()).toBe(true);
    // DESC at slot 3 but of the previous wrap (bit 15 = 0 while the driver is on wrap 1): already passed
    oracle.setDeviceEvent(0x0003, 2);
    driver.add(seg, 'd');
    expect(driver.publish()).toBe(false);
  });

  it('the device\u2019s notify decision reads the driver area written by the oracle', () => {
    const { driver, device, oracle, chain } = rig(4, { features: F({ eventIdx: true }) });
    const cycle = () => {
      driver.add([{ addr: 0x20000, len: 1, writable: false }], 'x');
      device.pop(chain);
      device.push(chain.id, 0);
      const notify = device.flush();
      driver.reclaim(used());
      return notify;
    };
    oracle.setDriverEvent(0x8003, 2); // DESC at slot 3
    expect(cycle()).toBe(true); // first flush after start always notifies (DPDK)
    expect(cycle()).toBe(false); // wrote slot 1
    expect(cycle()).toBe(false); // wrote slot 2
    expect(cycle()).toBe(true); // wrote slot 3
    oracle.setDriverEvent(0, 1); // DISABLE
    expect(cycle()).toBe(false);
    oracle.setDriverEvent(0, 0); // ENABLE
    expect(cycle()).toBe(true);
  });
});
