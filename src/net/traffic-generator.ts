/**
 * The external traffic generator of PVP: sends numbered frames at a rate in virtual time
 * over a number of flows, and checks what comes back: per flow, which sequence numbers
 * arrived, how many twice (duplicates), how many after a later one (reordered), how many
 * damaged (checksum) or never sent.
 */
import type { EventHandle, Scheduler } from '../sim/scheduler.ts';
import type { Mbuf, MbufPool } from './mbuf.ts';
import type { Nic, WireEnd } from './nic.ts';
import { ETHER_CRC_LEN, FrameKind, frameFlow, frameKind, frameSeq, MIN_FRAME_LEN, parseMac, verifyFrame, writeFrame, type FrameFields } from './packet.ts';

export interface GeneratorStreamOptions {
  /** Packets per virtual second. */
  ratePps: number;
  /** Frame size on the wire including the 4-byte FCS, as generators state it (default 64 → 60-byte packets). */
  frameSize?: number;
  /** Packets to send in all (default: until `stop`). */
  count?: number;
  /** Flows, sent round-robin (default 1). */
  flows?: number;
  dstMac?: number;
  srcMac?: number;
  /** Virtual seconds between send events (default 10 µs); each sends what the rate has accrued. */
  tick?: number;
}

export class FlowStats {
  sent = 0;
  /** Distinct sequence numbers received. */
  received = 0;
  duplicates = 0;
  /** Arrivals with a sequence number below the highest already seen. */
  reordered = 0;
  maxSeq = -1;
  seen: Uint8Array = new Uint8Array(1024);

  mark(seq: number): 'new' | 'dup' {
    if (seq >= this.seen.length) {
      let n = this.seen.length;
      while (n <= seq) n *= 2;
      const g = new Uint8Array(n);
      g.set(this.seen);
      this.seen = g;
    }
    if (this.seen[seq] !== 0) return 'dup';
    this.seen[seq] = 1;
    return 'new';
  }
}

export interface GeneratorReport {
  sent: number;
  /** Frames that came back, duplicates included. */
  arrived: number;
  /** Distinct frames that came back. */
  received: number;
  duplicates: number;
  reordered: number;
  /** Sent and never came back. */
  lost: number;
  /** Failed the checksum or length check. */
  corrupt: number;
  /** Valid frames of an unknown flow or a sequence number never sent. */
  unexpected: number;
  perFlow: { flow: number; sent: number; received: number; duplicates: number; reordered: number; lost: number }[];
}

export class TrafficGenerator implements WireEnd {
  private link: WireEnd | null = null;
  private flows: FlowStats[] = [];
  private opts: Required<GeneratorStreamOptions> | null = null;
  private timer: EventHandle | null = null;
  private credit = 0;
  private lastTick = 0;
  private readonly fields: FrameFields = { dst: 0, src: 0, kind: FrameKind.Data, flow: 0, seq: 0 };
  private readonly tickFn = () => this.tick();

  sent = 0;
  arrived = 0;
  corrupt = 0;
  unexpected = 0;
  /** Sends refused because the generator's pool was empty. */
  allocFailures = 0;
  /** Virtual time of the first and last send. */
  firstSendAt = -1;
  lastSendAt = -1;
  lastArrivalAt = -1;
  /** Sees every arriving frame before it is checked and freed (tests, tracing). */
  onArrival: ((bytes: Uint8Array, len: number) => void) | null = null;

  constructor(
    private readonly sched: Scheduler,
    private readonly pool: MbufPool,
    readonly name = 'tg0',
  ) {
    this.tickLabel = `${name} send`;
  }

  private readonly tickLabel: string;

  /** Cables the generator to a NIC, both directions. */
  connect(nic: Nic): void {
    this.link = nic;
    nic.connect(this);
  }

  /** Cables the generator to any wire end (the NIC side must be connected back by the caller). */
  connectTo(end: WireEnd): void {
    this.link = end;
  }

  get running(): boolean {
    return this.timer !== null;
  }

  /** True when a finite stream has sent everything. */
  get done(): boolean {
    return this.opts !== null && this.sent >= this.opts.count;
  }

  start(o: GeneratorStreamOptions): void {
    if (this.timer !== null) throw new Error(`${this.name}: already sending`);
    if (!(o.ratePps > 0) || !Number.isFinite(o.ratePps)) throw new RangeError(`rate ${o.ratePps} pps is not a positive number`);
    const frameSize = o.frameSize ?? 64;
    if (frameSize - ETHER_CRC_LEN < MIN_FRAME_LEN) throw new RangeError(`frame size ${frameSize} is below 64`);
    const flows = o.flows ?? 1;
    if (!Number.isInteger(flows) || flows < 1) throw new RangeError(`flows ${flows} is not a positive integer`);
    this.opts = {
      ratePps: o.ratePps,
      frameSize,
      count: o.count ?? Infinity,
      flows,
      dstMac: o.dstMac ?? parseMac('00:00:00:00:00:01'),
      srcMac: o.srcMac ?? parseMac('00:00:00:00:00:02'),
      tick: o.tick ?? 1e-5,
    };
    while (this.flows.length < flows) this.flows.push(new FlowStats());
    this.fields.dst = this.opts.dstMac;
    this.fields.src = this.opts.srcMac;
    this.credit = 0;
    this.lastTick = this.sched.now;
    this.timer = this.sched.after(0, this.tickFn, this.tickLabel);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  private tick(): void {
    const o = this.opts!;
    this.timer = null;
    const now = this.sched.now;
    this.credit += (now - this.lastTick) * o.ratePps;
    this.lastTick = now;
    if (this.sent === 0 && this.credit < 1) this.credit = 1; // the first frame leaves at once
    const len = o.frameSize - ETHER_CRC_LEN;
    while (this.credit >= 1 && this.sent < o.count) {
      const m = this.pool.alloc();
      if (m === null) {
        this.allocFailures++;
        break;
      }
      const flow = this.sent % o.flows;
      const fs = this.flows[flow];
      this.fields.flow = flow;
      this.fields.seq = fs.sent;
      m.reserve(len);
      writeFrame(m.buf.bytes, this.fields, len);
      m.len = len;
      fs.sent++;
      this.sent++;
      this.credit -= 1;
      if (this.firstSendAt < 0) this.firstSendAt = now;
      this.lastSendAt = now;
      if (this.link === null) m.free();
      else this.link.receiveFromWire(m);
    }
    if (this.sent < o.count) this.timer = this.sched.after(o.tick, this.tickFn, this.tickLabel);
  }

  receiveFromWire(m: Mbuf): void {
    this.arrived++;
    this.lastArrivalAt = this.sched.now;
    const b = m.buf.bytes;
    this.onArrival?.(b, m.len);
    if (!verifyFrame(b, m.len)) {
      this.corrupt++;
    } else {
      const flow = frameFlow(b);
      const seq = frameSeq(b);
      const fs = flow < this.flows.length ? this.flows[flow] : undefined;
      if (frameKind(b) !== FrameKind.Data || fs === undefined || seq >= fs.sent) {
        this.unexpected++;
      } else if (fs.mark(seq) === 'dup') {
        fs.duplicates++;
      } else {
        fs.received++;
        if (seq < fs.maxSeq) fs.reordered++;
        else fs.maxSeq = seq;
      }
    }
    m.free();
  }

  report(): GeneratorReport {
    let received = 0;
    let duplicates = 0;
    let reordered = 0;
    const perFlow = this.flows.map((f, flow) => {
      received += f.received;
      duplicates += f.duplicates;
      reordered += f.reordered;
      return { flow, sent: f.sent, received: f.received, duplicates: f.duplicates, reordered: f.reordered, lost: f.sent - f.received };
    });
    return {
      sent: this.sent,
      arrived: this.arrived,
      received,
      duplicates,
      reordered,
      lost: this.sent - received,
      corrupt: this.corrupt,
      unexpected: this.unexpected,
      perFlow,
    };
  }
}
