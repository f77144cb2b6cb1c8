/**
 * A guest running the kernel virtio-net driver with a stream application on top — the
 * VM2VM iperf case. The driver is modelled as NAPI polling every `pollInterval` with a
 * budget, over the same queue-pair driver as the PMD (RX buffers in a guest mempool,
 * mergeable RX assembled by num_buffers, TX with the header in the headroom), but with
 * used-buffer notifications left on, as an interrupt-driven driver has them.
 *
 * Frames are verified on arrival (checksum); data segments go to the receiver of their
 * flow, ACKs to the sender of their flow. Transmission is queued during a poll and handed
 * to the TX ring at its end; a sender only queues while the ring has room (the kernel
 * stops the queue when the ring is full, so a full ring stalls rather than drops).
 *
 * Multi-queue (`queues` > 1, MQ negotiated): NAPI polls every attached queue pair, and a
 * flow's frames leave on the TX queue its hash picks among the attached pairs (the kernel's
 * skb_tx_hash: a fixed function of the flow, so a flow keeps its queue and stays in order).
 */
import { PacketBuffer } from '../memory/index.ts';
import type { RingDriver } from '../ring/factory.ts';
import type { EventHandle, Scheduler } from '../sim/scheduler.ts';
import type { GuestMbuf, GuestMbufPool } from './guest-mbuf.ts';
import { isMergeable, vhostHeaderLength } from './net-header.ts';
import { flowHash } from './nic.ts';
import { FRAME_HEADER_LEN, frameAck, frameFlow, frameKind, FrameKind, frameSeq, verifyFrame, writeFrame, type FrameFields } from './packet.ts';
import { StreamReceiver, StreamSender, type StreamReceiverOptions, type StreamSenderOptions, type StreamTransport } from './stream.ts';
import { VirtioNetQueuePair } from './virtio-net-driver.ts';

export interface GuestVirtioNetOptions {
  name?: string;
  mac: number;
  pool: GuestMbufPool;
  features: bigint;
  /** Virtual seconds between NAPI polls (default 20 µs). */
  pollInterval?: number;
  /** Packets per poll (NAPI weight, default 64). */
  budget?: number;
  onKick?: (vring: number) => void;
  /** Largest frame handled (default 65535). */
  maxFrame?: number;
  /** Queue pairs of the device (default 1). */
  queues?: number;
}

export class GuestVirtioNet implements StreamTransport {
  readonly name: string;
  readonly mac: number;
  /** Queue pair 0 (the only one without MQ). */
  readonly qp: VirtioNetQueuePair;
  readonly queuePairs: VirtioNetQueuePair[] = [];
  readonly pollInterval: number;
  readonly budget: number;
  private readonly senders = new Map<number, StreamSender>();
  private readonly receivers = new Map<number, StreamReceiver>();
  private readonly rxPkts: GuestMbuf[] = [];
  /** Frames built during a poll, per TX queue, and the descriptors they will take. */
  private readonly pending: GuestMbuf[][] = [];
  private readonly pendingDescs: Int32Array;
  /** The TX queue of the flow being served (set before a sender or receiver runs). */
  private txq = 0;
  private readonly scratch: PacketBuffer;
  private readonly txScratch: PacketBuffer;
  private timer: EventHandle | null = null;
  private readonly pollFn = () => this.poll();
  private readonly pollLabel: string;

  framesIn = 0;
  framesOut = 0;
  corrupt = 0;
  unknown = 0;
  /** Frames built but refused by the TX ring (should stay 0: senders check room first). */
  txRefused = 0;

  constructor(
    private readonly sched: Scheduler,
    opts: GuestVirtioNetOptions,
  ) {
    this.name = opts.name ?? 'vm';
    this.pollLabel = `${this.name} napi`;
    this.mac = opts.mac;
    this.pollInterval = opts.pollInterval ?? 2e-5;
    this.budget = opts.budget ?? 64;
    this.scratch = new PacketBuffer(Math.ceil((opts.maxFrame ?? 65535) / 8) * 8);
    this.txScratch = new PacketBuffer(this.scratch.bytes.length);
    const n = opts.queues ?? 1;
    for (let q = 0; q < n; q++) {
      this.queuePairs.push(
        new VirtioNetQueuePair(opts.pool, {
          hdrLen: vhostHeaderLength(opts.features),
          mergeable: isMergeable(opts.features),
          queue: q,
          onKick: opts.onKick,
          pollMode: false,
        }),
      );
      this.pending.push([]);
    }
    this.qp = this.queuePairs[0];
    this.pendingDescs = new Int32Array(n);
  }

  /** Attached queue pairs, counted from 0 (the kernel's real_num_tx_queues). */
  get activeQueues(): number {
    let n = 0;
    while (n < this.queuePairs.length && this.queuePairs[n].attached) n++;
    return n;
  }

  /** The TX queue a flow's frames leave on. */
  txQueueOf(flow: number): number {
    const n = this.activeQueues;
    return n <= 1 ? 0 : flowHash(flow) % n;
  }

  get pool(): GuestMbufPool {
    return this.qp.pool;
  }

  /** Driver start on a (re)initialised device: queue pair `q`'s rings. */
  attach(rx: RingDriver<GuestMbuf>, tx: RingDriver<GuestMbuf>, q = 0): void {
    this.queuePairs[q].attach(rx, tx);
  }

  /** Device reset: rings dropped, pending frames and every slot back in the pool. */
  reset(): void {
    for (const qp of this.queuePairs) qp.detach();
    for (const p of this.pending) p.length = 0;
    this.pendingDescs.fill(0);
    this.qp.pool.reset();
  }

  openSender(opts: Omit<StreamSenderOptions, 'src'>): StreamSender {
    const s = new StreamSender({ ...opts, src: this.mac });
    this.senders.set(opts.flow, s);
    return s;
  }

  openReceiver(opts: Omit<StreamReceiverOptions, 'src'>): StreamReceiver {
    const r = new StreamReceiver({ ...opts, src: this.mac });
    this.receivers.set(opts.flow, r);
    return r;
  }

  start(): void {
    if (this.timer === null) this.timer = this.sched.after(this.pollInterval, this.pollFn, this.pollLabel);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** Used-buffer notification from the back-end (the call eventfd): the poll loop picks the work up. */
  interrupt(_vring: number): void {}

  private poll(): void {
    this.timer = this.sched.after(this.pollInterval, this.pollFn, this.pollLabel);
    this.runOnce();
  }

  /** One NAPI poll: receive, dispatch, let the senders send, hand the frames to the TX ring. */
  runOnce(): void {
    const now = this.sched.now;
    for (let q = 0; q < this.queuePairs.length; q++) {
      const qp = this.queuePairs[q];
      if (!qp.attached) continue;
      const n = qp.receive(this.rxPkts, this.budget);
      for (let i = 0; i < n; i++) this.dispatch(this.rxPkts[i], now);
    }
    for (const s of this.senders.values()) {
      this.txq = this.txQueueOf(s.flow);
      s.pump(now, this);
    }
    this.flushTx();
  }

  private dispatch(m: GuestMbuf, now: number): void {
    const len = m.copyTo(this.scratch);
    m.free();
    this.framesIn++;
    const b = this.scratch.bytes;
    if (!verifyFrame(b, len)) {
      this.corrupt++;
      return;
    }
    const flow = frameFlow(b);
    const kind = frameKind(b);
    if (kind === FrameKind.Segment && this.receivers.has(flow)) {
      this.txq = this.txQueueOf(flow);
      this.receivers.get(flow)!.onSegment(frameSeq(b), len - FRAME_HEADER_LEN, now, this);
    } else if (kind === FrameKind.Ack && this.senders.has(flow)) {
      this.senders.get(flow)!.onAck(frameAck(b), now);
    } else {
      this.unknown++;
    }
  }

  private flushTx(): void {
    for (let q = 0; q < this.queuePairs.length; q++) {
      const pending = this.pending[q];
      const k = pending.length;
      if (k === 0) continue;
      const sent = this.queuePairs[q].transmit(pending, k);
      this.framesOut += sent;
      for (let i = sent; i < k; i++) {
        this.txRefused++;
        pending[i].free();
      }
      pending.length = 0;
      this.pendingDescs[q] = 0;
    }
  }

  canSend(len: number): boolean {
    const qp = this.queuePairs[this.txq];
    if (qp === undefined || !qp.attached) return false;
    const segs = Math.max(1, Math.ceil(len / qp.pool.dataRoom));
    return qp.txFreeDescriptors() - this.pendingDescs[this.txq] >= segs && qp.pool.available >= segs;
  }

  send(fields: FrameFields, len: number): boolean {
    writeFrame(this.txScratch.bytes, fields, len);
    const m = this.qp.pool.allocFrame(this.txScratch, len);
    if (m === null) return false;
    this.pending[this.txq].push(m);
    this.pendingDescs[this.txq] += m.nbSegs;
    return true;
  }
}
