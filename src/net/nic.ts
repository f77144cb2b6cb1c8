/**
 * The physical port on the host side of PVP: a NIC with an RX descriptor ring, linked by
 * a wire to a peer (the traffic generator). Frames arriving while the RX ring is full are
 * dropped and counted in imissed, as a NIC does when the application does not poll fast
 * enough. Frames are host mbufs; crossing the wire hands the mbuf over.
 */
import type { Scheduler } from '../sim/scheduler.ts';
import type { Mbuf, MbufPool } from './mbuf.ts';
import { PortCounters, type EthPort } from './port.ts';

/** Something at the far end of a wire. */
export interface WireEnd {
  receiveFromWire(m: Mbuf): void;
}

export interface NicOptions {
  id: number;
  name?: string;
  mac: number;
  pool: MbufPool;
  /** RX descriptors (default 1024). */
  rxRingSize?: number;
  /** One-way wire delay in virtual seconds (default 0: delivered within the transmitting event). */
  linkLatency?: number;
  scheduler?: Scheduler;
}

export class Nic implements EthPort<Mbuf>, WireEnd {
  readonly id: number;
  readonly name: string;
  readonly mac: number;
  readonly nbQueues = 1;
  readonly pool: MbufPool;
  /** Link state: a down link drops what is sent and what arrives. */
  linkUp = true;
  private peer: WireEnd | null = null;
  private readonly rxRing: (Mbuf | undefined)[];
  private rxHead = 0;
  private rxCount = 0;
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
    this.rxRing = new Array<Mbuf | undefined>(opts.rxRingSize ?? 1024).fill(undefined);
    this.latency = opts.linkLatency ?? 0;
    this.sched = opts.scheduler ?? null;
    if (this.latency > 0 && this.sched === null) throw new TypeError('a link latency needs a scheduler');
  }

  connect(peer: WireEnd): void {
    this.peer = peer;
  }

  /** Frames waiting in the RX ring. */
  get rxPending(): number {
    return this.rxCount;
  }

  receiveFromWire(m: Mbuf): void {
    if (!this.linkUp || this.rxCount === this.rxRing.length) {
      this.counters.rxMissed++;
      m.free();
      return;
    }
    const size = this.rxRing.length;
    this.rxRing[(this.rxHead + this.rxCount) % size] = m;
    this.rxCount++;
  }

  rxBurst(_queue: number, out: Mbuf[], max: number): number {
    const size = this.rxRing.length;
    let n = 0;
    while (n < max && this.rxCount > 0) {
      const m = this.rxRing[this.rxHead]!;
      this.rxRing[this.rxHead] = undefined;
      this.rxHead = (this.rxHead + 1) % size;
      this.rxCount--;
      m.port = this.id;
      this.counters.rxBytes += m.len;
      out[n++] = m;
    }
    this.counters.rxPackets += n;
    return n;
  }

  /** Line rate is not modelled: everything offered is sent. */
  txBurst(_queue: number, pkts: Mbuf[], n: number): number {
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += pkts[i].len;
    this.counters.txPackets += n;
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
  }
}
