/**
 * A polling net data path for a VhostUserDevice on real guest memory, run on Node's event
 * loop in real time: as the vhost PMD's forwarding lcore does, it pops the guest's TX
 * chains (odd vrings), checks and counts each frame, gives the buffers back (used, length
 * 0), and raises the call eventfd when the ring asks for it. With `rx: 'echo'` each good
 * frame is also written into a buffer of the same pair's RX ring (even vring), as testpmd's
 * `io` forwarding on a vhost port would send it back.
 *
 * Scheduling: one pass polls every queue pair with a per-ring budget. A pass that found
 * work runs again from `setImmediate` (socket messages and timers still get their turn
 * between passes); an idle pass waits `idleMs` on a timer. The device disables guest kicks
 * when it starts (as DPDK's net PMD does), so nothing else wakes the loop.
 *
 * The device's `vring(i)` is asked again on every pass: a view exists only while the ring
 * is ready, so nothing here touches guest memory after a stop, a new memory table, or the
 * connection's end.
 */
import { DescriptorChain } from '../../ring/types.ts';
import { GuestMemoryError } from '../../memory/index.ts';
import { hasFeature, VirtioFeature } from '../../virtio/index.ts';
import type { VhostUserDevice, VringView } from '../backend/index.ts';
import { checkFrame, checkTxHeader, netHeaderLength, txNumBuffers, type FrameInfo, type FrameProblem } from './frames.ts';

export interface DataPathOptions {
  /** Queue pairs polled (vrings 0..2N-1). Default 1. */
  queues?: number;
  /** 'echo': send each good TX frame back on the pair's RX ring. Default 'none'. */
  rx?: 'none' | 'echo';
  /** Chains taken from one ring per pass. Default 256. */
  budget?: number;
  /** Wait between idle passes, in ms. Default 1. */
  idleMs?: number;
  /** Malformed frames kept as hex for diagnosis. Default 8. */
  keepSamples?: number;
}

export interface QueueCounters {
  /** Frames taken from the guest's TX ring (well-formed or not). */
  txPackets: number;
  /** Their bytes after the virtio-net header, as a guest's port counts TX bytes. */
  txBytes: number;
  txMalformed: number;
  /** Frames written into the guest's RX ring. */
  rxPackets: number;
  rxBytes: number;
  /** Frames to echo that found no RX buffer (or too small a one). */
  rxDropped: number;
  /** Call eventfd writes. */
  calls: number;
}

export interface DataPathStats extends QueueCounters {
  readonly perQueue: QueueCounters[];
  /** Malformed frames by problem. */
  readonly problems: Partial<Record<FrameProblem, number>>;
  /** The first few malformed packets (virtio-net header + frame, hex, at most 128 bytes). */
  readonly samples: { problem: FrameProblem; queue: number; hex: string }[];
  /** TX headers with a non-zero num_buffers (noted, not malformed: see frames.ts `txNumBuffers`). */
  txNumBuffersSet: number;
  /** Well-formed frames by EtherType (hex key). */
  readonly etherTypes: Record<string, number>;
  /** Poll passes that found work. */
  busyPasses: number;
}

function zeroCounters(): QueueCounters {
  return { txPackets: 0, txBytes: 0, txMalformed: 0, rxPackets: 0, rxBytes: 0, rxDropped: 0, calls: 0 };
}

/** Largest packet copied for checking: a 64 KiB GSO frame plus the header. */
const MAX_PACKET = 65536 + 12;

export class NetDataPath {
  readonly stats: DataPathStats;
  private readonly queues: number;
  private readonly echo: boolean;
  private readonly budget: number;
  private readonly idleMs: number;
  private readonly keepSamples: number;
  private readonly chain = new DescriptorChain();
  private readonly rxChain = new DescriptorChain();
  private readonly pkt = new Uint8Array(MAX_PACKET);
  private readonly info: FrameInfo = { etherType: 0, ipProto: -1 };
  private device: VhostUserDevice | undefined;
  private timer: { kind: 'immediate'; h: NodeJS.Immediate } | { kind: 'timeout'; h: NodeJS.Timeout } | undefined;

  constructor(opts: DataPathOptions = {}) {
    this.queues = opts.queues ?? 1;
    this.echo = (opts.rx ?? 'none') === 'echo';
    this.budget = opts.budget ?? 256;
    this.idleMs = opts.idleMs ?? 1;
    this.keepSamples = opts.keepSamples ?? 8;
    const perQueue = Array.from({ length: this.queues }, zeroCounters);
    this.stats = { ...zeroCounters(), perQueue, problems: {}, samples: [], txNumBuffersSet: 0, etherTypes: {}, busyPasses: 0 };
  }

  /** Polls `device` from now on (a new device replaces the previous one). */
  attach(device: VhostUserDevice): void {
    this.device = device;
    this.schedule(true);
  }

  /** Stops polling `device` (or whatever is attached when none is given). */
  detach(device?: VhostUserDevice): void {
    if (device !== undefined && device !== this.device) return;
    this.device = undefined;
    this.cancel();
  }

  get polling(): boolean {
    return this.timer !== undefined;
  }

  /** One pass over every queue pair; returns the chains handled. */
  pollOnce(device: VhostUserDevice): number {
    const mem = device.memory;
    if (!device.running || mem === undefined) return 0;
    const hdrLen = netHeaderLength(device.features);
    let work = 0;
    for (let q = 0; q < this.queues; q++) {
      const tx = device.vring(2 * q + 1);
      if (tx === undefined) continue;
      const rx = this.echo ? device.vring(2 * q) : undefined;
      const c = this.stats.perQueue[q]!;
      let n = 0;
      let echoed = 0;
      while (n < this.budget && tx.pop(this.chain)) {
        n++;
        const len = this.gather(device, this.chain);
        const frameLen = len < 0 ? 0 : Math.max(0, len - hdrLen);
        // The device writes nothing into a TX buffer.
        tx.device.push(this.chain.id, 0);
        c.txPackets++;
        this.stats.txPackets++;
        c.txBytes += frameLen;
        this.stats.txBytes += frameLen;
        const problem = this.judge(len, hdrLen, device.features);
        if (problem !== undefined) {
          c.txMalformed++;
          this.stats.txMalformed++;
          this.stats.problems[problem] = (this.stats.problems[problem] ?? 0) + 1;
          if (this.stats.samples.length < this.keepSamples) {
            const shown = Math.min(Math.max(len, 0), 128);
            this.stats.samples.push({ problem, queue: q, hex: Buffer.from(this.pkt.subarray(0, shown)).toString('hex') });
          }
          continue;
        }
        if (txNumBuffers(this.pkt, hdrLen) !== 0) this.stats.txNumBuffersSet++;
        const et = this.info.etherType.toString(16).padStart(4, '0');
        this.stats.etherTypes[et] = (this.stats.etherTypes[et] ?? 0) + 1;
        if (rx !== undefined && this.enqueueRx(device, rx, hdrLen, frameLen, c)) echoed++;
      }
      if (n > 0 && tx.notify()) {
        c.calls++;
        this.stats.calls++;
      }
      if (echoed > 0 && rx !== undefined && rx.notify()) {
        c.calls++;
        this.stats.calls++;
      }
      work += n;
    }
    if (work > 0) this.stats.busyPasses++;
    return work;
  }

  /**
   * Copies the chain's readable bytes into `pkt`; returns their count, or a negative value
   * (-1 writable descriptors, -2 too long, -3 outside memory), the problem then being `judge`'s.
   */
  private gather(device: VhostUserDevice, ch: DescriptorChain): number {
    if (ch.writableBytes > 0) return -1;
    if (ch.readableBytes > MAX_PACKET) return -2;
    const mem = device.memory!;
    let off = 0;
    try {
      for (let i = 0; i < ch.count; i++) {
        const len = ch.len[i]!;
        mem.read(ch.addr[i]!, this.pkt.subarray(off, off + len));
        off += len;
      }
    } catch (e) {
      if (e instanceof GuestMemoryError) return -3;
      throw e;
    }
    return off;
  }

  private judge(len: number, hdrLen: number, features: bigint): FrameProblem | undefined {
    if (len === -1) return 'tx-writable';
    if (len === -2) return 'too-long';
    if (len === -3) return 'bad-address';
    if (len < hdrLen) return 'short-header';
    return checkTxHeader(this.pkt, hdrLen, len - hdrLen, features) ?? checkFrame(this.pkt, hdrLen, len - hdrLen, this.info);
  }

  /** Writes the frame now in `pkt` into one RX buffer, with a fresh header. */
  private enqueueRx(device: VhostUserDevice, rx: VringView, hdrLen: number, frameLen: number, c: QueueCounters): boolean {
    const ch = this.rxChain;
    if (!rx.pop(ch)) {
      c.rxDropped++;
      this.stats.rxDropped++;
      return false;
    }
    const total = hdrLen + frameLen;
    if (ch.writableBytes < total) {
      // A buffer cannot be left popped: give it back empty (the driver drops a 0-byte packet).
      rx.device.push(ch.id, 0);
      c.rxDropped++;
      this.stats.rxDropped++;
      return true;
    }
    // Reuse the TX header's bytes in place: all zero but num_buffers, which is 1 (one buffer per packet).
    this.pkt.fill(0, 0, hdrLen);
    if (hdrLen >= 12 && (hasFeature(device.features, VirtioFeature.NET_MRG_RXBUF) || hasFeature(device.features, VirtioFeature.VERSION_1))) this.pkt[10] = 1;
    const mem = device.memory!;
    let done = 0;
    for (let i = 0; i < ch.count && done < total; i++) {
      if (ch.writable[i] !== 1) continue;
      const n = Math.min(ch.len[i]!, total - done);
      mem.write(ch.addr[i]!, this.pkt.subarray(done, done + n));
      done += n;
    }
    rx.device.push(ch.id, total);
    c.rxPackets++;
    c.rxBytes += frameLen;
    this.stats.rxPackets++;
    this.stats.rxBytes += frameLen;
    return true;
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    const d = this.device;
    // Stopped or gone: `attach` starts polling again at the next new_device().
    if (d === undefined || d.isDestroyed || !d.running) return;
    const work = this.pollOnce(d);
    this.schedule(work > 0);
  };

  private schedule(busy: boolean): void {
    if (this.device === undefined) return;
    if (this.timer !== undefined) {
      if (!busy || this.timer.kind === 'immediate') return;
      clearTimeout(this.timer.h);
    }
    this.timer = busy ? { kind: 'immediate', h: setImmediate(this.tick) } : { kind: 'timeout', h: setTimeout(this.tick, this.idleMs) };
  }

  private cancel(): void {
    const t = this.timer;
    this.timer = undefined;
    if (t === undefined) return;
    if (t.kind === 'immediate') clearImmediate(t.h);
    else clearTimeout(t.h);
  }
}
