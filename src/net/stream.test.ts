/**
 * VM2VM (test cases 7-9, 16-18): two guests with kernel virtio-net run a reliable stream
 * through the back-end's testpmd (io forwarding between two vhost ports).
 */
import { describe, expect, it } from 'vitest';
import type { RingKind } from '../ring/factory.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { Testpmd } from './forwarding.ts';
import { GuestVirtioNet } from './guest-virtio-net.ts';
import { MbufPool } from './mbuf.ts';
import { FrameKind, parseMac, type FrameFields } from './packet.ts';
import { makeBackendDevice, type DeviceResume } from './ring-setup.ts';
import { StreamReceiver, StreamSender, type StreamTransport } from './stream.ts';
import { makeGuestRig, type GuestRig } from './testing.ts';
import { VhostPort } from './vhost-port.ts';

/** A transport that records frames and can refuse them. */
class Wire implements StreamTransport {
  frames: { seq: number; ack: number; kind: number }[] = [];
  room = Infinity;
  canSend(): boolean {
    return this.room > 0;
  }
  send(f: FrameFields): boolean {
    if (this.room <= 0) return false;
    this.room--;
    this.frames.push({ seq: f.seq, ack: f.ack ?? 0, kind: f.kind });
    return true;
  }
}

describe('StreamSender / StreamReceiver', () => {
  it('slow start: the window grows by one segment per ACK', () => {
    const w = new Wire();
    const s = new StreamSender({ flow: 1, segments: 100, src: 1, dst: 2, initialCwnd: 2 });
    s.pump(0, w);
    expect(w.frames.map((f) => f.seq)).toEqual([0, 1]);
    s.onAck(1, 0.001);
    s.onAck(2, 0.001);
    w.frames = [];
    s.pump(0.001, w);
    expect(w.frames.map((f) => f.seq)).toEqual([2, 3, 4, 5]);
  });

  it('timeout: back to the oldest unacknowledged segment with cwnd 1, RTO doubling up to the cap', () => {
    const w = new Wire();
    const s = new StreamSender({ flow: 1, segments: 100, src: 1, dst: 2, initialCwnd: 4, initialRto: 1, minRto: 0.2, maxRto: 1.5 });
    s.pump(0, w);
    s.onAck(2, 0.01); // RTT sample 10 ms → RTO clamped to the 200 ms minimum, timer restarted
    expect(s.rto).toBe(0.2);
    w.frames = [];
    s.pump(0.2, w); // before the deadline (0.21): the grown window sends new data
    expect(s.timeouts).toBe(0);
    expect(w.frames.map((f) => f.seq)).toEqual([4, 5, 6, 7]);
    w.frames = [];
    s.pump(0.25, w);
    expect(s.timeouts).toBe(1);
    expect(s.cwnd).toBe(1);
    expect(w.frames.map((f) => f.seq)).toEqual([2]);
    expect(s.retransmissions).toBe(1);
    expect(s.rto).toBe(0.4);
    s.pump(1, w);
    s.pump(2, w);
    expect(s.rto).toBe(1.5);
    // the path is down (nothing fits): the timer keeps backing off without sending
    w.room = 0;
    s.pump(4, w);
    expect(s.timeouts).toBe(4);
  });

  it('three duplicate ACKs retransmit the hole once (fast retransmit)', () => {
    const w = new Wire();
    const s = new StreamSender({ flow: 1, segments: 100, src: 1, dst: 2, initialCwnd: 8 });
    s.pump(0, w);
    s.onAck(3, 0.001); // advances
    for (let i = 0; i < 3; i++) s.onAck(3, 0.001); // three duplicates
    w.frames = [];
    s.pump(0.001, w);
    expect(s.fastRetransmits).toBe(1);
    expect(w.frames[0].seq).toBe(3);
    s.onAck(3, 0.001);
    expect(s.fastRetransmits).toBe(1);
  });

  it('receiver: in-order delivery, out-of-order held, duplicates counted, cumulative ACKs', () => {
    const w = new Wire();
    const r = new StreamReceiver({ flow: 1, src: 2, dst: 1 });
    for (const seq of [0, 2, 3, 1, 1, 4]) r.onSegment(seq, 1000, 0, w);
    expect(w.frames.map((f) => f.ack)).toEqual([1, 1, 1, 4, 4, 5]);
    expect(r.report()).toMatchObject({ delivered: 5, payloadBytes: 5000, duplicates: 1, outOfOrder: 2 });
  });
});

interface Vm2Vm {
  sched: Scheduler;
  vhost: VhostPort[];
  host: Testpmd;
  rigs: GuestRig[];
  vms: GuestVirtioNet[];
  attach(resume: DeviceResume): void;
}

function vm2vm(kind: RingKind, seed: number, pollInterval = 2e-5): Vm2Vm {
  const sched = new Scheduler({ seed });
  const pool = new MbufPool('mb_pool_0');
  const vhost = [new VhostPort({ id: 0, pool }), new VhostPort({ id: 1, pool })];
  // test case 7: `testpmd>start` with the default engine (io) and paired ports
  const host = new Testpmd(sched, vhost, { pollInterval: 1e-5 });
  const rigs = [0, 1].map(() => makeGuestRig({ kind, queueSize: 256 }));
  const vms = [0, 1].map(
    (i) => new GuestVirtioNet(sched, { name: `vm${i + 1}`, mac: parseMac(`52:54:00:00:00:0${i + 1}`), pool: rigs[i].pool, features: rigs[i].features, pollInterval, onKick: (v) => vhost[i].kick(v) }),
  );
  vms.forEach((vm, i) => vm.attach(rigs[i].drivers[0], rigs[i].drivers[1]));
  const attach = (resume: DeviceResume) => {
    for (let i = 0; i < 2; i++) for (const v of [0, 1]) vhost[i].attachQueue(v, makeBackendDevice(rigs[i].mem, rigs[i].rings, v, rigs[i].ringFeatures, resume), rigs[i].mem, { features: rigs[i].features });
  };
  attach('fresh');
  host.start();
  vms.forEach((vm) => vm.start());
  return { sched, vhost, host, rigs, vms, attach };
}

describe.each<RingKind>(['split', 'packed'])('VM2VM stream over %s rings', (kind) => {
  it('completes a transfer and reports its virtual-time throughput', () => {
    const t = vm2vm(kind, 21);
    const [a, b] = t.vms;
    const tx = a.openSender({ flow: 1, segments: 4000, dst: b.mac });
    const rx = b.openReceiver({ flow: 1, dst: a.mac });
    t.sched.run({ until: 5, stopWhen: () => tx.done });
    const rep = tx.report();
    expect(rep.done).toBe(true);
    expect(rx.report()).toMatchObject({ delivered: 4000, payloadBytes: 4000 * 1478 });
    expect(rep.throughputBps).toBeGreaterThan(1e8);
    expect(rep.timeouts).toBe(0);
    expect(a.corrupt + b.corrupt + a.txRefused + b.txRefused).toBe(0);
    // every frame A sent crossed the host once, and B's ACKs came back the other way
    expect(t.vhost[0].stats().rxPackets).toBe(rep.framesSent);
    expect(t.vhost[1].stats().rxPackets).toBe(rx.acksSent);
    // the kernel driver keeps used-buffer notifications on: the back-end calls it
    expect(t.vhost[1].enqueues[0].stats.calls).toBeGreaterThan(0);
  });

  it('large segments spread over mergeable RX buffers', () => {
    const t = vm2vm(kind, 22);
    const [a, b] = t.vms;
    const tx = a.openSender({ flow: 9, segments: 500, dst: b.mac, frameLen: 9000 });
    const rx = b.openReceiver({ flow: 9, dst: a.mac });
    t.sched.run({ until: 5, stopWhen: () => tx.done });
    expect(tx.done).toBe(true);
    expect(rx.delivered).toBe(500);
    expect(b.corrupt).toBe(0);
  });
});

describe('VM2VM stream across a back-end outage', () => {
  it('split: frames are lost while the back-end is gone and retransmitted after it returns', () => {
    const t = vm2vm('split', 31, 5e-5);
    const [a, b] = t.vms;
    const tx = a.openSender({ flow: 1, segments: 20000, dst: b.mac });
    const rx = b.openReceiver({ flow: 1, dst: a.mac });
    const outage = { from: 0.02, to: 3.02 };
    let deliveredAtCrash = -1;
    t.sched.at(outage.from, () => {
      deliveredAtCrash = rx.delivered;
      for (const p of t.vhost) p.detachAll('crash');
    });
    t.sched.at(outage.to, () => t.attach('used-index'));
    t.sched.run({ until: 20, stopWhen: () => tx.done });
    const rep = tx.report();
    expect(deliveredAtCrash).toBeGreaterThan(0);
    expect(deliveredAtCrash).toBeLessThan(20000);
    expect(rep.done).toBe(true);
    expect(rx.delivered).toBe(20000);
    expect(rep.timeouts).toBeGreaterThan(0);
    expect(rep.retransmissions).toBeGreaterThan(0);
    expect(rep.finishedAt).toBeGreaterThan(outage.to);
    // the stream resumed within a few maximum RTOs of the back-end's return
    expect(rx.lastDeliveryAt).toBeLessThan(outage.to + 3 * 2 + 1);
    expect(a.corrupt + b.corrupt).toBe(0);
  });

  it('packed: graceful stop, restart from the saved positions, the transfer completes', () => {
    const t = vm2vm('packed', 32, 5e-5);
    const [a, b] = t.vms;
    const tx = a.openSender({ flow: 1, segments: 10000, dst: b.mac });
    b.openReceiver({ flow: 1, dst: a.mac });
    const saved: { packed: object }[][] = [[], []];
    t.sched.at(0.02, () => {
      t.vhost.forEach((p, i) => {
        const devs = [p.enqueues[0].device!, p.dequeues[0].device!];
        p.detachAll('graceful');
        for (const d of devs) saved[i].push({ packed: (d as unknown as { saveState(): object }).saveState() });
      });
    });
    t.sched.at(2.02, () => {
      t.vhost.forEach((p, i) => {
        for (const v of [0, 1]) p.attachQueue(v, makeBackendDevice(t.rigs[i].mem, t.rigs[i].rings, v, t.rigs[i].ringFeatures, saved[i][v] as never), t.rigs[i].mem, { features: t.rigs[i].features });
      });
    });
    t.sched.run({ until: 20, stopWhen: () => tx.done });
    expect(tx.done).toBe(true);
    expect(tx.report().finishedAt).toBeGreaterThan(2.02);
  });
});
