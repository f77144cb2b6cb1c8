/**
 * The guest driver side of one virtio-net queue pair, shared by the guest's DPDK virtio
 * PMD and the kernel virtio-net model: it owns no ring, only uses the `RingDriver`s it is
 * given (RX = vring 2q, TX = vring 2q+1), so the same driver halves survive a back-end
 * restart untouched and a guest reboot simply hands it new ones.
 *
 * RX (DPDK drivers/net/virtio/virtio_rxtx.c, virtio_recv_mergeable_pkts and the refill):
 * each RX buffer is one device-writable descriptor over a mempool slot, starting
 * `hdrLen` bytes before the data room so the header lands in the headroom
 * (addr = buf + headroom − hdr, len = data room + hdr). A used buffer starts a packet; with
 * MRG_RXBUF its header's num_buffers says how many used buffers make the packet (0 is read
 * as 1), the later ones carrying data from their first byte. A first buffer shorter than
 * header + Ethernet header is dropped and counted as an RX error.
 *
 * TX (virtqueue_enqueue_xmit, the "can push" case): the header is written (zeroed) in the
 * headroom just before the data and the first descriptor covers header + first segment;
 * further segments follow as readable descriptors. Used TX buffers are reclaimed before
 * each transmit and their slots freed.
 */
import type { GuestMemory } from '../memory/index.ts';
import type { RingDriver } from '../ring/factory.ts';
import type { Segment, UsedBuffer } from '../ring/types.ts';
import type { GuestMbuf, GuestMbufPool } from './guest-mbuf.ts';
import type { NetHeaderLength } from './net-header.ts';
import { PortCounters } from './port.ts';

const RTE_ETHER_HDR_LEN = 14;

export interface VirtioQueuePairOptions {
  hdrLen: NetHeaderLength;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated. */
  mergeable: boolean;
  /** Queue pair number: vrings 2q (RX) and 2q+1 (TX). */
  queue?: number;
  /** Called with the vring index when a publish says the device wants a kick. */
  onKick?: (vring: number) => void;
  /** Poll-mode drivers turn used-buffer notifications off (default true). */
  pollMode?: boolean;
}

export class VirtioNetQueuePair {
  readonly queue: number;
  readonly counters = new PortCounters();
  /** Kicks sent, per direction. */
  rxKicks = 0;
  txKicks = 0;
  hdrLen: NetHeaderLength;
  mergeable: boolean;
  private rx: RingDriver<GuestMbuf> | null = null;
  private tx: RingDriver<GuestMbuf> | null = null;
  private readonly onKick: ((vring: number) => void) | undefined;
  private readonly pollMode: boolean;
  private readonly used: UsedBuffer<GuestMbuf> = { token: undefined as unknown as GuestMbuf, len: 0, id: 0 };
  private readonly rxSeg: Segment[] = [{ addr: 0, len: 0, writable: true }];
  /** txSegs[k] is an array of k reusable segment objects. */
  private readonly txSegs: Segment[][] = [];
  // mergeable packet being assembled
  private asmHead: GuestMbuf | null = null;
  private asmTail: GuestMbuf | null = null;
  private asmLeft = 0;

  constructor(
    readonly pool: GuestMbufPool,
    opts: VirtioQueuePairOptions,
  ) {
    this.queue = opts.queue ?? 0;
    this.hdrLen = opts.hdrLen;
    this.mergeable = opts.mergeable;
    this.onKick = opts.onKick;
    this.pollMode = opts.pollMode ?? true;
  }

  get mem(): GuestMemory {
    return this.pool.mem;
  }

  get attached(): boolean {
    return this.rx !== null && this.tx !== null;
  }

  get rxVring(): number {
    return 2 * this.queue;
  }
  get txVring(): number {
    return 2 * this.queue + 1;
  }

  /** TX descriptors free right now (after reclaiming completed ones). */
  txFreeDescriptors(): number {
    if (this.tx === null) return 0;
    this.reclaimTx();
    return this.tx.freeDescriptors;
  }

  /**
   * Takes the driver halves of a freshly initialised device (driver start / after a
   * reset): fills the RX ring, as the PMD does at dev_start.
   */
  attach(rx: RingDriver<GuestMbuf>, tx: RingDriver<GuestMbuf>, features?: { hdrLen: NetHeaderLength; mergeable: boolean }): void {
    if (features !== undefined) {
      this.hdrLen = features.hdrLen;
      this.mergeable = features.mergeable;
    }
    this.rx = rx;
    this.tx = tx;
    this.asmHead = this.asmTail = null;
    this.asmLeft = 0;
    if (this.pollMode) {
      rx.disableNotifications();
      tx.disableNotifications();
    }
    this.refill();
  }

  /**
   * Forgets the driver halves (device reset, guest reboot). The slots they held are not
   * freed here: the pool's owner resets the pool, since the rings' contents are abandoned.
   */
  detach(): void {
    this.rx = null;
    this.tx = null;
    this.asmHead = this.asmTail = null;
    this.asmLeft = 0;
  }

  /** Posts a buffer on every free RX descriptor the pool can fill; kicks if the device asks. */
  refill(): number {
    const rx = this.rx;
    if (rx === null) return 0;
    const pool = this.pool;
    const seg = this.rxSeg[0];
    const hlen = this.hdrLen;
    let added = 0;
    while (rx.freeDescriptors > 0) {
      const m = pool.alloc();
      if (m === null) {
        // DPDK adds the whole shortfall to rx_mbuf_alloc_failed.
        this.counters.rxNombuf += rx.freeDescriptors;
        break;
      }
      seg.addr = m.bufGpa + pool.headroom - hlen;
      seg.len = pool.dataRoom + hlen;
      rx.add(this.rxSeg, m);
      added++;
    }
    if (added > 0 && rx.publish()) {
      this.rxKicks++;
      this.onKick?.(this.rxVring);
    }
    return added;
  }

  /** Up to `max` received packets into `out`; refills the RX ring afterwards. */
  receive(out: GuestMbuf[], max: number): number {
    const rx = this.rx;
    if (rx === null) return 0;
    const mem = this.pool.mem;
    const hlen = this.hdrLen;
    const used = this.used;
    const headroom = this.pool.headroom;
    let n = 0;
    while (n < max && rx.reclaim(used)) {
      const m = used.token;
      const len = used.len;
      const bufStart = m.bufGpa + headroom - hlen;
      if (this.asmHead === null) {
        if (len < hlen + RTE_ETHER_HDR_LEN) {
          this.counters.rxErrors++;
          m.free();
          continue;
        }
        let segs = 1;
        if (this.mergeable) {
          segs = mem.readU16(bufStart + 10);
          if (segs === 0) segs = 1;
        }
        m.dataGpa = bufStart + hlen;
        m.dataLen = len - hlen;
        m.pktLen = m.dataLen;
        m.nbSegs = 1;
        m.next = null;
        if (segs > 1) {
          this.asmHead = this.asmTail = m;
          this.asmLeft = segs - 1;
          continue;
        }
        this.deliver(out, n++, m);
      } else {
        m.dataGpa = bufStart;
        m.dataLen = len;
        m.next = null;
        const head = this.asmHead;
        this.asmTail!.next = m;
        this.asmTail = m;
        head.pktLen += len;
        head.nbSegs++;
        if (--this.asmLeft === 0) {
          this.asmHead = this.asmTail = null;
          this.deliver(out, n++, head);
        }
      }
    }
    this.refill();
    return n;
  }

  private deliver(out: GuestMbuf[], i: number, m: GuestMbuf): void {
    out[i] = m;
    this.counters.rxPackets++;
    this.counters.rxBytes += m.pktLen;
  }

  /** Frees the slots of completed transmissions. */
  reclaimTx(): number {
    const tx = this.tx;
    if (tx === null) return 0;
    let n = 0;
    while (tx.reclaim(this.used)) {
      this.used.token.free();
      n++;
    }
    return n;
  }

  /**
   * Queues `pkts[0..n)` for transmission, in order, while descriptors last; returns how
   * many went. The ring takes the sent ones (freed when used); the caller keeps the rest.
   */
  transmit(pkts: readonly GuestMbuf[], n: number): number {
    const tx = this.tx;
    if (tx === null) return 0;
    this.reclaimTx();
    const mem = this.pool.mem;
    const hlen = this.hdrLen;
    let sent = 0;
    for (; sent < n; sent++) {
      const m = pkts[sent];
      const nseg = m.nbSegs;
      if (tx.freeDescriptors < nseg) break;
      const hdrGpa = m.dataGpa - hlen;
      if (hdrGpa < m.bufGpa) throw new RangeError(`guest mbuf ${m.index}: no headroom for the virtio-net header`);
      mem.fill(hdrGpa, hlen, 0); // no offloads; num_buffers must be 0 on TX
      const segs = this.segArray(nseg);
      let s: GuestMbuf | null = m;
      for (let i = 0; i < nseg; i++, s = s!.next) {
        const seg = segs[i];
        if (i === 0) {
          seg.addr = hdrGpa;
          seg.len = hlen + s!.dataLen;
        } else {
          seg.addr = s!.dataGpa;
          seg.len = s!.dataLen;
        }
      }
      tx.add(segs, m);
      this.counters.txPackets++;
      this.counters.txBytes += m.pktLen;
    }
    if (sent > 0 && tx.publish()) {
      this.txKicks++;
      this.onKick?.(this.txVring);
    }
    return sent;
  }

  private segArray(k: number): Segment[] {
    let a = this.txSegs[k];
    if (a === undefined) {
      a = [];
      for (let i = 0; i < k; i++) a.push({ addr: 0, len: 0, writable: false });
      this.txSegs[k] = a;
    }
    return a;
  }
}
