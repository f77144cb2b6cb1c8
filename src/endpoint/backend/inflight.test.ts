import { describe, expect, it } from 'vitest';
import { FrontendRequest as R, type Payload } from '../../protocol/index.ts';
import { MemFd } from '../../transport/index.ts';
import {
  checkInflightsPacked,
  checkInflightsSplit,
  inflightSizePacked,
  inflightSizeSplit,
  initInflightRegion,
  InflightPackedView,
  InflightSplitView,
} from './inflight.ts';
import { DeviceHarness, VIRTIO_USER_FEATURES, VIRTIO_USER_PACKED_FEATURES } from './testing.ts';

describe('inflight region layouts (fact sheet §5.5)', () => {
  it('per-queue sizes are rounded up to 64 bytes: split 16·Q + 16, packed 32·Q + 29', () => {
    expect(inflightSizeSplit(256)).toBe(4160);
    expect(inflightSizePacked(256)).toBe(8256);
    expect(inflightSizeSplit(1)).toBe(64);
    expect(inflightSizePacked(1)).toBe(64);
    expect(inflightSizeSplit(0)).toBe(64);
  });

  it('split fields sit at features 0, version 8, desc_num 10, last_inflight_io 12, used_idx 14, desc 16 + 16i', () => {
    const buf = new SharedArrayBuffer(inflightSizeSplit(4));
    const v = new InflightSplitView(buf, 0, buf.byteLength);
    v.version = 1;
    v.descNum = 4;
    v.lastInflightIo = 3;
    v.usedIdx = 0x1234;
    v.setInflight(2, 1);
    v.setNext(2, 9);
    v.setCounter(2, 0x1122334455667788n);
    const dv = new DataView(buf);
    expect([dv.getUint16(8, true), dv.getUint16(10, true), dv.getUint16(12, true), dv.getUint16(14, true)]).toEqual([1, 4, 3, 0x1234]);
    expect(dv.getUint8(16 + 32)).toBe(1);
    expect(dv.getUint16(16 + 32 + 6, true)).toBe(9);
    expect(dv.getBigUint64(16 + 32 + 8, true)).toBe(0x1122334455667788n);
  });

  it('packed fields: free_head 12, old_free_head 14, used_idx 16, old_used_idx 18, wraps 20/21, desc 32 + 32i', () => {
    const buf = new SharedArrayBuffer(inflightSizePacked(4));
    const v = new InflightPackedView(buf, 0, buf.byteLength);
    v.freeHead = 1;
    v.oldFreeHead = 2;
    v.usedIdx = 3;
    v.oldUsedIdx = 4;
    v.usedWrapCounter = 1;
    v.oldUsedWrapCounter = 1;
    v.setNext(1, 7);
    v.setCounter(1, 5n);
    const dv = new DataView(buf);
    expect([12, 14, 16, 18].map((o) => dv.getUint16(o, true))).toEqual([1, 2, 3, 4]);
    expect([dv.getUint8(20), dv.getUint8(21)]).toEqual([1, 1]);
    expect(dv.getUint16(32 + 32 + 2, true)).toBe(7);
    expect(dv.getBigUint64(32 + 32 + 8, true)).toBe(5n);
  });

  it('GET_INFLIGHT_FD initialisation: zero, and for packed both wrap counters 1 and next = j + 1', () => {
    const per = inflightSizePacked(8);
    const buf = new SharedArrayBuffer(2 * per);
    new Uint8Array(buf).fill(0xee);
    initInflightRegion(buf, 2, 8, true);
    const q1 = new InflightPackedView(buf, per, per);
    expect([q1.usedWrapCounter, q1.oldUsedWrapCounter, q1.next(0), q1.next(7), q1.version]).toEqual([1, 1, 1, 8, 0]);
  });

  it('split check: a fresh region (version 0) is stamped version 1 and resubmits nothing', () => {
    const buf = new SharedArrayBuffer(inflightSizeSplit(8));
    const v = new InflightSplitView(buf, 0, buf.byteLength);
    v.descNum = 8;
    v.setInflight(1, 1);
    const r = checkInflightsSplit(v, 0);
    expect(r.fresh).toBe(true);
    expect(v.version).toBe(1);
    expect(r.resubmit).toEqual([]);
  });

  it('split check: the last batch completed if used_idx lags, the rest is resubmitted highest counter first, avail advances', () => {
    const buf = new SharedArrayBuffer(inflightSizeSplit(8));
    const v = new InflightSplitView(buf, 0, buf.byteLength);
    v.version = 1;
    v.descNum = 8;
    v.usedIdx = 4;
    v.lastInflightIo = 6;
    for (const [i, c] of [[2, 10n], [5, 30n], [6, 40n], [7, 20n]] as const) {
      v.setInflight(i, 1);
      v.setCounter(i, c);
    }
    const r = checkInflightsSplit(v, 5);
    expect(v.inflight(6)).toBe(0);
    expect(v.usedIdx).toBe(5);
    expect(r.resubmit.map((d) => d.index)).toEqual([5, 7, 2]);
    expect(r.advanceAvail).toBe(3);
    expect(r.globalCounter).toBe(31n);
  });

  it('packed check: rolls back to the old snapshot while the descriptor at old_used_idx is inflight, commits otherwise', () => {
    const buf = new SharedArrayBuffer(inflightSizePacked(8));
    const v = new InflightPackedView(buf, 0, buf.byteLength);
    v.version = 1;
    v.descNum = 8;
    v.usedIdx = 3;
    v.oldUsedIdx = 1;
    v.freeHead = 5;
    v.oldFreeHead = 2;
    v.usedWrapCounter = 0;
    v.oldUsedWrapCounter = 1;
    v.setInflight(1, 1);
    checkInflightsPacked(v);
    expect([v.usedIdx, v.freeHead, v.usedWrapCounter]).toEqual([1, 2, 1]);
    v.setInflight(1, 0);
    v.usedIdx = 4;
    v.freeHead = 6;
    checkInflightsPacked(v);
    expect([v.oldUsedIdx, v.oldFreeHead]).toEqual([4, 6]);
  });

  it('a desc_num beyond the mapping is clipped instead of read past it', () => {
    const buf = new SharedArrayBuffer(inflightSizeSplit(2));
    const v = new InflightSplitView(buf, 0, buf.byteLength);
    v.version = 1;
    v.descNum = 60000;
    const r = checkInflightsSplit(v, 0);
    expect(r.clipped).toBe(true);
  });
});

describe('GET/SET_INFLIGHT_FD and the kick-time check on the device', () => {
  const inflight = (numQueues: number, queueSize: number, mmapSize = 0n): Payload => ({ kind: 'inflight', mmapSize, mmapOffset: 0n, numQueues, queueSize });

  it('GET_INFLIGHT_FD replies the area size, offset 0, the same queue numbers, and one memfd', () => {
    const h = new DeviceHarness({ inflight: true });
    const r = h.send(R.GET_INFLIGHT_FD, inflight(2, 256), { needReply: true });
    expect(r.replies).toHaveLength(1);
    expect(r.replies[0]!.payload).toEqual({ kind: 'inflight', mmapSize: 8320n, mmapOffset: 0n, numQueues: 2, queueSize: 256 });
    expect(r.replies[0]!.fds).toHaveLength(1);
    expect(r.replies[0]!.fds![0]).toBeInstanceOf(MemFd);
    expect(r.events.map((e) => e.text)).toContain('send inflight mmap_size: 8320');
  });

  it('GET_INFLIGHT_FD lays the area out for packed rings when RING_PACKED is negotiated at that time', () => {
    const h = new DeviceHarness({ inflight: true });
    h.send(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_PACKED_FEATURES });
    const r = h.send(R.GET_INFLIGHT_FD, inflight(1, 256));
    expect(r.replies[0]!.payload).toMatchObject({ mmapSize: 8256n });
    const fd = r.replies[0]!.fds![0] as MemFd;
    expect(new InflightPackedView(fd.buffer, 0, 8256).usedWrapCounter).toBe(1);
  });

  it('GET_INFLIGHT_FD and SET_INFLIGHT_FD need a 24-byte payload', () => {
    const h = new DeviceHarness({ inflight: true });
    const r = h.send(R.GET_INFLIGHT_FD, new Uint8Array(16), { needReply: true });
    expect(r.events.map((e) => e.text)).toContain('invalid get_inflight_fd message size is 16');
    expect(r.replies[0]!.payload).toEqual({ kind: 'ack', value: 1n });
  });

  it('split: SET_INFLIGHT_FD maps the area; the first kick stamps version 1; after a reconnect the kick resubmits and advances last_avail_idx', () => {
    const h = new DeviceHarness({ inflight: true });
    h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10009n | (1n << 12n) });
    h.send(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_FEATURES });
    const g = h.send(R.GET_INFLIGHT_FD, inflight(2, 256));
    const area = (g.replies[0]!.fds![0] as MemFd).dup(); // what the front-end receives
    const setInflight = () => h.send(R.SET_INFLIGHT_FD, inflight(2, 256, 8320n), { fds: [area.dup()], needReply: true });
    expect(setInflight().replies[0]!.payload).toEqual({ kind: 'ack', value: 0n });
    const q0 = new InflightSplitView(area.buffer, 0, 4160);
    expect(q0.descNum).toBe(256);
    h.send(R.SET_VRING_KICK, { kind: 'vringFile', index: 0, noFd: true });
    expect(q0.version).toBe(1);
    // The application marked two heads inflight, then the back-end went away.
    q0.setInflight(3, 1);
    q0.setCounter(3, 1n);
    q0.setInflight(9, 1);
    q0.setCounter(9, 2n);
    q0.usedIdx = 10;
    h.device.destroy();
    h.newDevice();
    h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10009n | (1n << 12n) });
    h.send(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_FEATURES });
    setInflight();
    // The ring, with used->idx = 10 in guest memory.
    const mem = h.memfd(0x10000);
    new DataView(mem.buffer).setUint16(0x3000 + 2, 10, true);
    h.send(R.SET_MEM_TABLE, { kind: 'memoryTable', regions: [{ guestPhysAddr: 0n, memorySize: 0x10000n, userspaceAddr: 0x7000000n, mmapOffset: 0n }] }, { fds: [mem] });
    h.send(R.SET_VRING_NUM, { kind: 'vringState', index: 0, num: 256 });
    h.send(R.SET_VRING_BASE, { kind: 'vringState', index: 0, num: 10 });
    h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 0, desc: 0x7001000n, avail: 0x7002000n, used: 0x7003000n, log: 0n });
    h.send(R.SET_VRING_KICK, { kind: 'vringFile', index: 0, noFd: true });
    const vq = h.device.vringState(0)!;
    vq.syncFromDevice();
    expect(vq.resubmit?.resubmit.map((d) => d.index)).toEqual([9, 3]);
    expect(vq.lastAvailIdx).toBe(12);
    expect(vq.globalCounter).toBe(3n);
  });

  it('without INFLIGHT_SHMFD negotiated the region is ignored at kick', () => {
    const h = new DeviceHarness({ inflight: true });
    h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10009n });
    const g = h.send(R.GET_INFLIGHT_FD, inflight(1, 8));
    const area = (g.replies[0]!.fds![0] as MemFd).dup(); // what the front-end receives
    h.send(R.SET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 192n, mmapOffset: 0n, numQueues: 1, queueSize: 8 }, { fds: [area.dup()] });
    h.send(R.SET_VRING_KICK, { kind: 'vringFile', index: 0, noFd: true });
    expect(new InflightSplitView(area.buffer, 0, 192).version).toBe(0);
  });

  it('SET_INFLIGHT_FD refuses a mapping past the end of the memfd', () => {
    const h = new DeviceHarness({ inflight: true });
    const fd = h.memfd(4096);
    const r = h.send(R.SET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 8192n, mmapOffset: 0n, numQueues: 1, queueSize: 256 }, { fds: [fd], needReply: true });
    expect(r.events.map((e) => e.text)).toContain('failed to mmap share memory.');
    expect(fd.closed).toBe(true);
  });
});
