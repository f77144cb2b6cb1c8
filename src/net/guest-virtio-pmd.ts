/**
 * The guest's testpmd on a virtio-net device bound to the virtio PMD (PVP's middle hop):
 * `VirtioPmdPort` is the ethdev (drivers/net/virtio), `GuestVirtioPmd` the testpmd that
 * runs on it (`set fwd mac` by default, one port paired with itself, burst 32).
 *
 * The port's counters are virtio_dev_stats_get's: packets/bytes per direction, RX errors
 * (runt buffers), RX-nombuf (rx_mbuf_alloc_failed). Frames stay in guest memory: a frame
 * received into a slot is forwarded from the same slot.
 */
import type { RingDriver } from '../ring/factory.ts';
import type { Scheduler } from '../sim/scheduler.ts';
import type { GuestMbuf, GuestMbufPool } from './guest-mbuf.ts';
import { isMergeable, vhostHeaderLength } from './net-header.ts';
import { parseMac } from './packet.ts';
import { PortCounters, type EthPort } from './port.ts';
import { Testpmd, type FwdMode, type PortTopology } from './forwarding.ts';
import { VirtioNetQueuePair } from './virtio-net-driver.ts';

export interface VirtioPmdPortOptions {
  id?: number;
  name?: string;
  /** The device's MAC (QEMU `-device virtio-net-pci,mac=…`; default 52:54:00:00:00:01). */
  mac?: number;
  pool: GuestMbufPool;
  /** Negotiated features: header length and MRG_RXBUF. */
  features: bigint;
  queues?: number;
  /** The guest wrote a queue's notify register (the control plane turns it into a kick eventfd write). */
  onKick?: (vring: number) => void;
}

export class VirtioPmdPort implements EthPort<GuestMbuf> {
  readonly id: number;
  readonly name: string;
  readonly mac: number;
  readonly nbQueues: number;
  readonly pool: GuestMbufPool;
  readonly queuePairs: VirtioNetQueuePair[] = [];
  private readonly base = new PortCounters();
  private readonly sum = new PortCounters();

  constructor(opts: VirtioPmdPortOptions) {
    this.id = opts.id ?? 0;
    this.name = opts.name ?? `virtio${this.id}`;
    this.mac = opts.mac ?? parseMac('52:54:00:00:00:01');
    this.nbQueues = opts.queues ?? 1;
    this.pool = opts.pool;
    const hdrLen = vhostHeaderLength(opts.features);
    const mergeable = isMergeable(opts.features);
    for (let q = 0; q < this.nbQueues; q++) this.queuePairs.push(new VirtioNetQueuePair(opts.pool, { hdrLen, mergeable, queue: q, onKick: opts.onKick, pollMode: true }));
  }

  /** Driver start: hand over the driver halves of queue pair `q` (vrings 2q, 2q+1). */
  attachQueuePair(q: number, rx: RingDriver<GuestMbuf>, tx: RingDriver<GuestMbuf>, features?: bigint): void {
    const f = features === undefined ? undefined : { hdrLen: vhostHeaderLength(features), mergeable: isMergeable(features) };
    this.queuePairs[q].attach(rx, tx, f);
  }

  /** Device reset (guest reboot, driver unbind): rings dropped, every slot back in the pool. */
  reset(): void {
    for (const qp of this.queuePairs) qp.detach();
    this.pool.reset();
  }

  rxBurst(queue: number, out: GuestMbuf[], max: number): number {
    const n = this.queuePairs[queue].receive(out, max);
    for (let i = 0; i < n; i++) out[i].port = this.id;
    return n;
  }

  txBurst(queue: number, pkts: GuestMbuf[], n: number): number {
    return this.queuePairs[queue].transmit(pkts, n);
  }

  stats(): PortCounters {
    const s = this.sum;
    s.reset();
    for (const qp of this.queuePairs) {
      const c = qp.counters;
      s.rxPackets += c.rxPackets;
      s.rxBytes += c.rxBytes;
      s.rxErrors += c.rxErrors;
      s.rxNombuf += c.rxNombuf;
      s.txPackets += c.txPackets;
      s.txBytes += c.txBytes;
      s.txErrors += c.txErrors;
    }
    s.rxPackets -= this.base.rxPackets;
    s.rxBytes -= this.base.rxBytes;
    s.rxErrors -= this.base.rxErrors;
    s.rxNombuf -= this.base.rxNombuf;
    s.txPackets -= this.base.txPackets;
    s.txBytes -= this.base.txBytes;
    s.txErrors -= this.base.txErrors;
    return s;
  }

  resetStats(): void {
    const cur = this.stats().snapshot();
    this.base.rxPackets += cur.rxPackets;
    this.base.rxBytes += cur.rxBytes;
    this.base.rxErrors += cur.rxErrors;
    this.base.rxNombuf += cur.rxNombuf;
    this.base.txPackets += cur.txPackets;
    this.base.txBytes += cur.txBytes;
    this.base.txErrors += cur.txErrors;
  }
}

export interface GuestVirtioPmdOptions extends VirtioPmdPortOptions {
  fwdMode?: FwdMode;
  topology?: PortTopology;
  burst?: number;
  pollInterval?: number;
}

/** testpmd in the guest: `-- -i --nb-cores=1 --txd=1024 --rxd=1024`, `set fwd mac`, `start`. */
export class GuestVirtioPmd {
  readonly port: VirtioPmdPort;
  readonly testpmd: Testpmd<GuestMbuf>;

  constructor(sched: Scheduler, opts: GuestVirtioPmdOptions) {
    this.port = new VirtioPmdPort(opts);
    this.testpmd = new Testpmd<GuestMbuf>(sched, [this.port], {
      fwdMode: opts.fwdMode ?? 'mac',
      topology: opts.topology ?? 'paired',
      burst: opts.burst,
      pollInterval: opts.pollInterval,
      name: `${this.port.name} testpmd`,
    });
  }

  attach(rx: RingDriver<GuestMbuf>, tx: RingDriver<GuestMbuf>, q = 0): void {
    this.port.attachQueuePair(q, rx, tx);
  }

  start(): void {
    this.testpmd.start();
  }

  stop(): string {
    return this.testpmd.stop();
  }

  showPortStats(): string {
    return this.testpmd.showPortStats();
  }
}
