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
 */
import { PacketBuffer } from '../memory/index.ts';
import type { RingDriver } from '../ring/factory.ts';
import type { EventHandle, Scheduler } from '../sim/scheduler.ts';
import type { GuestMbuf, GuestMbufPool } from './guest-mbuf.ts';
import { isMergeable, vhostHeaderLength } from './net-header.ts';
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
}

export class GuestVirtioNet implements StreamTransport {
  readonly name: string;
  readonly mac: number;
  readonly qp: VirtioNetQueuePair;
  readonly pollInterval: number;
  readonly budget: number;
  private readonly senders = new Map<number, StreamSender>();
  private readonly receivers = new Map<number, StreamReceiver>();
  private readonly rxPkts: GuestMbuf[] = [];
  private readonly pending: GuestMbuf[] = [];
  private pendingDescs = 0;
  private readonly scratch: PacketBuffer;
  private readonly txScratch: PacketBuffer;
  private timer: EventHandle | null = null;
  private readonly pollFn = () => this.poll();

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
    this.mac = opts.mac;
    this.pollInterval = opts.pollInterval ?? 2e-5;
    this.budget = opts.budget ?? 64;
    this.scratch = new PacketBuffer(Math.ceil((opts.maxFrame ?? 65535) / 8) * 8);
    this.txScratch = new PacketBuffer(this.scratch.bytes.length);
    this.qp = new VirtioNetQueuePair(opts.pool, {
      hdrLen: vhostHeaderLength(opts.features),
      mergeable: isMergeable(opts.features),
      queue: 0,
      onKick: opts.onKick,
      pollMode: false,
    });
  }

  get pool(): GuestMbufPool {
    return this.qp.pool;
  }

  /** Driver start on a (re)initialised device. */
  attach(rx: RingDriver<GuestMbuf>, tx: RingDriver<GuestMbuf>): void {
    this.qp.attach(rx, tx);
  }

  /** Device reset: rings dropped, pending frames and every slot back in the pool. */
  reset(): void {
    this.qp.detach();
    this.pending.length = 0;
    this.pendingDescs = 0;
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
    if (this.timer === null) this.timer = this.sched.after(this.pollInterval, this.pollFn, `${this.name} napi`);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** Used-buffer notification from the back-end (the call eventfd): the poll loop picks the work up. */
  interrupt(_vring: number): void {}

  private poll(): void {
    this.timer = this.sched.after(this.pollInterval, this.pollFn, `${this.name} napi`);
    this.runOnce();
  }

  /** One NAPI poll: receive, dispatch, let the senders send, hand the frames to the TX ring. */
  runOnce(): void {
    const now = this.sched.now;
    const n = this.qp.receive(this.rxPkts, this.budget);
    for (let i = 0; i < n; i++) {
      const m = this.rxPkts[i];
      const len = m.copyTo(this.scratch);
      m.free();
      this.framesIn++;
      const b = this.scratch.bytes;
      if (!verifyFrame(b, len)) {
        this.corrupt++;
        continue;
      }
      const flow = frameFlow(b);
      const kind = frameKind(b);
      if (kind === FrameKind.Segment && this.receivers.has(flow)) {
        this.receivers.get(flow)!.onSegment(frameSeq(b), len - FRAME_HEADER_LEN, now, this);
      } else if (kind === FrameKind.Ack && this.senders.has(flow)) {
        this.senders.get(flow)!.onAck(frameAck(b), now);
      } else {
        this.unknown++;
      }
    }
    for (const s of this.senders.values()) s.pump(now, this);
    this.flushTx();
  }

  private flushTx(): void {
    const k = this.pending.length;
    if (k === 0) return;
    const sent = this.qp.transmit(this.pending, k);
    this.framesOut += sent;
    for (let i = sent; i < k; i++) {
      this.txRefused++;
      this.pending[i].free();
    }
    this.pending.length = 0;
    this.pendingDescs = 0;
  }

  canSend(len: number): boolean {
    if (!this.qp.attached) return false;
    const segs = Math.max(1, Math.ceil(len / this.qp.pool.dataRoom));
    return this.qp.txFreeDescriptors() - this.pendingDescs >= segs && this.qp.pool.available >= segs;
  }

  send(fields: FrameFields, len: number): boolean {
    writeFrame(this.txScratch.bytes, fields, len);
    const m = this.qp.pool.allocFrame(this.txScratch, len);
    if (m === null) return false;
    this.pending.push(m);
    this.pendingDescs += m.nbSegs;
    return true;
  }
}
