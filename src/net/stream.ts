/**
 * A small reliable stream, TCP-like, standing in for iperf between two guests (VM2VM).
 * It counts in whole segments rather than bytes: segment k carries payload bytes
 * k·P … (k+1)·P−1 of the transfer, so a sequence number names a segment.
 *
 * Sender: slow start and congestion avoidance on a window counted in segments (cwnd,
 * ssthresh), cumulative ACKs, fast retransmit after three duplicate ACKs with NewReno-style
 * recovery (a partial ACK retransmits the next hole), and a retransmission timer in virtual
 * time (RFC 6298 estimator with Karn's rule, exponential backoff up to `maxRto`) that on
 * expiry resets cwnd to 1 and goes back to the oldest unacknowledged segment.
 * Receiver: delivers in order, keeps out-of-order segments, acknowledges every segment with
 * the next segment it expects.
 *
 * Neither side owns time or a device: the host (GuestVirtioNet) calls them with the
 * current virtual time and a transport.
 */
import { FRAME_HEADER_LEN, FrameKind, MIN_FRAME_LEN, type FrameFields } from './packet.ts';

export interface StreamTransport {
  /** True when a frame of `len` bytes can be queued now. */
  canSend(len: number): boolean;
  /** Queues a frame; false when it could not (then nothing was sent). */
  send(fields: FrameFields, len: number): boolean;
}

export interface StreamSenderOptions {
  flow: number;
  /** Segments to transfer. */
  segments: number;
  /** Frame length of a data segment (default 1514); the payload is that minus the frame header. */
  frameLen?: number;
  src: number;
  dst: number;
  /** Initial congestion window in segments (default 10, as Linux). */
  initialCwnd?: number;
  /** Receiver window in segments (default 512). */
  rwnd?: number;
  /** Retransmission timeout bounds and start value, virtual seconds (defaults 0.2 / 2 / 1). */
  minRto?: number;
  maxRto?: number;
  initialRto?: number;
}

export interface StreamSenderReport {
  flow: number;
  segments: number;
  payloadBytes: number;
  /** Data frames sent, first transmissions and retransmissions. */
  framesSent: number;
  retransmissions: number;
  timeouts: number;
  fastRetransmits: number;
  acked: number;
  done: boolean;
  startedAt: number;
  finishedAt: number;
  /** Payload bits per virtual second over the transfer (0 until done). */
  throughputBps: number;
}

export class StreamSender {
  readonly flow: number;
  readonly total: number;
  readonly frameLen: number;
  readonly payload: number;
  private readonly fields: FrameFields;
  private readonly rwnd: number;
  private readonly minRto: number;
  private readonly maxRto: number;

  una = 0;
  nextSeq = 0;
  /** One past the highest segment ever sent. */
  highSent = 0;
  cwnd: number;
  ssthresh = Infinity;
  rto: number;
  private srtt = -1;
  private rttvar = 0;
  private rttSeq = -1;
  private rttStart = 0;
  private deadline = Infinity;
  private dupAcks = 0;
  private inRecovery = false;
  private recover = 0;
  /** A single segment to retransmit at the next pump (fast retransmit / partial ACK). */
  private retransmitSeq = -1;

  framesSent = 0;
  retransmissions = 0;
  timeouts = 0;
  fastRetransmits = 0;
  startedAt = -1;
  finishedAt = -1;

  constructor(opts: StreamSenderOptions) {
    this.flow = opts.flow;
    this.total = opts.segments;
    if (!Number.isInteger(this.total) || this.total < 1) throw new RangeError(`segments ${this.total} is not a positive integer`);
    this.frameLen = opts.frameLen ?? 1514;
    if (this.frameLen < MIN_FRAME_LEN) throw new RangeError(`frame length ${this.frameLen} is below ${MIN_FRAME_LEN}`);
    this.payload = this.frameLen - FRAME_HEADER_LEN;
    this.fields = { dst: opts.dst, src: opts.src, kind: FrameKind.Segment, flow: opts.flow, seq: 0, ack: 0 };
    this.cwnd = opts.initialCwnd ?? 10;
    this.rwnd = opts.rwnd ?? 512;
    this.minRto = opts.minRto ?? 0.2;
    this.maxRto = opts.maxRto ?? 2;
    this.rto = opts.initialRto ?? 1;
  }

  get done(): boolean {
    return this.una >= this.total;
  }

  /** Sends what the window and the transport allow, after firing the timer if due. */
  pump(now: number, tx: StreamTransport): void {
    if (this.startedAt < 0) this.startedAt = now;
    if (this.done) return;
    if (now >= this.deadline) this.onTimeout(now);
    if (this.retransmitSeq >= 0) {
      if (!tx.canSend(this.frameLen)) return;
      if (this.sendSeg(this.retransmitSeq, now, tx)) this.retransmitSeq = -1;
    }
    const wnd = Math.min(Math.floor(this.cwnd), this.rwnd);
    while (this.nextSeq < this.total && this.nextSeq - this.una < wnd) {
      if (!tx.canSend(this.frameLen)) break;
      if (!this.sendSeg(this.nextSeq, now, tx)) break;
      this.nextSeq++;
    }
  }

  private sendSeg(seq: number, now: number, tx: StreamTransport): boolean {
    this.fields.seq = seq;
    if (!tx.send(this.fields, this.frameLen)) return false;
    this.framesSent++;
    if (seq < this.highSent) {
      this.retransmissions++;
      // Karn: no RTT sample from a window that had a retransmission.
      this.rttSeq = -1;
    } else {
      this.highSent = seq + 1;
      if (this.rttSeq < 0) {
        this.rttSeq = seq;
        this.rttStart = now;
      }
    }
    if (this.deadline === Infinity) this.deadline = now + this.rto;
    return true;
  }

  private onTimeout(now: number): void {
    this.timeouts++;
    const flight = Math.max(this.nextSeq - this.una, 1);
    this.ssthresh = Math.max(Math.floor(flight / 2), 2);
    this.cwnd = 1;
    this.nextSeq = this.una;
    this.retransmitSeq = -1;
    this.dupAcks = 0;
    this.inRecovery = false;
    this.rttSeq = -1;
    this.rto = Math.min(this.rto * 2, this.maxRto);
    // Re-armed even when nothing can be sent now, so the backoff goes on while the path is down.
    this.deadline = now + this.rto;
  }

  onAck(ack: number, now: number): void {
    if (ack > this.highSent) return; // acknowledges something never sent: ignore
    if (ack > this.una) {
      const newly = ack - this.una;
      this.una = ack;
      if (this.nextSeq < ack) this.nextSeq = ack;
      this.dupAcks = 0;
      if (this.rttSeq >= 0 && ack > this.rttSeq) {
        this.sample(now - this.rttStart);
        this.rttSeq = -1;
      }
      if (this.inRecovery) {
        if (ack >= this.recover) {
          this.inRecovery = false;
          this.cwnd = this.ssthresh;
        } else {
          this.retransmitSeq = ack; // partial ACK: the next hole
        }
      } else if (this.cwnd < this.ssthresh) {
        this.cwnd += newly;
      } else {
        this.cwnd += newly / this.cwnd;
      }
      this.deadline = this.una < this.highSent ? now + this.rto : Infinity;
      if (this.done && this.finishedAt < 0) this.finishedAt = now;
      return;
    }
    if (ack === this.una && this.una < this.highSent) {
      this.dupAcks++;
      if (this.dupAcks === 3 && !this.inRecovery) {
        this.fastRetransmits++;
        const flight = Math.max(this.highSent - this.una, 1);
        this.ssthresh = Math.max(Math.floor(flight / 2), 2);
        this.cwnd = this.ssthresh;
        this.inRecovery = true;
        this.recover = this.highSent;
        this.retransmitSeq = this.una;
      }
    }
  }

  private sample(r: number): void {
    if (this.srtt < 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(Math.max(this.srtt + 4 * this.rttvar, this.minRto), this.maxRto);
  }

  report(): StreamSenderReport {
    const dur = this.finishedAt > this.startedAt ? this.finishedAt - this.startedAt : 0;
    const payloadBytes = this.total * this.payload;
    return {
      flow: this.flow,
      segments: this.total,
      payloadBytes,
      framesSent: this.framesSent,
      retransmissions: this.retransmissions,
      timeouts: this.timeouts,
      fastRetransmits: this.fastRetransmits,
      acked: this.una,
      done: this.done,
      startedAt: this.startedAt,
      finishedAt: this.finishedAt,
      throughputBps: this.done && dur > 0 ? (payloadBytes * 8) / dur : 0,
    };
  }
}

export interface StreamReceiverOptions {
  flow: number;
  /** Addresses for the ACK frames. */
  src: number;
  dst: number;
  /** ACK frame length (default 60). */
  ackLen?: number;
}

export interface StreamReceiverReport {
  flow: number;
  /** Segments delivered in order to the application. */
  delivered: number;
  payloadBytes: number;
  /** Segments received again after they had been received. */
  duplicates: number;
  /** Segments received ahead of a hole. */
  outOfOrder: number;
  acksSent: number;
  acksDropped: number;
  /** Virtual time of the last in-order delivery. */
  lastDeliveryAt: number;
}

export class StreamReceiver {
  readonly flow: number;
  rcvNext = 0;
  private seen = new Uint8Array(1024);
  private readonly fields: FrameFields;
  private readonly ackLen: number;
  delivered = 0;
  payloadBytes = 0;
  duplicates = 0;
  outOfOrder = 0;
  acksSent = 0;
  acksDropped = 0;
  lastDeliveryAt = -1;

  constructor(opts: StreamReceiverOptions) {
    this.flow = opts.flow;
    this.ackLen = opts.ackLen ?? MIN_FRAME_LEN;
    this.fields = { dst: opts.dst, src: opts.src, kind: FrameKind.Ack, flow: opts.flow, seq: 0, ack: 0 };
  }

  /** A verified data segment arrived; `payload` is its payload length. */
  onSegment(seq: number, payload: number, now: number, tx: StreamTransport): void {
    if (seq < this.rcvNext || this.has(seq)) {
      this.duplicates++;
    } else if (seq === this.rcvNext) {
      this.take(payload, now);
      this.rcvNext++;
      while (this.has(this.rcvNext)) {
        this.seen[this.rcvNext] = 0;
        this.take(payload, now);
        this.rcvNext++;
      }
    } else {
      this.outOfOrder++;
      this.mark(seq);
    }
    this.fields.ack = this.rcvNext;
    if (tx.canSend(this.ackLen) && tx.send(this.fields, this.ackLen)) this.acksSent++;
    else this.acksDropped++;
  }

  private take(payload: number, now: number): void {
    this.delivered++;
    this.payloadBytes += payload;
    this.lastDeliveryAt = now;
  }

  private has(seq: number): boolean {
    return seq < this.seen.length && this.seen[seq] !== 0;
  }

  private mark(seq: number): void {
    if (seq >= this.seen.length) {
      let n = this.seen.length;
      while (n <= seq) n *= 2;
      const g = new Uint8Array(n);
      g.set(this.seen);
      this.seen = g;
    }
    this.seen[seq] = 1;
  }

  report(): StreamReceiverReport {
    return {
      flow: this.flow,
      delivered: this.delivered,
      payloadBytes: this.payloadBytes,
      duplicates: this.duplicates,
      outOfOrder: this.outOfOrder,
      acksSent: this.acksSent,
      acksDropped: this.acksDropped,
      lastDeliveryAt: this.lastDeliveryAt,
    };
  }
}
