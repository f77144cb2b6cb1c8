import { describe, expect, it } from 'vitest';
import { PacketBuffer } from '../memory/index.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { defaultPeerMac, Testpmd, topologyTxPort } from './forwarding.ts';
import { Mbuf, MbufPool } from './mbuf.ts';
import { decodeFrame, encodeFrame, FrameKind, parseMac, verifyFrame } from './packet.ts';
import { PortCounters, type EthPort } from './port.ts';

/** A port with an RX queue the test fills and a TX log; `txRoom` limits what a burst takes. */
class FakePort implements EthPort<Mbuf> {
  readonly nbQueues = 1;
  readonly rxq: Mbuf[] = [];
  readonly sent: Mbuf[] = [];
  txRoom = Infinity;
  readonly c = new PortCounters();
  constructor(
    readonly id: number,
    readonly mac: number,
    readonly pool: MbufPool,
    readonly name = `fake${id}`,
  ) {}
  rxBurst(_q: number, out: Mbuf[], max: number): number {
    let n = 0;
    while (n < max && this.rxq.length > 0) out[n++] = this.rxq.shift()!;
    this.c.rxPackets += n;
    return n;
  }
  txBurst(_q: number, pkts: Mbuf[], n: number): number {
    const k = Math.min(n, this.txRoom);
    for (let i = 0; i < k; i++) this.sent.push(pkts[i]);
    this.c.txPackets += k;
    return k;
  }
  stats(): PortCounters {
    return this.c;
  }
  resetStats(): void {
    this.c.reset();
  }
}

const pool = new MbufPool('t');
const scratch = new PacketBuffer(64);
function pkt(seq: number, dst = 0x0a0a_0a0a_0a0a, src = 0x0b0b_0b0b_0b0b): Mbuf {
  scratch.bytes.set(encodeFrame({ dst, src, kind: FrameKind.Data, flow: 0, seq }, 60));
  return pool.allocFrame(scratch, 60)!;
}

describe('port topology (fwd_topology_tx_port_get)', () => {
  it('paired pairs neighbours and an odd last port with itself', () => {
    expect([0, 1, 2, 3].map((p) => topologyTxPort('paired', p, 4))).toEqual([1, 0, 3, 2]);
    expect([0, 1, 2].map((p) => topologyTxPort('paired', p, 3))).toEqual([1, 0, 2]);
    expect(topologyTxPort('paired', 0, 1)).toBe(0);
  });
  it('chained goes to the next port, wrapping; loop stays', () => {
    expect([0, 1, 2].map((p) => topologyTxPort('chained', p, 3))).toEqual([1, 2, 0]);
    expect([0, 1, 2].map((p) => topologyTxPort('loop', p, 3))).toEqual([0, 1, 2]);
  });
});

describe('forwarding engines', () => {
  const setup = (mode: 'io' | 'mac' | 'macswap' | 'rxonly' | 'txonly', topology: 'paired' | 'chained' = 'paired') => {
    const sched = new Scheduler({ seed: 1 });
    const a = new FakePort(0, parseMac('3c:fd:fe:00:00:00'), pool);
    const b = new FakePort(1, parseMac('56:48:4f:53:54:01'), pool);
    const t = new Testpmd(sched, [a, b], { fwdMode: mode, topology });
    return { sched, a, b, t };
  };

  it('mac: destination = peer address of the TX port, source = the TX port MAC (macfwd.c)', () => {
    const { a, b, t } = setup('mac');
    a.rxq.push(pkt(1), pkt(2));
    b.rxq.push(pkt(3));
    t.runOnce();
    expect(b.sent.map((m) => decodeFrame(m.bytes, m.len).seq)).toEqual([1, 2]);
    for (const m of b.sent) {
      expect(m.readMac(0)).toBe(defaultPeerMac(1));
      expect(m.readMac(6)).toBe(b.mac);
      expect(verifyFrame(m.bytes, m.len)).toBe(true);
    }
    expect(a.sent[0].readMac(0)).toBe(parseMac('02:00:00:00:00:00'));
    expect(a.sent[0].readMac(6)).toBe(a.mac);
  });

  it('mac honours set eth-peer', () => {
    const { a, b, t } = setup('mac');
    t.setPeer(1, parseMac('52:54:00:00:00:01'));
    a.rxq.push(pkt(1));
    t.runOnce();
    expect(b.sent[0].readMac(0)).toBe(parseMac('52:54:00:00:00:01'));
  });

  it('io forwards untouched, macswap swaps', () => {
    const io = setup('io');
    io.a.rxq.push(pkt(1));
    io.t.runOnce();
    expect(io.b.sent[0].readMac(0)).toBe(0x0a0a_0a0a_0a0a);
    const sw = setup('macswap');
    sw.a.rxq.push(pkt(1));
    sw.t.runOnce();
    expect(sw.b.sent[0].readMac(0)).toBe(0x0b0b_0b0b_0b0b);
    expect(sw.b.sent[0].readMac(6)).toBe(0x0a0a_0a0a_0a0a);
  });

  it('bursts are at most 32; what the TX port refuses is dropped, freed and counted (fwd_dropped)', () => {
    const { a, b, t } = setup('io');
    for (let i = 0; i < 40; i++) a.rxq.push(pkt(i));
    b.txRoom = 20;
    const before = pool.inUse;
    t.runOnce();
    expect(b.sent.length).toBe(20);
    expect(t.streams[0]).toMatchObject({ rxPackets: 32, txPackets: 20, fwdDropped: 12 });
    expect(pool.inUse).toBe(before - 12);
    expect(a.rxq.length).toBe(8);
    expect(t.forwardStats()[1]).toMatchObject({ port: 1, txPackets: 20, txDropped: 12 });
  });

  it('rxonly frees everything it receives', () => {
    const { a, b, t } = setup('rxonly');
    const before = pool.inUse;
    a.rxq.push(pkt(1), pkt(2));
    t.runOnce();
    expect(b.sent.length).toBe(0);
    expect(pool.inUse).toBe(before);
  });

  it('txonly sends bursts of fresh, valid, numbered frames on every stream', () => {
    const { a, b, t } = setup('txonly');
    t.runOnce();
    t.runOnce();
    expect(b.sent.length).toBe(64);
    expect(a.sent.length).toBe(64);
    const seqs = b.sent.map((m) => decodeFrame(m.bytes, m.len));
    expect(seqs.map((f) => f.seq)).toEqual([...Array(64).keys()]);
    expect(seqs.every((f) => f.valid && f.len === 64 && f.src === b.mac && f.dst === defaultPeerMac(1))).toBe(true);
  });

  it('runs every pollInterval between start and stop; stop prints the forward statistics', () => {
    const { sched, a, t } = setup('io');
    t.start();
    for (let i = 0; i < 5; i++) a.rxq.push(pkt(i));
    sched.run({ until: 1e-4 + 1e-9 });
    expect(t.polls).toBe(10);
    const text = t.stop();
    expect(text).toContain('Forward statistics for port 0');
    expect(text).toMatch(/RX-packets: 5 +RX-dropped: 0 +RX-total: 5/);
    sched.run({ until: 1 });
    expect(t.polls).toBe(10);
  });
});
