/**
 * Multi-queue data path pieces: the NIC's RSS, per-queue counters of the vhost port, testpmd's
 * stream layout over several queues, and the kernel guest's TX queue choice per flow.
 */
import { describe, expect, it } from 'vitest';
import { Scheduler } from '../sim/scheduler.ts';
import { Testpmd } from './forwarding.ts';
import { GuestVirtioNet } from './guest-virtio-net.ts';
import { GuestVirtioPmd } from './guest-virtio-pmd.ts';
import { MbufPool } from './mbuf.ts';
import { Nic, RSS_RETA_SIZE, flowHash, rssQueue } from './nic.ts';
import { FrameKind, writeFrame } from './packet.ts';
import { makeBackendDevice } from './ring-setup.ts';
import { makeGuestRig, NIC_MAC, TG_MAC } from './testing.ts';
import { TrafficGenerator } from './traffic-generator.ts';
import { VhostPort } from './vhost-port.ts';

function frame(pool: MbufPool, flow: number, seq = 0) {
  const m = pool.alloc()!;
  m.reserve(64);
  writeFrame(m.buf.bytes, { dst: NIC_MAC, src: TG_MAC, kind: FrameKind.Data, flow, seq }, 64);
  m.len = 64;
  return m;
}

describe('NIC RSS', () => {
  it('one queue: everything on queue 0, as before', () => {
    const pool = new MbufPool('p');
    const nic = new Nic({ id: 0, mac: NIC_MAC, pool });
    for (let f = 0; f < 8; f++) nic.receiveFromWire(frame(pool, f));
    const out: ReturnType<MbufPool['alloc']>[] = [];
    expect(nic.rxBurst(0, out as never, 32)).toBe(8);
    expect(nic.nbQueues).toBe(1);
  });

  it('a flow always lands on the same queue; 16 flows per queue reach every queue for 2..4 queues', () => {
    for (let q = 2; q <= 4; q++) {
      const seen = new Set<number>();
      for (let f = 0; f < 16 * q; f++) {
        const k = rssQueue(f, q);
        expect(k).toBe(rssQueue(f, q));
        expect(k).toBeGreaterThanOrEqual(0);
        expect(k).toBeLessThan(q);
        seen.add(k);
      }
      expect(seen.size).toBe(q);
    }
    expect(flowHash(1)).not.toBe(flowHash(2));
    expect(RSS_RETA_SIZE).toBe(128);
  });

  it('frames go to their RSS queue, queues fill and miss independently, per-queue counters add up', () => {
    const pool = new MbufPool('p');
    const nic = new Nic({ id: 0, mac: NIC_MAC, pool, queues: 4, rxRingSize: 4 });
    const flowsOf: number[][] = [[], [], [], []];
    for (let f = 0; f < 64; f++) flowsOf[rssQueue(f, 4)]!.push(f);
    // Six frames of one queue's flow: four fit, two are missed; the other queues are untouched.
    for (let i = 0; i < 6; i++) nic.receiveFromWire(frame(pool, flowsOf[2]![0]!, i));
    nic.receiveFromWire(frame(pool, flowsOf[1]![0]!));
    expect(nic.stats().rxMissed).toBe(2);
    expect(nic.rxPending).toBe(5);
    const out: never[] = [];
    expect(nic.rxBurst(0, out, 32)).toBe(0);
    expect(nic.rxBurst(1, out, 32)).toBe(1);
    expect(nic.rxBurst(2, out, 32)).toBe(4);
    expect(Array.from(nic.rxQueuePackets)).toEqual([0, 1, 4, 0]);
    nic.resetStats();
    expect(Array.from(nic.rxQueuePackets)).toEqual([0, 0, 0, 0]);
  });
});

describe('multi-queue PVP data path (no control plane)', () => {
  it('testpmd forwards RX queue q to TX queue q; RSS spreads TG flows; every queue pair of the guest carries traffic', () => {
    const Q = 4;
    const sched = new Scheduler({ seed: 3 });
    const hostPool = new MbufPool('mb_pool_0');
    const nic = new Nic({ id: 0, mac: NIC_MAC, pool: hostPool, rxRingSize: 4096, queues: Q });
    const vhost = new VhostPort({ id: 1, pool: hostPool, queues: Q });
    const host = new Testpmd(sched, [nic, vhost], { fwdMode: 'mac', pollInterval: 1e-5, name: 'host' });
    expect(host.streams.map((s) => [s.rxPort, s.rxQueue, s.txPort, s.txQueue])).toEqual([
      [0, 0, 1, 0], [0, 1, 1, 1], [0, 2, 1, 2], [0, 3, 1, 3],
      [1, 0, 0, 0], [1, 1, 0, 1], [1, 2, 0, 2], [1, 3, 0, 3],
    ]);
    const g = makeGuestRig({ kind: 'split', queuePairs: Q, poolCount: 4096 });
    // The guest forwards each RX queue back on the same TX queue (guest testpmd, port paired with itself).
    const guest = new GuestVirtioPmd(sched, { pool: g.pool, features: g.features, queues: Q, onKick: (v: number) => vhost.kick(v), fwdMode: 'mac', pollInterval: 1e-5 });
    for (let q = 0; q < Q; q++) guest.port.attachQueuePair(q, g.drivers[2 * q]!, g.drivers[2 * q + 1]!);
    for (let v = 0; v < 2 * Q; v++) vhost.attachQueue(v, makeBackendDevice(g.mem, g.rings, v, g.ringFeatures, 'fresh'), g.mem, { features: g.features, scheduler: sched });
    const tg = new TrafficGenerator(sched, hostPool);
    tg.connect(nic);
    host.start();
    guest.start();
    tg.start({ ratePps: 1e6, count: 2000, flows: 16 * Q, dstMac: NIC_MAC, srcMac: TG_MAC });
    sched.run({ until: 0.01 });
    const r = tg.report();
    expect(r.received).toBe(2000);
    expect(r.duplicates).toBe(0);
    expect(r.reordered).toBe(0);
    for (let q = 0; q < Q; q++) {
      expect(nic.rxQueuePackets[q], `nic rx queue ${q}`).toBeGreaterThan(0);
      expect(vhost.txQueuePackets[q], `vhost tx queue ${q}`).toBe(nic.rxQueuePackets[q]);
      expect(vhost.rxQueuePackets[q], `vhost rx queue ${q}`).toBe(nic.rxQueuePackets[q]);
      expect(guest.port.queuePairs[q]!.counters.rxPackets).toBe(nic.rxQueuePackets[q]);
    }
    expect(vhost.queueCounts().tx.reduce((a, b) => a + b, 0)).toBe(vhost.stats().txPackets);
    vhost.resetStats();
    expect(vhost.queueCounts()).toEqual({ rx: [0, 0, 0, 0], tx: [0, 0, 0, 0] });
  });
});

describe('kernel guest (virtio-net) with several queue pairs', () => {
  it('a flow leaves on the TX queue its hash picks among the attached pairs; one pair: always 0', () => {
    const sched = new Scheduler({ seed: 1 });
    const g = makeGuestRig({ kind: 'split', queuePairs: 4 });
    const net = new GuestVirtioNet(sched, { mac: 0x525400000001, pool: g.pool, features: g.features, queues: 4 });
    expect(net.queuePairs).toHaveLength(4);
    expect(net.qp).toBe(net.queuePairs[0]);
    net.attach(g.drivers[0]!, g.drivers[1]!, 0);
    expect(net.activeQueues).toBe(1);
    for (let f = 0; f < 32; f++) expect(net.txQueueOf(f)).toBe(0);
    for (let q = 1; q < 4; q++) net.attach(g.drivers[2 * q]!, g.drivers[2 * q + 1]!, q);
    expect(net.activeQueues).toBe(4);
    const used = new Set<number>();
    for (let f = 0; f < 32; f++) used.add(net.txQueueOf(f));
    expect(used.size).toBe(4);
    net.reset();
    expect(net.activeQueues).toBe(0);
  });

  it('frames of a stream go out on its queue and come back on the peer queue of the same index', () => {
    const sched = new Scheduler({ seed: 2 });
    const g = makeGuestRig({ kind: 'split', queuePairs: 2 });
    const net = new GuestVirtioNet(sched, { mac: 0x525400000001, pool: g.pool, features: g.features, queues: 2, pollInterval: 1e-5 });
    for (let q = 0; q < 2; q++) net.attach(g.drivers[2 * q]!, g.drivers[2 * q + 1]!, q);
    const flow = [1, 2, 3, 4, 5, 6, 7, 8].find((f) => net.txQueueOf(f) === 1)!;
    const hostPool = new MbufPool('h');
    const vhost = new VhostPort({ id: 0, pool: hostPool, queues: 2 });
    for (let v = 0; v < 4; v++) vhost.attachQueue(v, makeBackendDevice(g.mem, g.rings, v, g.ringFeatures, 'fresh'), g.mem, { features: g.features, scheduler: sched });
    net.openSender({ flow, segments: 20, dst: 0x525400000002 });
    net.runOnce();
    const out: never[] = [];
    expect(vhost.rxBurst(0, out, 64)).toBe(0);
    expect(vhost.rxBurst(1, out, 64)).toBeGreaterThan(0);
  });
});
