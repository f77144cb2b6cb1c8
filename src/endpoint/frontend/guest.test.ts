import { describe, expect, it } from 'vitest';
import { Scheduler } from '../../sim/scheduler.ts';
import { SocketNamespace } from '../../transport/index.ts';
import { SplitDevice } from '../../ring/split/index.ts';
import { DescriptorChain } from '../../ring/types.ts';
import { Guest, FLAT_DEFAULT_BASE, PC_DEFAULT_BASE } from './guest.ts';

const FEATURES = { indirect: false, eventIdx: false, inOrder: false };

function world() {
  const sched = new Scheduler({ seed: 1 });
  return { sched, ns: new SocketNamespace({ scheduler: sched }) };
}

describe('Guest', () => {
  it('flat layout (virtio-user): one region with GPA == VA, one memfd', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'flat', ramSize: 1 << 20, queuePairs: 1, queueSize: 256 });
    expect(g.memoryRegions).toEqual([{ guestPhysAddr: BigInt(FLAT_DEFAULT_BASE), memorySize: 0x100000n, userspaceAddr: BigInt(FLAT_DEFAULT_BASE), mmapOffset: 0n }]);
    expect(g.memoryRegionFds).toEqual([g.memfd]);
    g.dispose();
  });

  it('pc layout (QEMU): 0/0xa0000 and 0xc0000/ram-0xc0000 from one memfd at offsets 0 and 0xc0000', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'pc', ramSize: 128 * 1024 * 1024, queuePairs: 1, queueSize: 256 });
    expect(g.memoryRegions).toEqual([
      { guestPhysAddr: 0n, memorySize: 0xa0000n, userspaceAddr: BigInt(PC_DEFAULT_BASE), mmapOffset: 0n },
      { guestPhysAddr: 0xc0000n, memorySize: 0x7f40000n, userspaceAddr: BigInt(PC_DEFAULT_BASE + 0xc0000), mmapOffset: 0xc0000n },
    ]);
    expect(g.memory.isMapped(0xa0000, 1)).toBe(false);
    g.dispose();
  });

  it('split rings use DPDK 4096 alignment: avail one page after desc, used two pages after, slots of 12288 bytes from the top, vring 0 highest', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'flat', ramSize: 1 << 20, queuePairs: 1, queueSize: 256 });
    g.setupRings('split', FEATURES);
    const top = FLAT_DEFAULT_BASE + (1 << 20);
    const l0 = g.vring(0).layout!;
    const l1 = g.vring(1).layout!;
    expect(l0.kind).toBe('split');
    if (l0.kind !== 'split' || l1.kind !== 'split') throw new Error('split');
    expect(l0.desc).toBe(top - 12288);
    expect(l0.avail).toBe(l0.desc + 4096);
    expect(l0.used).toBe(l0.desc + 8192);
    expect(l1.desc).toBe(top - 2 * 12288);
    expect(g.vringAddr(0)).toEqual({ desc: BigInt(l0.desc), avail: BigInt(l0.avail), used: BigInt(l0.used), usedGpa: BigInt(l0.used) });
    g.dispose();
  });

  it('ring addresses are front-end VAs in the pc layout; usedGpa stays a GPA', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'pc', ramSize: 4 << 20, queuePairs: 1, queueSize: 256 });
    g.setupRings('split', FEATURES);
    const l = g.vring(0).layout!;
    const a = g.vringAddr(0);
    expect(a.desc).toBe(BigInt(PC_DEFAULT_BASE + l.desc));
    expect(a.usedGpa).toBe(BigInt(l.kind === 'split' ? l.used : l.deviceEvent));
    g.dispose();
  });

  it('packed rings: driver event area after the descriptors, device event area page aligned (vring_init_packed)', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'flat', ramSize: 1 << 20, queuePairs: 1, queueSize: 256 });
    g.setupRings('packed', FEATURES);
    const l = g.vring(0).layout!;
    if (l.kind !== 'packed') throw new Error('packed');
    expect(l.driverEvent).toBe(l.desc + 4096);
    expect(l.deviceEvent).toBe(l.desc + 8192);
    g.dispose();
  });

  it('resetRing rebuilds a ring at index 0 and reports the buffers dropped; generation moves', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'flat', ramSize: 1 << 20, queuePairs: 1, queueSize: 256 });
    g.setupRings('packed', FEATURES);
    const area = g.bufferArea();
    const d = g.vring(0).driver!;
    for (let i = 0; i < 3; i++) d.add([{ addr: area.gpa + i * 2048, len: 2048, writable: true }], i);
    d.publish();
    const gen = g.vring(0).generation;
    expect(g.resetRing(0)).toBe(3);
    expect(g.vring(0).generation).toBe(gen + 1);
    expect(g.vring(0).driver!.inFlight).toBe(0);
    g.dispose();
  });

  it('usedIdx reads used->idx of a split ring from guest memory', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'pc', ramSize: 4 << 20, queuePairs: 1, queueSize: 256 });
    g.setupRings('split', FEATURES);
    const l = g.vring(1).layout!;
    if (l.kind !== 'split') throw new Error('split');
    const d = g.vring(1).driver!;
    const area = g.bufferArea();
    for (let i = 0; i < 5; i++) d.add([{ addr: area.gpa + i * 64, len: 64, writable: false }], i);
    d.publish();
    const dev = new SplitDevice(g.memory, l, FEATURES);
    const chain = new DescriptorChain(256);
    for (let i = 0; i < 4; i++) {
      expect(dev.pop(chain)).toBe(true);
      dev.push(chain.id, 0);
    }
    dev.flush();
    expect(g.usedIdx(1)).toBe(4);
    expect(g.availIdx(1)).toBe(5);
    g.dispose();
  });

  it('reset drops rings, features and status', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'flat', ramSize: 1 << 20, queuePairs: 1, queueSize: 256 });
    g.setupRings('split', FEATURES);
    g.features = 1n;
    g.status = 15;
    g.reset();
    expect(g.vring(0).driver).toBeUndefined();
    expect(g.kind).toBeUndefined();
    expect([g.features, g.status]).toEqual([0n, 0]);
    g.dispose();
  });

  it('dispose closes every fd it made', () => {
    const { ns } = world();
    const g = new Guest({ ns, layout: 'flat', ramSize: 1 << 20, queuePairs: 2, queueSize: 256 });
    expect(ns.openHandles().length).toBe(1 + 2 * 4);
    g.dispose();
    expect(ns.openHandles()).toEqual([]);
  });
});
