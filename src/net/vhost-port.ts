/**
 * The `net_vhost` ethdev (drivers/net/vhost/rte_eth_vhost.c): testpmd's view of a vhost
 * device. RX queue q dequeues from vring 2q+1 (guest TX), TX queue q enqueues into vring
 * 2q (guest RX) — fact sheet §6, last bullet.
 *
 * The control plane attaches a vring when DPDK would start polling it (device running,
 * vring ready and enabled) and detaches it when the device is destroyed or the ring
 * stopped. Port counters survive detach/attach (they belong to the port, as in DPDK where
 * a reconnecting guest does not reset testpmd's stats); a relaunched back-end is a new
 * VhostPort.
 */
import type { GuestMemory } from '../memory/index.ts';
import type { RingDevice } from '../ring/factory.ts';
import type { Scheduler } from '../sim/scheduler.ts';
import { Mbuf, MbufPool } from './mbuf.ts';
import { isMergeable, vhostHeaderLength } from './net-header.ts';
import { parseMac } from './packet.ts';
import { PortCounters, type EthPort } from './port.ts';
import { VhostDequeue, VhostEnqueue, VHOST_MAX_PKT_BURST, type DetachReport } from './vhost-queues.ts';

export interface VhostPortOptions {
  id: number;
  name?: string;
  /** Default 56:48:4F:53:54:<port id> ("VHOST", rte_eth_vhost.c base_eth_addr). */
  mac?: number;
  /** Queue pairs (`queues=` devarg, default 1). */
  queues?: number;
  pool: MbufPool;
}

export interface VhostAttachOptions {
  /** Negotiated virtio features (header length and MRG_RXBUF come from them). */
  features: bigint;
  /** Write the vring's call eventfd. */
  notify?: () => void;
  /** See VhostQueueOptions.completionDelay. */
  completionDelay?: number;
  scheduler?: Scheduler;
}

/** The vhost PMD's per-TX-queue counter that `show port stats` does not print (22.11). */
export interface VhostPmdQueueStats {
  /** vhost_queue.stats.missed_pkts: packets eth_vhost_tx could not enqueue (no guest RX buffers, ring gone). */
  missedPkts: number;
}

export function vhostDefaultMac(portId: number): number {
  return parseMac('56:48:4f:53:54:00') + (portId & 0xff);
}

export class VhostPort implements EthPort<Mbuf> {
  readonly id: number;
  readonly name: string;
  readonly mac: number;
  readonly nbQueues: number;
  readonly pool: MbufPool;
  /** vrings 2q (enqueue, guest RX) and 2q+1 (dequeue, guest TX). */
  readonly enqueues: VhostEnqueue[] = [];
  readonly dequeues: VhostDequeue[] = [];
  /** missed_pkts per TX queue. */
  readonly txQueueStats: VhostPmdQueueStats[] = [];
  /** Every detach report, oldest first. */
  readonly detachReports: DetachReport[] = [];
  /** Per queue: packets dequeued (q_ipackets, guest TX) and enqueued (q_opackets, guest RX), as eth_stats_get fills them. */
  readonly rxQueuePackets: Float64Array;
  readonly txQueuePackets: Float64Array;
  private readonly counters = new PortCounters();

  constructor(opts: VhostPortOptions) {
    this.id = opts.id;
    this.name = opts.name ?? `net_vhost${opts.id}`;
    this.mac = opts.mac ?? vhostDefaultMac(opts.id);
    this.nbQueues = opts.queues ?? 1;
    this.pool = opts.pool;
    this.rxQueuePackets = new Float64Array(this.nbQueues);
    this.txQueuePackets = new Float64Array(this.nbQueues);
    for (let q = 0; q < this.nbQueues; q++) {
      this.enqueues.push(new VhostEnqueue());
      this.dequeues.push(new VhostDequeue());
      this.txQueueStats.push({ missedPkts: 0 });
    }
  }

  private queueOf(vring: number): VhostEnqueue | VhostDequeue {
    const q = vring >> 1;
    if (!Number.isInteger(vring) || vring < 0 || q >= this.nbQueues) throw new RangeError(`${this.name}: vring ${vring} is not one of its ${2 * this.nbQueues}`);
    return (vring & 1) === 0 ? this.enqueues[q] : this.dequeues[q];
  }

  /** Starts polling `vring` over `device` (a device half built for the current session). */
  attachQueue(vring: number, device: RingDevice, mem: GuestMemory, opts: VhostAttachOptions): void {
    const q = this.queueOf(vring);
    q.attach(device, mem, {
      hdrLen: vhostHeaderLength(opts.features),
      mergeable: isMergeable(opts.features),
      notify: opts.notify,
      completionDelay: opts.completionDelay,
      scheduler: opts.scheduler,
      vring,
    });
  }

  /** Stops polling `vring`; see VhostQueue.detach. */
  detachQueue(vring: number, mode: 'graceful' | 'crash' = 'crash'): DetachReport {
    const q = this.queueOf(vring);
    const was = q.attached;
    const r = q.detach(mode);
    if (was) this.detachReports.push(r);
    return r;
  }

  /** Detaches every attached vring (destroy_device, or the back-end process gone). */
  detachAll(mode: 'graceful' | 'crash' = 'crash'): DetachReport[] {
    const out: DetachReport[] = [];
    for (let v = 0; v < 2 * this.nbQueues; v++) if (this.queueOf(v).attached) out.push(this.detachQueue(v, mode));
    return out;
  }

  isAttached(vring: number): boolean {
    return this.queueOf(vring).attached;
  }

  /** SET_VRING_ENABLE. */
  setEnabled(vring: number, on: boolean): void {
    this.queueOf(vring).setEnabled(on);
  }

  /** The guest kicked `vring` (its kick eventfd fired). */
  kick(vring: number): void {
    this.queueOf(vring).kick();
  }

  /** eth_vhost_rx: dequeue from the guest's TX vring of queue pair `queue`. */
  rxBurst(queue: number, out: Mbuf[], max: number): number {
    const dq = this.dequeues[queue];
    let n = 0;
    // eth_vhost_rx loops in VHOST_MAX_PKT_BURST pieces while each piece comes back full.
    while (n < max) {
      const want = Math.min(max - n, VHOST_MAX_PKT_BURST);
      const got = dq.burst(this.pool, out, want, n);
      n += got;
      if (got < want) break;
    }
    for (let i = 0; i < n; i++) {
      out[i].port = this.id;
      this.counters.rxBytes += out[i].len;
    }
    this.counters.rxPackets += n;
    this.rxQueuePackets[queue] += n;
    return n;
  }

  /**
   * eth_vhost_tx: enqueue into the guest's RX vring. What did not fit is counted in the
   * queue's missed_pkts (not in rte_eth_stats: testpmd's `show port stats` never shows it
   * in 22.11) and left to the caller, which frees it. Sent mbufs are freed here.
   */
  txBurst(queue: number, pkts: Mbuf[], n: number): number {
    const eq = this.enqueues[queue];
    // allow_queuing is 0 while the device is not running: return 0 without counting anything.
    // A running device with a disabled vring gets 0 from rte_vhost_enqueue_burst: counted as missed.
    if (!eq.attached) return 0;
    let sent = 0;
    while (sent < n) {
      const want = Math.min(n - sent, VHOST_MAX_PKT_BURST);
      const got = eq.burst(pkts, want, sent);
      sent += got;
      if (got < want) break;
    }
    let bytes = 0;
    for (let i = 0; i < sent; i++) {
      bytes += pkts[i].len;
      pkts[i].free();
    }
    this.counters.txPackets += sent;
    this.counters.txBytes += bytes;
    this.txQueuePackets[queue] += sent;
    this.txQueueStats[queue].missedPkts += n - sent;
    return sent;
  }

  stats(): PortCounters {
    return this.counters;
  }

  /** eth_stats_reset also clears missed_pkts. */
  resetStats(): void {
    this.counters.reset();
    this.rxQueuePackets.fill(0);
    this.txQueuePackets.fill(0);
    for (const s of this.txQueueStats) s.missedPkts = 0;
  }

  /** Per-queue packet counts (a copy, for results). */
  queueCounts(): { rx: number[]; tx: number[] } {
    return { rx: Array.from(this.rxQueuePackets), tx: Array.from(this.txQueuePackets) };
  }

  /** Sum of missed_pkts over the TX queues. */
  get missedPkts(): number {
    let n = 0;
    for (const s of this.txQueueStats) n += s.missedPkts;
    return n;
  }
}
