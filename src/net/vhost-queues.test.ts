import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PacketBuffer } from '../memory/index.ts';
import type { RingKind } from '../ring/factory.ts';
import { DescriptorChain, type UsedBuffer } from '../ring/types.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { decodeNetHeader } from './net-header.ts';
import { MbufPool, type Mbuf } from './mbuf.ts';
import { encodeFrame, FrameKind, verifyFrame } from './packet.ts';
import { makeBackendDevice } from './ring-setup.ts';
import { makeGuestRig, netFeatures } from './testing.ts';
import { VhostDequeue, VhostEnqueue } from './vhost-queues.ts';
import { VhostPort } from './vhost-port.ts';
import { VirtioNetQueuePair } from './virtio-net-driver.ts';
import type { GuestMbuf } from './guest-mbuf.ts';

const KINDS: RingKind[] = ['split', 'packed'];
const used = (): UsedBuffer<GuestMbuf> => ({ token: undefined as unknown as GuestMbuf, len: -1, id: -1 });
const frame = (seq: number, len: number) => encodeFrame({ dst: 0x0200_0000_0001, src: 0x5254_0000_0001, kind: FrameKind.Data, flow: 7, seq }, len);

function mbufOf(pool: MbufPool, bytes: Uint8Array): Mbuf {
  const m = pool.alloc()!;
  m.reserve(bytes.length);
  m.buf.bytes.set(bytes);
  m.len = bytes.length;
  return m;
}

function rig(kind: RingKind, o: { mergeable?: boolean; queueSize?: number; dataRoom?: number } = {}) {
  const g = makeGuestRig({ kind, queueSize: o.queueSize ?? 16, features: netFeatures(kind, { mergeable: o.mergeable }), dataRoom: o.dataRoom });
  const rxDev = makeBackendDevice(g.mem, g.rings, 0, g.ringFeatures);
  const txDev = makeBackendDevice(g.mem, g.rings, 1, g.ringFeatures);
  const enq = new VhostEnqueue();
  const deq = new VhostDequeue();
  const mergeable = o.mergeable ?? true;
  enq.attach(rxDev, g.mem, { hdrLen: 12, mergeable, vring: 0 });
  deq.attach(txDev, g.mem, { hdrLen: 12, vring: 1 });
  const qp = new VirtioNetQueuePair(g.pool, { hdrLen: 12, mergeable });
  return { g, rxDev, txDev, enq, deq, qp, host: new MbufPool('host') };
}

describe.each(KINDS)('vhost dequeue (%s ring)', (kind) => {
  it('strips the header across descriptor boundaries and copies the frame out intact', () => {
    const { g, deq, host } = rig(kind);
    const tx = g.drivers[1];
    const f = frame(1, 300);
    // header (12) split 5 + 7, frame split 7 + 293 over three more descriptors
    const hdrA = g.scratch;
    g.mem.fill(hdrA, 12, 0);
    g.mem.write(hdrA + 0x100, f.subarray(0, 7));
    g.mem.write(hdrA + 0x200, f.subarray(7));
    tx.add(
      [
        { addr: hdrA, len: 5, writable: false },
        { addr: hdrA + 5, len: 7, writable: false },
        { addr: hdrA + 0x100, len: 7, writable: false },
        { addr: hdrA + 0x200, len: 293, writable: false },
      ],
      undefined as unknown as GuestMbuf,
    );
    tx.publish();
    const out: Mbuf[] = [];
    expect(deq.burst(host, out, 32)).toBe(1);
    expect(out[0].len).toBe(300);
    expect(Buffer.from(out[0].buf.bytes.subarray(0, 300)).equals(Buffer.from(f))).toBe(true);
    const u = used();
    expect(tx.reclaim(u)).toBe(true);
    expect(u.len).toBe(0); // DPDK marks TX chains used with length 0
    expect(deq.stats).toMatchObject({ packets: 1, bytes: 300 });
  });

  it('takes at most 32 per burst (MAX_PKT_BURST) and nothing when detached or disabled', () => {
    const { deq, qp, g, host } = rig(kind, { queueSize: 64 });
    qp.attach(g.drivers[0], g.drivers[1]);
    const src = new PacketBuffer(64);
    const pkts: GuestMbuf[] = [];
    for (let i = 0; i < 40; i++) {
      src.bytes.set(frame(i, 60));
      pkts.push(g.pool.allocFrame(src, 60)!);
    }
    expect(qp.transmit(pkts, 40)).toBe(40);
    const out: Mbuf[] = [];
    deq.setEnabled(false);
    expect(deq.burst(host, out, 64)).toBe(0);
    deq.setEnabled(true);
    expect(deq.burst(host, out, 64)).toBe(32);
    deq.detach('graceful');
    expect(deq.burst(host, out, 64)).toBe(0);
  });

  it('a chain holding only the header is used and dropped, ending the burst', () => {
    const { g, deq, host } = rig(kind);
    const tx = g.drivers[1];
    const a = g.scratch;
    tx.add([{ addr: a, len: 12, writable: false }], undefined as unknown as GuestMbuf);
    tx.publish();
    expect(deq.burst(host, [], 32)).toBe(0);
    expect(deq.stats.badChains).toBe(1);
    expect(tx.reclaim(used())).toBe(true);
  });

  it('a malformed chain stops the queue without throwing, counted once', () => {
    const { g, deq, host } = rig(kind);
    const tx = g.drivers[1];
    tx.add([{ addr: g.mem.size + 0x10000, len: 100, writable: false }], undefined as unknown as GuestMbuf);
    tx.publish();
    expect(deq.burst(host, [], 32)).toBe(0);
    expect(deq.burst(host, [], 32)).toBe(0);
    expect(deq.stats.ringErrors).toBe(1);
    expect(deq.lastRingError?.code).toBe('bad-address');
  });
});

describe.each(KINDS)('vhost enqueue (%s ring)', (kind) => {
  it('without MRG_RXBUF: one buffer per packet, header then frame, used len = 12 + frame', () => {
    const { g, enq, qp, host } = rig(kind, { mergeable: false });
    qp.attach(g.drivers[0], g.drivers[1]);
    const frames = [frame(0, 60), frame(1, 1514), frame(2, 777)];
    const pkts = frames.map((f) => mbufOf(host, f));
    expect(enq.burst(pkts, 3)).toBe(3);
    const got: GuestMbuf[] = [];
    expect(qp.receive(got, 8)).toBe(3);
    const scratch = new PacketBuffer(2048);
    for (let i = 0; i < 3; i++) {
      expect(got[i].nbSegs).toBe(1);
      const hdr = new Uint8Array(12);
      g.mem.read(got[i].dataGpa - 12, hdr);
      expect(decodeNetHeader(hdr)).toMatchObject({ flags: 0, gsoType: 0, numBuffers: 1 });
      const n = got[i].copyTo(scratch);
      expect(Buffer.from(scratch.bytes.subarray(0, n)).equals(Buffer.from(frames[i]))).toBe(true);
    }
  });

  it('with MRG_RXBUF a large frame spreads over several buffers; num_buffers counts them', () => {
    // 512-byte data rooms: buffers of 524 bytes (header room included)
    const { g, enq, qp, host } = rig(kind, { mergeable: true, dataRoom: 512 });
    qp.attach(g.drivers[0], g.drivers[1]);
    const f = frame(5, 1500); // needs 1512 bytes: 524 + 524 + 464
    const m = mbufOf(host, f);
    expect(enq.burst([m], 1)).toBe(1);
    const rx = g.drivers[0];
    const u = used();
    const lens: number[] = [];
    const first: GuestMbuf[] = [];
    while (rx.reclaim(u)) {
      lens.push(u.len);
      first.push(u.token);
    }
    expect(lens).toEqual([524, 524, 464]);
    const hdr = new Uint8Array(12);
    g.mem.read(first[0].bufGpa + g.pool.headroom - 12, hdr);
    expect(decodeNetHeader(hdr).numBuffers).toBe(3);
    // the bytes, in buffer order, are header + frame
    const all = new Uint8Array(1512);
    let off = 0;
    for (let i = 0; i < 3; i++) {
      const part = new Uint8Array(lens[i]);
      g.mem.read(first[i].bufGpa + g.pool.headroom - 12, part);
      all.set(part, off);
      off += lens[i];
    }
    expect(Buffer.from(all.subarray(12)).equals(Buffer.from(f))).toBe(true);
  });

  it('the guest driver reassembles a mergeable packet from num_buffers', () => {
    const { g, enq, qp, host } = rig(kind, { mergeable: true, dataRoom: 512, queueSize: 64 });
    qp.attach(g.drivers[0], g.drivers[1]);
    const frames = [frame(1, 60), frame(2, 4000), frame(3, 512), frame(4, 9000)];
    const pkts = frames.map((f) => mbufOf(host, f));
    expect(enq.burst(pkts, pkts.length)).toBe(4);
    const got: GuestMbuf[] = [];
    expect(qp.receive(got, 8)).toBe(4);
    const scratch = new PacketBuffer(10000);
    // 524-byte buffers: 72 → 1, 4012 → 8, 524 → exactly 1, 9012 → 18
    expect(got.map((p) => p.nbSegs)).toEqual([1, 8, 1, 18]);
    for (let i = 0; i < 4; i++) {
      const n = got[i].copyTo(scratch);
      expect(n).toBe(frames[i].length);
      expect(verifyFrame(scratch.bytes, n)).toBe(true);
    }
  });

  it('no RX buffers posted: nothing enqueued, the vhost PMD counts them missed', () => {
    const { g, host } = rig(kind);
    const port = new VhostPort({ id: 1, pool: host });
    port.attachQueue(0, makeBackendDevice(g.mem, g.rings, 0, g.ringFeatures), g.mem, { features: g.features });
    const pkts = [mbufOf(host, frame(0, 60)), mbufOf(host, frame(1, 60))];
    expect(port.txBurst(0, pkts, 2)).toBe(0);
    expect(port.txQueueStats[0].missedPkts).toBe(2);
    expect(port.stats().txPackets).toBe(0);
    // the caller still owns them
    expect(host.inUse).toBe(2);
  });

  it('a detached RX vring: txBurst returns 0 and counts nothing (allow_queuing = 0)', () => {
    const host = new MbufPool('host');
    const port = new VhostPort({ id: 1, pool: host });
    expect(port.txBurst(0, [mbufOf(host, frame(0, 60))], 1)).toBe(0);
    expect(port.missedPkts).toBe(0);
  });

  it('a packet that does not fit the buffers available is held; it goes once the guest posts more', () => {
    const { g, enq, qp, host } = rig(kind, { mergeable: true, dataRoom: 512, queueSize: 8 });
    const rx = g.drivers[0];
    // post two buffers only: 1048 bytes, not enough for 1512
    for (let i = 0; i < 2; i++) {
      const m = g.pool.alloc()!;
      rx.add([{ addr: m.bufGpa + g.pool.headroom - 12, len: 524, writable: true }], m);
    }
    rx.publish();
    const big = mbufOf(host, frame(9, 1500));
    expect(enq.burst([big], 1)).toBe(0);
    expect(rx.hasUsed()).toBe(false);
    qp.attach(rx, g.drivers[1]); // posts the rest of the ring
    expect(enq.burst([big], 1)).toBe(1);
    const got: GuestMbuf[] = [];
    expect(qp.receive(got, 4)).toBe(1);
    const s = new PacketBuffer(2048);
    expect(verifyFrame(s.bytes, got[0].copyTo(s))).toBe(true);
  });

  it('a graceful stop hands buffers taken for a packet that did not fit back to the ring', () => {
    const { g, enq, rxDev, host } = rig(kind, { mergeable: true, dataRoom: 512, queueSize: 8 });
    const rx = g.drivers[0];
    const ids: number[] = [];
    for (let i = 0; i < 2; i++) {
      const m = g.pool.alloc()!;
      ids.push(rx.add([{ addr: m.bufGpa + g.pool.headroom - 12, len: 524, writable: true }], m));
    }
    rx.publish();
    expect(enq.burst([mbufOf(host, frame(9, 1500))], 1)).toBe(0);
    const r = enq.detach('graceful');
    expect(r.reservedBuffers).toBe(2);
    // a device resumed from the saved position pops the same two buffers again
    const state = (rxDev as unknown as { saveState(): object }).saveState();
    const resumed = makeBackendDevice(g.mem, g.rings, 0, g.ringFeatures, kind === 'split' ? { split: state } : { packed: state });
    const c = new DescriptorChain(8);
    const popped: number[] = [];
    while (resumed.pop(c)) popped.push(c.id);
    expect(popped).toEqual(ids);
  });

  it('without MRG_RXBUF a buffer too small for the packet stops the queue at it (DPDK max_tries = 1)', () => {
    const { g, host } = rig(kind, { mergeable: false });
    const port = new VhostPort({ id: 1, pool: host });
    port.attachQueue(0, makeBackendDevice(g.mem, g.rings, 0, g.ringFeatures), g.mem, { features: netFeatures(kind, { mergeable: false }) });
    const rx = g.drivers[0];
    const m = g.pool.alloc()!;
    rx.add([{ addr: m.bufGpa, len: 100, writable: true }], m);
    rx.publish();
    const pkts = [mbufOf(host, frame(0, 200)), mbufOf(host, frame(1, 60))];
    expect(port.txBurst(0, pkts, 2)).toBe(0);
    expect(port.txBurst(0, pkts, 2)).toBe(0);
    expect(port.missedPkts).toBe(4);
    expect(rx.hasUsed()).toBe(false);
  });
});

describe('deferred completion', () => {
  it.each(KINDS)('used entries appear after the delay; a crash before it reports them in flight (%s)', (kind) => {
    const sched = new Scheduler({ seed: 3 });
    const { g, qp, host } = rig(kind, { queueSize: 32 });
    const deq = new VhostDequeue();
    deq.attach(makeBackendDevice(g.mem, g.rings, 1, g.ringFeatures), g.mem, { hdrLen: 12, completionDelay: 1e-3, scheduler: sched, vring: 1 });
    qp.attach(g.drivers[0], g.drivers[1]);
    const src = new PacketBuffer(64);
    const send = (k: number) => {
      const pkts: GuestMbuf[] = [];
      for (let i = 0; i < k; i++) {
        src.bytes.set(frame(i, 60));
        pkts.push(g.pool.allocFrame(src, 60)!);
      }
      expect(qp.transmit(pkts, k)).toBe(k);
    };
    send(5);
    const out: Mbuf[] = [];
    expect(deq.burst(host, out, 32)).toBe(5);
    expect(g.drivers[1].hasUsed()).toBe(false);
    sched.run({ until: 2e-3 });
    expect(g.drivers[1].hasUsed()).toBe(true);
    send(3);
    expect(deq.burst(host, out, 32)).toBe(3);
    const r = deq.detach('crash');
    expect(r).toMatchObject({ direction: 'guest-tx', packetsInFlight: 3, buffersInFlight: 3, graceful: false });
    expect(deq.stats.packetsInFlightAtLoss).toBe(3);
    sched.run({ until: 1 }); // the cancelled completion writes nothing
    expect(g.drivers[1].hasUsed()).toBe(false);
    expect(g.drivers[1].inFlight).toBe(3);
  });
});

describe('property: every packet crosses the rings intact and in order', () => {
  it.each(KINDS)('enqueue → guest receive and guest transmit → dequeue (%s)', (kind) => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 60, max: 9000 }), { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        fc.constantFrom(512, 1024, 2048),
        (sizes, mergeable, dataRoom) => {
          if (!mergeable) sizes = sizes.map((s) => Math.min(s, dataRoom));
          const { g, enq, deq, qp, host } = rig(kind, { mergeable, dataRoom, queueSize: 64 });
          qp.attach(g.drivers[0], g.drivers[1]);
          const scratch = new PacketBuffer(9216);
          const frames = sizes.map((s, i) => frame(i, s));
          // host → guest, as many bursts as the ring needs
          let sent = 0;
          const got: GuestMbuf[] = [];
          let guard = 0;
          while (sent < frames.length && guard++ < 1000) {
            const pkts = frames.slice(sent).map((f) => mbufOf(host, f));
            const k = enq.burst(pkts, pkts.length);
            for (const p of pkts) p.free();
            sent += k;
            const batch: GuestMbuf[] = [];
            const r = qp.receive(batch, 64);
            got.push(...batch.slice(0, r));
          }
          if (sent !== frames.length || got.length !== frames.length) return false;
          for (let i = 0; i < frames.length; i++) {
            const n = got[i].copyTo(scratch);
            if (n !== frames[i].length || !Buffer.from(scratch.bytes.subarray(0, n)).equals(Buffer.from(frames[i]))) return false;
          }
          // guest → host: send the received packets back out
          const out: Mbuf[] = [];
          let back = 0;
          guard = 0;
          while (back < got.length && guard++ < 1000) {
            back += qp.transmit(got.slice(back), got.length - back);
            deq.burst(host, out, 32, out.length);
          }
          while (deq.burst(host, out, 32, out.length) > 0);
          if (out.length !== frames.length) return false;
          return out.every((m, i) => Buffer.from(m.buf.bytes.subarray(0, m.len)).equals(Buffer.from(frames[i])));
        },
      ),
      { numRuns: 40 },
    );
  });
});
