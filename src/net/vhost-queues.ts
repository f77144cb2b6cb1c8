/**
 * The back-end side of virtio-net queues, as DPDK 22.11's vhost library does it for the
 * vhost PMD (lib/vhost/virtio_net.c):
 *
 * - `VhostDequeue` serves a guest TX vring (odd index): pop a chain, skip the virtio-net
 *   header, copy the frame into a host mbuf, mark the chain used with length 0, publish
 *   and decide whether to call the guest (virtio_dev_tx_split / _packed).
 * - `VhostEnqueue` serves a guest RX vring (even index): for each packet take buffers
 *   until header + frame fit (several with MRG_RXBUF, exactly one without), write the
 *   header (num_buffers in the first buffer) and the frame, mark them used with the bytes
 *   written, publish, maybe call (virtio_dev_rx_split / _packed).
 *
 * A queue is attached to a `RingDevice` over some guest memory and can be detached at any
 * moment; all ring state lives in the device half and in guest memory, so after a
 * back-end restart a new queue object (or this one, re-attached) works on a new device
 * half built from the restored base. What was in flight when the back-end vanished is
 * reported so invariant checkers can compare the loss with what the protocol allows.
 *
 * Completions are synchronous by default (DPDK's sync path: the shadow used ring is
 * flushed at the end of the burst). With `completionDelay` > 0 the used entries of a
 * burst are written that much virtual time later (as with the vhost async/DMA path,
 * whose completions a later poll collects): this opens the window in which a crashed
 * back-end leaves buffers popped but not used.
 */
import type { GuestMemory } from '../memory/index.ts';
import { PacketBuffer } from '../memory/index.ts';
import type { RingDevice } from '../ring/factory.ts';
import { DescriptorChain } from '../ring/types.ts';
import { RingError } from '../ring/errors.ts';
import { SplitDevice } from '../ring/split/index.ts';
import { PackedDevice } from '../ring/packed/index.ts';
import type { EventHandle, Scheduler } from '../sim/scheduler.ts';
import { fillRxHeader, NET_HDR_LEN_MRG, type NetHeaderLength } from './net-header.ts';
import type { Mbuf, MbufPool } from './mbuf.ts';

/** DPDK's MAX_PKT_BURST in virtio_net.c: a dequeue never takes more per call. */
export const VHOST_MAX_PKT_BURST = 32;
/** DPDK's BUF_VECTOR_MAX: the most segments one packet may use. */
export const BUF_VECTOR_MAX = 256;

export interface VhostQueueOptions {
  /** Negotiated virtio-net header length (`vhostHeaderLength(features)`). */
  hdrLen: NetHeaderLength;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated (enqueue only). */
  mergeable?: boolean;
  /** Called when a flush says the guest wants a used-buffer notification (write the call eventfd). */
  notify?: () => void;
  /** Virtual seconds between taking buffers and marking them used (default 0: same burst). */
  completionDelay?: number;
  /** Needed when completionDelay > 0. */
  scheduler?: Scheduler;
  /** Vring index, for reports (default -1). */
  vring?: number;
}

export type QueueDirection = 'guest-tx' | 'guest-rx';

/** What a detach left behind. */
export interface DetachReport {
  vring: number;
  direction: QueueDirection;
  graceful: boolean;
  /**
   * Packets whose buffers were taken and not marked used when the back-end vanished. Guest
   * TX: already handed to the application; a restore from the used index (split) offers
   * them again, so they may be delivered twice. Guest RX: written into guest buffers that
   * never became used; the guest never sees them (lost).
   */
  packetsInFlight: number;
  /** Guest buffers (chains) taken and not marked used, including those holding no data yet. */
  buffersInFlight: number;
  /** Guest RX buffers taken for a packet that did not fit, holding no data. */
  reservedBuffers: number;
}

export class VhostQueueStats {
  /** Packets and bytes moved (frames, without the virtio-net header). */
  packets = 0;
  bytes = 0;
  /** Flushes that asked for a guest notification (calls). */
  calls = 0;
  /** Kicks the control plane reported for this queue. */
  kicks = 0;
  /** Malformed chains met (the queue stops at the chain, as DPDK does). */
  ringErrors = 0;
  /** Guest TX chains with no frame after the header: used and dropped (virtio_dev_tx_split). */
  badChains = 0;
  /** Sum of `packetsInFlight` over crash detaches. */
  packetsInFlightAtLoss = 0;
  buffersInFlightAtLoss = 0;
  /** Guest RX buffers handed back to the ring at a graceful stop (never written). */
  buffersReturned = 0;
}

/** State common to both directions: attachment, deferred completion, reporting. */
abstract class VhostQueue {
  readonly stats = new VhostQueueStats();
  /** The last malformed chain met, if the queue is stuck at one. */
  lastRingError: RingError | null = null;
  abstract readonly direction: QueueDirection;

  protected ring: RingDevice | null = null;
  protected mem: GuestMemory | null = null;
  protected hdrLen: NetHeaderLength = NET_HDR_LEN_MRG;
  protected mergeable = false;
  protected notifyHook: (() => void) | undefined;
  protected delay = 0;
  protected sched: Scheduler | null = null;
  protected vringIndex = -1;
  private enabledFlag = true;

  // Taken, not yet marked used (deferred completion).
  protected pendId: Uint32Array = new Uint32Array(0);
  protected pendLen: Uint32Array = new Uint32Array(0);
  protected pendCount = 0;
  protected pendPackets = 0;
  private completion: EventHandle | null = null;
  private readonly completeFn = () => {
    this.completion = null;
    this.completePending();
  };

  get attached(): boolean {
    return this.ring !== null;
  }

  /** SET_VRING_ENABLE: a disabled ring moves nothing (DPDK returns 0 when !vq->enabled). */
  get enabled(): boolean {
    return this.enabledFlag;
  }
  setEnabled(on: boolean): void {
    this.enabledFlag = on;
  }

  get vring(): number {
    return this.vringIndex;
  }

  /** The device half in use (undefined when detached). */
  get device(): RingDevice | undefined {
    return this.ring ?? undefined;
  }

  /** Packets taken whose used entries are not written yet. */
  get packetsPending(): number {
    return this.pendPackets;
  }

  attach(ring: RingDevice, mem: GuestMemory, opts: VhostQueueOptions): void {
    if (this.ring !== null) throw new Error(`vring ${this.vringIndex}: attach while attached (detach the old device half first)`);
    const delay = opts.completionDelay ?? 0;
    if (!(delay >= 0) || !Number.isFinite(delay)) throw new RangeError(`completionDelay ${delay} is not a finite non-negative number`);
    if (delay > 0 && opts.scheduler === undefined) throw new TypeError('completionDelay > 0 needs a scheduler');
    if (opts.mergeable === true && opts.hdrLen !== NET_HDR_LEN_MRG) throw new RangeError('MRG_RXBUF implies the 12-byte header');
    this.ring = ring;
    this.mem = mem;
    this.hdrLen = opts.hdrLen;
    this.mergeable = opts.mergeable ?? false;
    this.notifyHook = opts.notify;
    this.delay = delay;
    this.sched = opts.scheduler ?? null;
    this.vringIndex = opts.vring ?? this.vringIndex;
    if (this.pendId.length < ring.size) {
      this.pendId = new Uint32Array(ring.size);
      this.pendLen = new Uint32Array(ring.size);
    }
    this.pendCount = 0;
    this.pendPackets = 0;
    this.lastRingError = null;
    this.onAttach();
  }

  /**
   * Stops using the device half. Graceful (a stop the back-end performs: testpmd `stop`,
   * GET_VRING_BASE after destroy_device): everything taken is completed first, and buffers
   * taken but unused are handed back to the ring. Crash (back-end killed, socket gone):
   * nothing more is written; what was in flight is counted and reported.
   */
  detach(mode: 'graceful' | 'crash' = 'crash'): DetachReport {
    const graceful = mode === 'graceful';
    const report: DetachReport = { vring: this.vringIndex, direction: this.direction, graceful, packetsInFlight: 0, buffersInFlight: 0, reservedBuffers: 0 };
    if (this.ring === null) return report;
    if (this.completion !== null) {
      this.completion.cancel();
      this.completion = null;
    }
    if (graceful) {
      this.completePending();
      report.reservedBuffers = this.returnReserved();
    } else {
      report.packetsInFlight = this.pendPackets;
      report.reservedBuffers = this.reservedCount();
      report.buffersInFlight = this.pendCount + report.reservedBuffers;
      this.stats.packetsInFlightAtLoss += report.packetsInFlight;
      this.stats.buffersInFlightAtLoss += report.buffersInFlight;
    }
    this.pendCount = 0;
    this.pendPackets = 0;
    this.dropReserved();
    this.ring = null;
    this.mem = null;
    this.notifyHook = undefined;
    return report;
  }

  /** The guest kicked this queue. The PMD polls, so this only counts (a notification-driven back-end would poll now). */
  kick(): void {
    this.stats.kicks++;
  }

  protected onAttach(): void {}
  protected reservedCount(): number {
    return 0;
  }
  protected returnReserved(): number {
    return 0;
  }
  protected dropReserved(): void {}

  /** Records a used entry: written now (sync) or at the completion event. */
  protected used(id: number, len: number): void {
    if (this.delay === 0) {
      this.ring!.push(id, len);
      return;
    }
    this.pendId[this.pendCount] = id;
    this.pendLen[this.pendCount] = len;
    this.pendCount++;
  }

  /** End of a burst: publish (sync) or make sure a completion is scheduled. */
  protected endBurst(pushed: number, packets: number): void {
    if (pushed === 0) return;
    if (this.delay === 0) {
      this.flushAndNotify();
      return;
    }
    this.pendPackets += packets;
    if (this.completion === null) this.completion = this.sched!.after(this.delay, this.completeFn, `vhost vring ${this.vringIndex} completion`);
  }

  /** Writes every pending used entry and publishes them. */
  completePending(): void {
    const ring = this.ring;
    if (ring === null || this.pendCount === 0) return;
    for (let i = 0; i < this.pendCount; i++) ring.push(this.pendId[i], this.pendLen[i]);
    this.pendCount = 0;
    this.pendPackets = 0;
    this.flushAndNotify();
  }

  protected flushAndNotify(): void {
    if (this.ring!.flush()) {
      this.stats.calls++;
      this.notifyHook?.();
    }
  }

  /** pop() that turns a malformed chain into "stop here", as DPDK's bursts do. */
  protected tryPop(chain: DescriptorChain): boolean {
    try {
      const got = this.ring!.pop(chain);
      if (got) this.lastRingError = null;
      return got;
    } catch (e) {
      if (!(e instanceof RingError)) throw e;
      if (this.lastRingError === null || this.lastRingError.code !== e.code || this.lastRingError.where !== e.where) this.stats.ringErrors++;
      this.lastRingError = e;
      return false;
    }
  }
}

/** Back-end side of a guest TX vring: `rte_vhost_dequeue_burst`. */
export class VhostDequeue extends VhostQueue {
  readonly direction = 'guest-tx' as const;
  private readonly chain = new DescriptorChain(BUF_VECTOR_MAX);

  /**
   * Takes up to `max` (at most 32) packets into `out` starting at `outOffset`, with mbufs
   * from `pool`; returns how many. Nothing when detached or disabled.
   */
  burst(pool: MbufPool, out: Mbuf[], max: number, outOffset = 0): number {
    const ring = this.ring;
    const mem = this.mem;
    if (ring === null || mem === null || !this.enabled) return 0;
    const count = Math.min(max, VHOST_MAX_PKT_BURST);
    const chain = this.chain;
    const hlen = this.hdrLen;
    let n = 0;
    let pushed = 0;
    while (n < count) {
      // DPDK allocates the burst's mbufs before touching the ring and gives up when it cannot.
      if (pool.available < 1) break;
      if (!this.tryPop(chain)) break;
      pushed++;
      this.used(chain.id, 0);
      if (chain.readableBytes <= hlen) {
        // virtio_dev_tx_split: a chain holding no more than the header is used and dropped, and ends the burst.
        this.stats.badChains++;
        break;
      }
      const m = pool.alloc()!;
      m.reserve(chain.readableBytes - hlen);
      let skip = hlen;
      let off = 0;
      for (let s = 0; s < chain.count; s++) {
        if (chain.writable[s] === 1) break; // readable segments come first; DPDK reads only those
        let a = chain.addr[s];
        let l = chain.len[s];
        if (skip > 0) {
          const k = skip < l ? skip : l;
          a += k;
          l -= k;
          skip -= k;
        }
        if (l > 0) {
          mem.copyOut(a, m.buf, off, l);
          off += l;
        }
      }
      m.len = off;
      out[outOffset + n] = m;
      n++;
      this.stats.packets++;
      this.stats.bytes += off;
    }
    this.endBurst(pushed, n);
    return n;
  }
}

/** Back-end side of a guest RX vring: `rte_vhost_enqueue_burst`. */
export class VhostEnqueue extends VhostQueue {
  readonly direction = 'guest-rx' as const;
  /**
   * Chains popped and not yet used, oldest first. DPDK peeks at the avail ring and only
   * consumes what a packet needs; the ring API can only pop, so buffers taken for a packet
   * that then did not fit are kept here for the next packet (in ring order), and handed
   * back to the ring (the device's avail position rewound) when the queue stops gracefully.
   */
  private reserve: DescriptorChain[] = [];
  private resHead = 0;
  private resCount = 0;
  private readonly hdr = new PacketBuffer(16);
  // scatter cursor
  private curChain = 0;
  private curSeg = 0;
  private curOff = 0;

  protected override onAttach(): void {
    this.resHead = 0;
    this.resCount = 0;
  }

  protected override reservedCount(): number {
    return this.resCount;
  }

  protected override dropReserved(): void {
    this.resHead = 0;
    this.resCount = 0;
  }

  /** Rewinds the device over the reserved chains (quiescent: everything else is used and flushed). */
  protected override returnReserved(): number {
    const n = this.resCount;
    if (n === 0) return 0;
    const ring = this.ring!;
    if (ring instanceof SplitDevice) {
      const s = ring.saveState();
      ring.restoreState({ lastAvailIdx: (s.lastAvailIdx - n) & 0xffff });
    } else if (ring instanceof PackedDevice) {
      let descs = 0;
      for (let i = 0; i < n; i++) descs += this.reserveAt(i).ringDescriptors;
      const s = ring.saveState();
      let pos = s.lastAvailIdx - descs;
      let wrap = s.availWrap;
      while (pos < 0) {
        pos += ring.size;
        wrap = !wrap;
      }
      ring.restoreState({ lastAvailIdx: pos, availWrap: wrap });
    } else {
      // Another RingDevice implementation: the buffers stay taken; report them.
      return 0;
    }
    this.stats.buffersReturned += n;
    return n;
  }

  private reserveAt(i: number): DescriptorChain {
    // Called several times per packet: subtract rather than divide (i never exceeds the reserve).
    const n = this.reserve.length;
    let k = this.resHead + i;
    while (k >= n && n > 0) k -= n;
    return this.reserve[k];
  }

  /** Pops one more chain into the reserve; false when the guest has none available. */
  private take(): boolean {
    const size = this.ring!.size;
    if (this.reserve.length === 0) this.reserve = [new DescriptorChain(BUF_VECTOR_MAX)];
    if (this.resCount === this.reserve.length) {
      // Grow the circular reserve, keeping order (only while a large packet needs many buffers).
      const ordered: DescriptorChain[] = [];
      for (let i = 0; i < this.resCount; i++) ordered.push(this.reserveAt(i));
      const grown = Math.min(Math.max(2 * ordered.length, 2), size);
      while (ordered.length < grown) ordered.push(new DescriptorChain(BUF_VECTOR_MAX));
      this.reserve = ordered;
      this.resHead = 0;
    }
    const slot = this.reserve[(this.resHead + this.resCount) % this.reserve.length];
    if (!this.tryPop(slot)) return false;
    this.resCount++;
    return true;
  }

  /**
   * Copies `pkts[start .. start+n)` into the guest; returns how many fit, in order. The
   * burst stops at the first packet that does not fit (no RX buffers, or buffers too
   * small without MRG_RXBUF): DPDK's virtio_dev_rx leaves the rest to the caller, which
   * (the vhost PMD) counts them as missed and frees them. The mbufs are not freed here.
   */
  burst(pkts: readonly Mbuf[], n: number, start = 0): number {
    const ring = this.ring;
    const mem = this.mem;
    if (ring === null || mem === null || !this.enabled) return 0;
    const hlen = this.hdrLen;
    // reserve_avail_buf_split: max_tries = size - 1 buffers with MRG_RXBUF, else 1.
    const maxBuffers = this.mergeable ? Math.max(ring.size - 1, 1) : 1;
    let sent = 0;
    let pushed = 0;
    for (; sent < n; sent++) {
      const m = pkts[start + sent];
      const need = m.len + hlen;
      let have = 0;
      let nbuf = 0;
      let ok = true;
      while (have < need) {
        if (nbuf === maxBuffers) {
          ok = false;
          break;
        }
        if (nbuf === this.resCount && !this.take()) {
          ok = false;
          break;
        }
        have += this.reserveAt(nbuf).writableBytes;
        nbuf++;
      }
      if (!ok) break;
      // Header (num_buffers only matters with MRG_RXBUF; without it the spec wants 1 in the 12-byte form).
      fillRxHeader(this.hdr, this.mergeable ? nbuf : 1);
      this.curChain = 0;
      this.curSeg = 0;
      this.curOff = 0;
      this.scatter(mem, this.hdr, 0, hlen);
      this.scatter(mem, m.buf, 0, m.len);
      let left = need;
      for (let b = 0; b < nbuf; b++) {
        const c = this.reserveAt(b);
        const len = c.writableBytes < left ? c.writableBytes : left;
        left -= len;
        this.used(c.id, len);
        pushed++;
      }
      this.resHead = (this.resHead + nbuf) % this.reserve.length;
      this.resCount -= nbuf;
      this.stats.packets++;
      this.stats.bytes += m.len;
    }
    this.endBurst(pushed, sent);
    return sent;
  }

  /** Writes `len` bytes of `src` at the cursor, across the writable segments of the reserved chains. */
  private scatter(mem: GuestMemory, src: PacketBuffer, srcOff: number, len: number): void {
    while (len > 0) {
      const c = this.reserveAt(this.curChain);
      if (this.curSeg >= c.count) {
        this.curChain++;
        this.curSeg = 0;
        this.curOff = 0;
        continue;
      }
      const s = this.curSeg;
      const room = c.writable[s] === 1 ? c.len[s] - this.curOff : 0;
      if (room <= 0) {
        this.curSeg++;
        this.curOff = 0;
        continue;
      }
      const k = room < len ? room : len;
      mem.copyIn(c.addr[s] + this.curOff, src, srcOff, k);
      this.curOff += k;
      srcOff += k;
      len -= k;
    }
  }
}
