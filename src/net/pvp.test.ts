/**
 * The PVP loop of the reconnect test plan in virtual time:
 * generator → NIC → host testpmd (mac) → vhost enqueue → guest virtio-pmd (mac) → vhost
 * dequeue → host testpmd → NIC → generator, on split and packed rings, with and without a
 * back-end that vanishes mid-traffic.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { RingKind } from '../ring/factory.ts';
import type { RingFeatures } from '../ring/types.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { defaultPeerMac, Testpmd } from './forwarding.ts';
import { GuestVirtioPmd } from './guest-virtio-pmd.ts';
import { MbufPool } from './mbuf.ts';
import { Nic } from './nic.ts';
import { readMac, parseMac } from './packet.ts';
import { makeBackendDevice } from './ring-setup.ts';
import { makeGuestRig, NIC_MAC, PvpRig, TG_MAC } from './testing.ts';
import { TrafficGenerator } from './traffic-generator.ts';
import { VhostPort } from './vhost-port.ts';
import type { DetachReport } from './vhost-queues.ts';

const KINDS: RingKind[] = ['split', 'packed'];

/** Sends `count` packets and runs until everything has drained. */
function runTraffic(rig: PvpRig, count: number, ratePps = 1e6, flows = 4, frameSize = 64): void {
  rig.tg.start({ ratePps, count, flows, frameSize, dstMac: NIC_MAC, srcMac: TG_MAC });
  rig.sched.run({ until: rig.sched.now + count / ratePps + 5e-3 });
}

/** Packets the host's engine dropped on its way to the guest (TX on the vhost port failed). */
function hostDropsToGuest(rig: PvpRig): number {
  return rig.host.streams.filter((s) => s.txPort === rig.vhost.id).reduce((n, s) => n + s.fwdDropped, 0);
}

function guestDrops(rig: PvpRig): number {
  return rig.guest.testpmd.streams.reduce((n, s) => n + s.fwdDropped, 0);
}

describe.each(KINDS)('PVP on %s rings', (kind) => {
  it('delivers every packet exactly once, in order, with consistent port statistics', () => {
    const rig = new PvpRig({ kind, seed: 7 });
    const macs = new Set<string>();
    rig.tg.onArrival = (b) => macs.add(`${readMac(b, 0)}/${readMac(b, 6)}`);
    rig.start();
    runTraffic(rig, 20000);
    const r = rig.tg.report();
    expect(r).toMatchObject({ sent: 20000, received: 20000, lost: 0, duplicates: 0, reordered: 0, corrupt: 0, unexpected: 0 });
    expect(r.perFlow.map((f) => f.received)).toEqual([5000, 5000, 5000, 5000]);
    // the last hop rewrote the MACs: peer address of port 0, source the NIC
    expect([...macs]).toEqual([`${defaultPeerMac(0)}/${NIC_MAC}`]);

    // sum rules: what one hop transmits the next receives
    const nic = rig.nic.stats();
    const vh = rig.vhost.stats();
    const gs = rig.guest.port.stats();
    expect(nic.rxPackets).toBe(r.sent);
    expect(vh.txPackets).toBe(nic.rxPackets - hostDropsToGuest(rig));
    expect(gs.rxPackets).toBe(vh.txPackets);
    expect(gs.rxBytes).toBe(vh.txBytes);
    expect(gs.txPackets).toBe(gs.rxPackets - guestDrops(rig));
    expect(vh.rxPackets).toBe(gs.txPackets);
    expect(vh.rxBytes).toBe(gs.txBytes);
    expect(nic.txPackets).toBe(vh.rxPackets);
    expect(nic.txBytes).toBe(60 * r.sent);
    expect(rig.vhost.missedPkts).toBe(0);
    // every mbuf and guest slot not posted on a ring is back in its pool
    expect(rig.hostPool.inUse).toBe(0);
    expect(rig.guestRig.pool.inUse).toBe(rig.guestRig.drivers[0].inFlight + rig.guestRig.drivers[1].inFlight);

    const text = rig.host.showPortStats();
    expect(text).toContain(`RX-packets: ${String(r.sent).padEnd(10)} RX-missed: 0          RX-bytes:  ${60 * r.sent}`);
    expect(text).toContain('NIC statistics for port 1 ');
    expect(rig.guest.showPortStats()).toContain(`TX-packets: ${String(gs.txPackets).padEnd(10)} TX-errors: 0`);
  });

  it('guest without posted RX buffers: the host drops (missed) and nothing comes back', () => {
    const rig = new PvpRig({ kind, seed: 1, guestDriverStarted: false }); // no RX buffers on the ring
    rig.host.start();
    runTraffic(rig, 500);
    expect(rig.tg.report()).toMatchObject({ sent: 500, received: 0, lost: 500 });
    expect(rig.vhost.missedPkts).toBe(500);
    expect(hostDropsToGuest(rig)).toBe(500);
    expect(rig.hostPool.inUse).toBe(0);
  });

  it('large frames (1518) through mergeable buffers arrive intact', () => {
    const rig = new PvpRig({ kind, seed: 2 });
    rig.start();
    runTraffic(rig, 3000, 5e5, 2, 1518);
    expect(rig.tg.report()).toMatchObject({ sent: 3000, received: 3000, lost: 0, duplicates: 0, corrupt: 0 });
  });
});

describe('property: PVP without faults — no loss, no duplicate, no reordering within a flow', () => {
  it('for any seed, ring format, ring features, mergeable setting, rate and frame size', () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer(),
          kind: fc.constantFrom<RingKind>('split', 'packed'),
          eventIdx: fc.boolean(),
          inOrder: fc.boolean(),
          mergeable: fc.boolean(),
          rate: fc.constantFrom(2e5, 1e6, 2e6),
          frameSize: fc.constantFrom(64, 128, 512, 1518),
          queueSize: fc.constantFrom(64, 256),
          guestPoll: fc.constantFrom(5e-6, 1e-5, 3e-5),
        }),
        (p) => {
          const ringFeatures: RingFeatures = { indirect: false, eventIdx: p.eventIdx, inOrder: p.inOrder };
          const rig = new PvpRig({ kind: p.kind, seed: p.seed, ringFeatures, mergeable: p.mergeable, queueSize: p.queueSize, guestPoll: p.guestPoll });
          rig.start();
          runTraffic(rig, 2000, p.rate, 3, p.frameSize);
          const r = rig.tg.report();
          // A ring that fills (a slow guest) may drop in the host or guest engine; those drops
          // are the only losses allowed, and nothing is ever delivered twice.
          const allowed = hostDropsToGuest(rig) + guestDrops(rig) + rig.nic.stats().rxMissed;
          return r.duplicates === 0 && r.reordered === 0 && r.corrupt === 0 && r.unexpected === 0 && r.lost === allowed;
        },
      ),
      { numRuns: 25 },
    );
  });
});

describe('back-end lost mid-traffic', () => {
  it('split: crash, restore from the used index — duplicates = TX in flight, loss = RX in flight + drops', () => {
    const rig = new PvpRig({ kind: 'split', seed: 11, completionDelay: 20e-6 });
    rig.start();
    rig.tg.start({ ratePps: 1e6, count: 20000, flows: 2, dstMac: NIC_MAC, srcMac: TG_MAC });
    let reports: DetachReport[] = [];
    // land the crash between a burst and its completion on both vrings
    rig.sched.at(5e-3 + 3e-6, () => {
      reports = rig.vhost.detachAll('crash');
    });
    rig.sched.at(8e-3, () => rig.attachBackend('used-index'));
    rig.sched.run({ until: 0.03 });
    const tx = reports.find((d) => d.direction === 'guest-tx')!;
    const rx = reports.find((d) => d.direction === 'guest-rx')!;
    expect(tx.packetsInFlight + rx.packetsInFlight).toBeGreaterThan(0);
    const r = rig.tg.report();
    expect(r.sent).toBe(20000);
    expect(r.corrupt + r.unexpected).toBe(0);
    // popped-not-used TX chains are offered again after the used-index restore: resent once each
    expect(r.duplicates).toBe(tx.packetsInFlight);
    // what was written into RX buffers that never became used is gone; the rest of the loss
    // is the host's and guest's engines dropping while the ring was away or full
    expect(r.lost).toBe(rx.packetsInFlight + hostDropsToGuest(rig) + guestDrops(rig) + rig.nic.stats().rxMissed);
    expect(hostDropsToGuest(rig)).toBeGreaterThan(0);
    // traffic resumed after the restore
    expect(rig.tg.lastArrivalAt).toBeGreaterThan(0.02);
    expect(rig.vhost.dequeues[0].stats.packetsInFlightAtLoss).toBe(tx.packetsInFlight);
  });

  it('property: for any crash instant, duplicates and losses are exactly what the in-flight counts allow', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1000, max: 9000 }), fc.integer({ min: 1, max: 4000 }), fc.integer(), (crashUs, gapUs, seed) => {
        const rig = new PvpRig({ kind: 'split', seed, completionDelay: 15e-6 });
        rig.start();
        rig.tg.start({ ratePps: 1e6, count: 12000, flows: 1, dstMac: NIC_MAC, srcMac: TG_MAC });
        let reports: DetachReport[] = [];
        rig.sched.at(crashUs * 1e-6, () => (reports = rig.vhost.detachAll('crash')));
        rig.sched.at((crashUs + gapUs) * 1e-6, () => rig.attachBackend('used-index'));
        rig.sched.run({ until: 0.03 });
        const txIn = reports.filter((d) => d.direction === 'guest-tx').reduce((n, d) => n + d.packetsInFlight, 0);
        const rxIn = reports.filter((d) => d.direction === 'guest-rx').reduce((n, d) => n + d.packetsInFlight, 0);
        const r = rig.tg.report();
        return r.duplicates === txIn && r.lost === rxIn + hostDropsToGuest(rig) + guestDrops(rig) + rig.nic.stats().rxMissed && r.corrupt === 0;
      }),
      { numRuns: 15 },
    );
  });

  it('packed: a graceful stop and a restart from the saved ring state loses and repeats nothing in the rings', () => {
    const rig = new PvpRig({ kind: 'packed', seed: 5, completionDelay: 20e-6 });
    rig.start();
    rig.tg.start({ ratePps: 1e6, count: 15000, flows: 2, dstMac: NIC_MAC, srcMac: TG_MAC });
    const saved: { packed: object }[] = [];
    rig.sched.at(5e-3 + 3e-6, () => {
      const devs = [rig.vhost.enqueues[0].device!, rig.vhost.dequeues[0].device!];
      const reports = rig.vhost.detachAll('graceful');
      expect(reports.every((d) => d.packetsInFlight === 0 && d.graceful)).toBe(true);
      // GET_VRING_BASE after the stop: the device halves' positions
      for (const d of devs) saved.push({ packed: (d as unknown as { saveState(): object }).saveState() });
    });
    rig.sched.at(7e-3, () => rig.attachBackend([saved[0], saved[1]] as never));
    rig.sched.run({ until: 0.03 });
    const r = rig.tg.report();
    expect(r.duplicates).toBe(0);
    expect(r.lost).toBe(hostDropsToGuest(rig) + guestDrops(rig) + rig.nic.stats().rxMissed);
    expect(r.lost).toBeGreaterThan(0); // the host dropped while the vrings were away
    expect(r.received).toBeGreaterThan(10000);
  });
});

describe('guest reboot and notification hooks', () => {
  it.each(KINDS)('after a guest reboot traffic resumes and nothing is delivered twice (%s)', (kind) => {
    const rig = new PvpRig({ kind, seed: 9 });
    rig.start();
    rig.tg.start({ ratePps: 1e6, count: 15000, flows: 2, dstMac: NIC_MAC, srcMac: TG_MAC });
    rig.sched.at(5e-3, () => rig.rebootGuest());
    rig.sched.run({ until: 0.03 });
    const r = rig.tg.report();
    expect(r.duplicates).toBe(0);
    expect(r.corrupt + r.unexpected).toBe(0);
    // what the old rings held is gone; at most a ring's worth each way
    expect(r.lost).toBeLessThanOrEqual(2 * 256 + hostDropsToGuest(rig) + guestDrops(rig));
    expect(r.received).toBeGreaterThan(14000);
    expect(rig.tg.lastArrivalAt).toBeGreaterThan(0.014);
  });

  it('the guest kicks through onKick unless the back-end suppresses kicks; a polling guest asks for no calls', () => {
    const rig = new PvpRig({ kind: 'split', seed: 3 });
    rig.start();
    runTraffic(rig, 1000);
    expect(rig.vhost.dequeues[0].stats.kicks).toBeGreaterThan(0);
    expect(rig.vhost.enqueues[0].stats.kicks).toBeGreaterThan(0);
    expect(rig.calls).toEqual([0, 0]);

    // DPDK's vhost PMD turns guest notifications off in new_device()
    const quiet = new PvpRig({ kind: 'packed', seed: 3 });
    quiet.vhost.enqueues[0].device!.disableKicks();
    quiet.vhost.dequeues[0].device!.disableKicks();
    const kicks = () => quiet.vhost.dequeues[0].stats.kicks + quiet.vhost.enqueues[0].stats.kicks;
    const before = kicks(); // the driver's first RX refill happened before the back-end came up
    quiet.start();
    runTraffic(quiet, 1000);
    expect(quiet.tg.report().received).toBe(1000);
    expect(kicks()).toBe(before);
  });
});

describe('multi-VM, --port-topology=chained (test case 4)', () => {
  it('TG → NIC → vhost0 → VM1 → vhost0 → vhost1 → VM2 → vhost1 → NIC → TG, each packet once', () => {
    for (const kind of KINDS) {
      const sched = new Scheduler({ seed: 4 });
      const pool = new MbufPool('mb_pool_0');
      const nic = new Nic({ id: 0, mac: NIC_MAC, pool });
      const vh = [new VhostPort({ id: 1, pool }), new VhostPort({ id: 2, pool })];
      const host = new Testpmd(sched, [nic, vh[0], vh[1]], { fwdMode: 'mac', topology: 'chained' });
      const guests = [0, 1].map((i) => {
        const g = makeGuestRig({ kind, queueSize: 256 });
        const vm = new GuestVirtioPmd(sched, { pool: g.pool, features: g.features, mac: parseMac(`52:54:00:00:00:0${i + 1}`), topology: 'chained', onKick: (v) => vh[i].kick(v) });
        vm.attach(g.drivers[0], g.drivers[1]);
        for (const v of [0, 1]) vh[i].attachQueue(v, makeBackendDevice(g.mem, g.rings, v, g.ringFeatures), g.mem, { features: g.features });
        vm.start();
        return vm;
      });
      const tg = new TrafficGenerator(sched, pool);
      tg.connect(nic);
      host.start();
      tg.start({ ratePps: 1e6, count: 10000, flows: 4 });
      sched.run({ until: 0.02 });
      expect(tg.report()).toMatchObject({ sent: 10000, received: 10000, duplicates: 0, lost: 0, reordered: 0 });
      // each VM saw everything once
      for (const g of guests) expect(g.port.stats().rxPackets).toBe(10000);
      expect(vh[0].stats().rxPackets).toBe(10000);
      expect(vh[1].stats().txPackets).toBe(10000);
    }
  });
});
