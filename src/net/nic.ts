/**
 * The physical port on the host side of PVP: a NIC with one RX descriptor ring per RX queue,
 * linked by a wire to a peer (the traffic generator). Frames arriving while their queue's ring
 * is full are dropped and counted in imissed, as a NIC does when the application does not poll
 * fast enough. Frames are host mbufs; crossing the wire hands the mbuf over.
 *
 * With several RX queues (testpmd `--rxq=N`, which enables RSS) each frame goes to the queue
 * the redirection table names for its flow hash, as a NIC's RSS does: a 128-entry table filled
 * round-robin over the queues (testpmd's default RETA, app/test-pmd: `rte_eth_dev_rss_reta_update`
 * is not called, so the PMD's default i % nb_rx_queues stays). The hash here is a 32-bit mix of
 * the frame's flow id (the model's 5-tuple) rather than Toeplitz: what matters is that it is a
 * fixed function of the flow, so a flow stays on one queue and many flows spread.
 */
import { fmix32 } from '../sim/rng.ts';
import type { Scheduler } from '../sim/scheduler.ts';
import type { Mbuf, MbufPool } from './mbuf.ts';
import { ETHERTYPE_VHOSTSIM, frameFlow } from './packet.ts';
import { PortCounters, type EthPort } from './port.ts';

/** Entries of the RSS redirection table (RTE_ETH_RSS_RETA_SIZE_128, most 10G/25G NICs). */
export const RSS_RETA_SIZE = 128;

/** A 32-bit avalanche of a flow id (murmur3's finaliser): neighbouring flows land far apart. */
export function flowHash(flow: number): number {
  return fmix32(flow >>> 0);
}

/** The RX queue RSS picks for `flow` with `queues` queues and the default round-robin RETA. */
export function rssQueue(flow: number, queues: number): number {
  if (queues <= 1) return 0;
  return (flowHash(flow) % RSS_RETA_SIZE) % queues;
}

/** Something at the far end of a wire. */
export interface WireEnd {
  receiveFromWire(m: Mbuf): void;
}

export interface NicOptions {
  id: number;
  name?: string;
  mac: number;
  pool: MbufPool;
  /** RX descriptors per queue (default 1024). */
  rxRingSize?: number;
  /** RX and TX queues (`--rxq`/`--txq`, default 1); above 1, RSS spreads flows over the RX queues. */
  queues?: number;
  /** One-way wire delay in virtual seconds (default 0: delivered within the transmitting event). */
  linkLatency?: number;
  scheduler?: Scheduler;
}

export class Nic implements EthPort<Mbuf>, WireEnd {
  readonly id: number;
  readonly name: string;
  readonly mac: number;
  readonly nbQueues: number;
  readonly pool: MbufPool;
  /** Link state: a down link drops what is sent and what arrives. */
  linkUp = true;
  private peer: WireEnd | null = null;
  private readonly rxRings: (Mbuf | undefined)[][];
  private readonly rxHead: Int32Array;
  private readonly rxCount: Int32Array;
  /** Packets received per RX queue (q_ipackets) and sent per TX queue (q_opackets). */
  readonly rxQueuePackets: Float64Array;
  readonly txQueuePackets: Float64Array;
  private readonly latency: number;
  private readonly sched: Scheduler | null;
  private readonly counters = new PortCounters();
  /** Frames transmitted while no peer was connected or the link was down. */
  txLostOnWire = 0;

  constructor(opts: NicOptions) {
    this.id = opts.id;
    this.name = opts.name ?? `nic${opts.id}`;
    this.mac = opts.mac;
    this.pool = opts.pool;
    this.nbQueues = opts.queues ?? 1;
    if (!Number.isInteger(this.nbQueues) || this.nbQueues < 1) throw new RangeError(`${this.name}: ${this.nbQueues} queues`);
    const ringSize = opts.rxRingSize ?? 1024;
    this.rxRings = Array.from({ length: this.nbQueues }, () => new Array<Mbuf | undefined>(ringSize).fill(undefined));
    this.rxHead = new Int32Array(this.nbQueues);
    this.rxCount = new Int32Array(this.nbQueues);
    this.rxQueuePackets = new Float64Array(this.nbQueues);
    this.txQueuePackets = new Float64Array(this.nbQueues);
    this.latency = opts.linkLatency ?? 0;
    this.sched = opts.scheduler ?? null;
    if (this.latency > 0 && this.sched === null) throw new TypeError('a link latency needs a scheduler');
  }

  connect(peer: WireEnd): void {
    this.peer = peer;
  }

  /** Frames waiting in the RX rings. */
  get rxPending(): number {
    let n = 0;
    for (let q = 0; q < this.nbQueues; q++) n += this.rxCount[q];
    return n;
  }

  /** The RX queue RSS steers a frame to (queue 0 for frames that are not the model's). */
  rxQueueOf(m: Mbuf): number {
    if (this.nbQueues === 1) return 0;
    const b = m.buf.bytes;
    if (m.len < 24 || ((b[12] << 8) | b[13]) !== ETHERTYPE_VHOSTSIM) return 0;
    return rssQueue(frameFlow(b), this.nbQueues);
  }

  receiveFromWire(m: Mbuf): void {
    const q = this.rxQueueOf(m);
    const ring = this.rxRings[q];
    const count = this.rxCount[q];
    if (!this.linkUp || count === ring.length) {
      this.counters.rxMissed++;
      m.free();
      return;
    }
    ring[(this.rxHead[q] + count) % ring.length] = m;
    this.rxCount[q] = count + 1;
  }

  rxBurst(queue: number, out: Mbuf[], max: number): number {
    const ring = this.rxRings[queue];
    const size = ring.length;
    let head = this.rxHead[queue];
    let count = this.rxCount[queue];
    let n = 0;
    while (n < max && count > 0) {
      const m = ring[head]!;
      ring[head] = undefined;
      head = (head + 1) % size;
      count--;
      m.port = this.id;
      this.counters.rxBytes += m.len;
      out[n++] = m;
    }
    this.rxHead[queue] = head;
    this.rxCount[queue] = count;
    this.counters.rxPackets += n;
    this.rxQueuePackets[queue] += n;
    return n;
  }

  /** Line rate is not modelled: everything offered is sent. */
  txBurst(queue: number, pkts: Mbuf[], n: number): number {
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += pkts[i].len;
    this.counters.txPackets += n;
    this.txQueuePackets[queue] += n;
    this.counters.txBytes += bytes;
    const peer = this.linkUp ? this.peer : null;
    if (peer === null) {
      for (let i = 0; i < n; i++) pkts[i].free();
      this.txLostOnWire += n;
      return n;
    }
    if (this.latency === 0) {
      for (let i = 0; i < n; i++) peer.receiveFromWire(pkts[i]);
    } else {
      const batch = pkts.slice(0, n);
      this.sched!.after(this.latency, () => {
        for (const m of batch) peer.receiveFromWire(m);
      }, `${this.name} wire`);
    }
    return n;
  }

  stats(): PortCounters {
    return this.counters;
  }

  resetStats(): void {
    this.counters.reset();
    this.rxQueuePackets.fill(0);
    this.txQueuePackets.fill(0);
  }
}
