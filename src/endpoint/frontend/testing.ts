/**
 * A minimal scripted vhost-user back-end for front-end tests: it answers like DPDK 22.11's
 * vhost library where the front-end can tell (GET_* replies, REPLY_ACK acks, the status it
 * was given, the ring bases it was given) and records everything it receives. Faults are
 * injected by options: vanish at the k-th message, close inside a reply, tamper with replies.
 *
 * It is not the dpdk-22.11 back-end model; it only knows enough to drive front-ends.
 */
import {
  DPDK_22_11_PROTOCOL_FEATURES,
  FrontendRequest as FR,
  HEADER_SIZE,
  ProtocolFeature,
  encode,
  hasProtocolFeature,
  makeAck,
  makeReply,
  requestName,
  wantsReply,
  type DecodedMessage,
  type Message,
  type Payload,
} from '../../protocol/index.ts';
import {
  TransportError,
  type AnyFd,
  type ChannelFaults,
  type Listener,
  type SocketFd,
  type SocketNamespace,
} from '../../transport/index.ts';
import { DeviceStatus as S } from '../../virtio/index.ts';
import { MessageChannel } from '../message-channel.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { FrontendError } from './errors.ts';
import { checkReply, runSequence, type OpResult, type ReplySpec, type Sequence, type SequenceIo } from './handshake.ts';

/** What testpmd's `net_vhost` offers by default (tso=0): 0xd7c66e7cb. */
export const DPDK_TESTPMD_FEATURES = 0xd7c66e7cbn;

/** QEMU 7.2's netdev init (fact sheet §4.1), one attach round, vhost start (§4.2) and VM stop, by request name. */
export const QEMU_INIT = [
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'SET_SLAVE_REQ_FD', 'SET_OWNER', 'GET_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_ERR', 'SET_VRING_CALL', 'SET_VRING_ERR',
];
export const QEMU_ROUND = ['SET_VRING_ENABLE', 'SET_VRING_ENABLE'];
export const QEMU_START = [
  ...QEMU_ROUND, 'SET_FEATURES', 'GET_STATUS', 'SET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL',
  'GET_STATUS', 'SET_STATUS',
];
export const QEMU_STOP = ['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE'];

/** DPDK virtio-user 22.11's probe (fact sheet §4.5), by request name. */
export const VIRTIO_USER_PROBE = [
  'SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES',
  'SET_STATUS', 'GET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];

/** Runs a sequence that must finish synchronously (against a `ScriptIo`) and returns its result. */
export function runSync<T>(seq: Sequence<T>, io: SequenceIo): T {
  let out: { v: T } | undefined;
  runSequence(seq, io, (v) => {
    out = { v };
  });
  if (out === undefined) throw new Error('sequence did not finish synchronously');
  return out.v;
}

/** A synchronous DPDK-like `SequenceIo` with no transport: records what is sent and answers GET_* as a script. */
export class ScriptIo implements SequenceIo {
  readonly sent: Message<AnyFd>[] = [];
  /** Every send fails, as on a closed socket. */
  dead = false;
  status = 0;
  /** What GET_VRING_BASE answers. */
  base = 0;
  private pending: Message<AnyFd> | undefined;
  private taken = 0;

  constructor(
    /** A reply of its own for a request ('fail': the read fails), or undefined for the script's. */
    private readonly answer?: (m: Message<AnyFd>) => Payload | 'fail' | undefined,
    /** What GET_QUEUE_NUM answers. */
    private readonly queueNum = 1n,
  ) {}

  send(msg: Message<AnyFd>): FrontendError | undefined {
    if (this.dead) return new FrontendError('transport', 'EPIPE', msg.request, 'Failed to set msg fds.');
    this.sent.push(msg);
    this.pending = msg;
    const p = msg.payload as Payload | undefined;
    if (msg.request === FR.SET_STATUS && p?.kind === 'status') this.status = p.status;
    return undefined;
  }

  read(spec: ReplySpec): OpResult {
    const m = this.pending!;
    const custom = this.answer?.(m);
    if (custom === 'fail') return { ok: false, error: new FrontendError('eof', 'gone') };
    const enc = encode(makeReply(m, custom ?? this.reply(m)), { validate: false });
    const hdr = new DataView(enc.bytes.buffer);
    const err = checkReply({ header: { request: hdr.getUint32(0, true), flags: hdr.getUint32(4, true), size: hdr.getUint32(8, true) } }, spec);
    if (err) return { ok: false, error: err };
    return { ok: true, reply: { request: m.request, flags: 5, payload: enc.bytes.subarray(12) } };
  }

  /** Full request names of everything sent. */
  names(): string[] {
    return this.sent.map((m) => requestName(m.request));
  }

  /** Names without `VHOST_USER_` of what was sent since the last take. */
  take(): string[] {
    const n = this.sent.slice(this.taken).map((m) => requestName(m.request).replace(/^VHOST_USER_/, ''));
    this.taken = this.sent.length;
    return n;
  }

  private reply(m: Message<AnyFd>): Payload {
    const p = m.payload as Payload;
    switch (m.request) {
      case FR.GET_FEATURES:
        return { kind: 'features', features: DPDK_TESTPMD_FEATURES };
      case FR.GET_PROTOCOL_FEATURES:
        return { kind: 'protocolFeatures', features: DPDK_22_11_PROTOCOL_FEATURES };
      case FR.GET_STATUS:
        return { kind: 'status', status: this.status };
      case FR.GET_QUEUE_NUM:
        return { kind: 'u64', value: this.queueNum };
      case FR.GET_VRING_BASE:
        return { kind: 'vringState', index: p.kind === 'vringState' ? p.index : 0, num: this.base };
      default:
        return { kind: 'ack', value: 0n };
    }
  }
}

export interface ReceivedMessage {
  readonly t: number;
  /** Connection number of this back-end (1-based). */
  readonly conn: number;
  readonly request: number;
  readonly name: string;
  readonly flags: number;
  readonly payload: Uint8Array;
  readonly decoded?: Payload;
  readonly nfds: number;
}

/** What to do instead of the normal answer. */
export type Tamper = Uint8Array | 'close' | 'close-mid-reply' | 'no-reply' | undefined;

export interface ScriptedBackendOptions {
  readonly ns: SocketNamespace;
  readonly path: string;
  /** 'client': connect to the front-end's socket (retrying every `retry` s, as DPDK's client=1); 'server': listen. */
  readonly mode: 'client' | 'server';
  readonly features?: bigint;
  readonly protocolFeatures?: bigint;
  /** GET_QUEUE_NUM answer (DPDK: 128 pairs). */
  readonly queueNum?: bigint;
  /** Close when the k-th message (1-based, over this back-end's life) arrives. */
  readonly vanishAt?: number;
  /** With `vanishAt`: close before answering (default), after answering, or in the middle of the answer. */
  readonly vanishMode?: 'before-reply' | 'after-reply' | 'mid-reply';
  /** Per message: replace the normal answer (raw bytes), close, close mid-reply, or stay silent. */
  readonly tamper?: (m: ReceivedMessage) => Tamper;
  /** Faults of the connection this back-end makes (client mode). */
  readonly faults?: ChannelFaults;
  /** Client reconnect period (default 1 s, DPDK's vhost_reconn). */
  readonly retry?: number;
  readonly recorder?: TraceRecorder;
}

interface VringInfo {
  num?: number;
  base: number;
  addr: boolean;
  kick: boolean;
  call: boolean;
  enabled: boolean;
}

export class ScriptedBackend {
  readonly received: ReceivedMessage[] = [];
  /** Times this back-end saw the device become ready (all of pair 0 set up, enabled, DRIVER_OK if STATUS). */
  readonly readyTimes: number[] = [];
  status = 0;
  protocolFeatures = 0n;
  features = 0n;
  private readonly opts: ScriptedBackendOptions;
  private mc: MessageChannel | undefined;
  private listener: Listener | undefined;
  private vrings = new Map<number, VringInfo>();
  private connCount = 0;
  private stopped = false;
  private ready = false;
  private retryTimer: { cancel(): boolean } | undefined;
  /** The back-end channel fd of SET_SLAVE_REQ_FD, kept (as DPDK does) until the connection ends. */
  private slaveFds: AnyFd[] = [];

  constructor(opts: ScriptedBackendOptions) {
    this.opts = opts;
  }

  get offeredFeatures(): bigint {
    return this.opts.features ?? DPDK_TESTPMD_FEATURES;
  }

  get connected(): boolean {
    return this.mc !== undefined && !this.mc.closed;
  }

  get isReady(): boolean {
    return this.ready;
  }

  /** Request names received, optionally only those of connection `conn`. */
  names(conn?: number): string[] {
    return this.received.filter((m) => conn === undefined || m.conn === conn).map((m) => m.name);
  }

  /** Messages with the given request name. */
  messages(name: string): ReceivedMessage[] {
    return this.received.filter((m) => m.name === name);
  }

  vring(i: number): Readonly<VringInfo> | undefined {
    return this.vrings.get(i);
  }

  start(): this {
    if (this.opts.mode === 'server') {
      // A relaunched server removes the stale socket file its killed predecessor left.
      this.opts.ns.unlink(this.opts.path);
      const l = this.opts.ns.listen(this.opts.path, (fd) => {
        if (this.stopped || this.mc !== undefined) {
          fd.close();
          return;
        }
        this.take(fd);
      });
      if (l instanceof TransportError) throw l;
      this.listener = l;
    } else {
      this.connect();
    }
    return this;
  }

  /** Closes the connection (like testpmd's quit) and stops listening/retrying. */
  stop(): void {
    this.stopped = true;
    this.retryTimer?.cancel();
    this.mc?.close();
    this.mc = undefined;
    this.closeSlaveFds();
    this.listener?.close({ unlink: true });
    this.listener = undefined;
  }

  private connect(): void {
    this.retryTimer = undefined;
    if (this.stopped) return;
    this.opts.ns.connect(
      this.opts.path,
      (r) => {
        if (this.stopped) {
          if (!(r instanceof TransportError)) r.close();
          return;
        }
        if (r instanceof TransportError) {
          this.retryTimer = this.opts.ns.scheduler.after(this.opts.retry ?? 1, () => this.connect(), 'scripted backend reconnect');
          return;
        }
        this.take(r);
      },
      this.opts.faults !== undefined ? { faults: this.opts.faults } : {},
    );
  }

  private take(fd: SocketFd): void {
    this.closeSlaveFds();
    this.connCount++;
    this.vrings = new Map();
    this.status = 0;
    this.ready = false;
    this.protocolFeatures = 0n;
    this.features = 0n;
    const conn = this.connCount;
    const mc = new MessageChannel(fd, { role: 'backend', space: 'frontend', recorder: this.opts.recorder });
    this.mc = mc;
    this.opts.recorder?.openSession();
    mc.on({
      message: (m) => this.onMessage(mc, conn, m),
      fatal: () => this.drop(mc),
      closed: () => this.drop(mc),
    });
  }

  private drop(mc: MessageChannel): void {
    mc.close();
    if (this.mc === mc) this.closeSlaveFds();
    if (this.mc === mc) {
      this.mc = undefined;
      this.opts.recorder?.closeSession(this.connCount);
      if (!this.stopped && this.opts.mode === 'client') {
        this.retryTimer = this.opts.ns.scheduler.after(this.opts.retry ?? 1, () => this.connect(), 'scripted backend reconnect');
      }
    }
  }

  private vanish(mc: MessageChannel): void {
    this.stopped = true;
    this.retryTimer?.cancel();
    mc.close();
    this.closeSlaveFds();
    this.mc = undefined;
    this.listener?.close({ unlink: false });
    this.listener = undefined;
    this.opts.recorder?.closeSession(this.connCount);
  }

  private closeSlaveFds(): void {
    for (const fd of this.slaveFds.splice(0)) fd.close();
  }

  private onMessage(mc: MessageChannel, conn: number, m: DecodedMessage<AnyFd>): void {
    if (m.header.request === FR.SET_SLAVE_REQ_FD) this.slaveFds.push(...m.fds);
    else for (const fd of m.fds) fd.close();
    const rec: ReceivedMessage = {
      t: this.opts.ns.scheduler.now,
      conn,
      request: m.header.request,
      name: requestName(m.header.request),
      flags: m.header.flags,
      payload: m.payload,
      ...(m.decoded !== undefined ? { decoded: m.decoded } : {}),
      nfds: m.fds.length,
    };
    this.received.push(rec);
    const reply = this.handle(m);
    const k = this.received.length;
    if (this.opts.vanishAt === k) {
      const mode = this.opts.vanishMode ?? 'before-reply';
      if (mode === 'after-reply' && reply !== undefined) mc.send(reply, { validate: false });
      if (mode === 'mid-reply') this.sendPartial(mc, reply ?? makeReply(m.header, { kind: 'u64', value: 0n }));
      this.vanish(mc);
      return;
    }
    const t = this.opts.tamper?.(rec);
    if (t === 'close') return this.vanish(mc);
    if (t === 'close-mid-reply') {
      this.sendPartial(mc, reply ?? makeReply(m.header, { kind: 'u64', value: 0n }));
      return this.vanish(mc);
    }
    if (t === 'no-reply') return;
    if (t instanceof Uint8Array) {
      mc.channel.send(t);
      return;
    }
    if (reply !== undefined) mc.send(reply, { validate: false });
  }

  private sendPartial(mc: MessageChannel, reply: Message<AnyFd>): void {
    const bytes = encode(reply, { validate: false }).bytes;
    mc.channel.send(bytes.subarray(0, Math.min(bytes.length - 1, HEADER_SIZE + 2)));
  }

  /** DPDK-like handling; returns the reply to send, if any. */
  private handle(m: DecodedMessage<AnyFd>): Message<AnyFd> | undefined {
    const h = m.header;
    const d = m.decoded;
    const ack = () => (wantsReply(h.flags) && hasProtocolFeature(this.protocolFeatures, ProtocolFeature.REPLY_ACK) ? makeAck(h, true) : undefined);
    const vr = (i: number): VringInfo => {
      let v = this.vrings.get(i);
      if (v === undefined) {
        v = { base: 0, addr: false, kick: false, call: false, enabled: false };
        this.vrings.set(i, v);
      }
      return v;
    };
    let reply: Message<AnyFd> | undefined;
    switch (h.request) {
      case FR.GET_FEATURES:
        reply = makeReply(h, { kind: 'features', features: this.offeredFeatures });
        break;
      case FR.GET_PROTOCOL_FEATURES:
        reply = makeReply(h, { kind: 'protocolFeatures', features: this.opts.protocolFeatures ?? DPDK_22_11_PROTOCOL_FEATURES });
        break;
      case FR.SET_PROTOCOL_FEATURES:
        if (d?.kind === 'protocolFeatures') this.protocolFeatures = d.features;
        reply = ack();
        break;
      case FR.SET_FEATURES:
        if (d?.kind === 'features') this.features = d.features;
        reply = ack();
        break;
      case FR.GET_QUEUE_NUM:
        reply = makeReply(h, { kind: 'u64', value: this.opts.queueNum ?? 128n });
        break;
      case FR.GET_STATUS:
        reply = makeReply(h, { kind: 'status', status: this.status });
        break;
      case FR.SET_STATUS:
        if (d?.kind === 'status') this.status = d.status;
        reply = ack();
        break;
      case FR.SET_VRING_NUM:
        if (d?.kind === 'vringState') vr(d.index).num = d.num;
        reply = ack();
        break;
      case FR.SET_VRING_BASE:
        if (d?.kind === 'vringState') vr(d.index).base = d.num;
        reply = ack();
        break;
      case FR.SET_VRING_ADDR:
        if (d?.kind === 'vringAddr') vr(d.index).addr = true;
        reply = ack();
        break;
      case FR.SET_VRING_KICK:
        if (d?.kind === 'vringFile') vr(d.index).kick = true;
        reply = ack();
        break;
      case FR.SET_VRING_CALL:
        if (d?.kind === 'vringFile') vr(d.index).call = true;
        reply = ack();
        break;
      case FR.SET_VRING_ENABLE:
        if (d?.kind === 'vringState') vr(d.index).enabled = d.num !== 0;
        reply = ack();
        break;
      case FR.GET_VRING_BASE: {
        // DPDK: stops the ring, forgets kick and call, answers the base.
        const i = d?.kind === 'vringState' ? d.index : 0;
        const v = vr(i);
        v.kick = false;
        v.call = false;
        reply = makeReply(h, { kind: 'vringState', index: i, num: v.base });
        break;
      }
      default:
        reply = ack();
    }
    this.checkReady();
    return reply;
  }

  private checkReady(): void {
    const ok = [0, 1].every((i) => {
      const v = this.vrings.get(i);
      return v !== undefined && v.addr && v.kick && v.call && (v.enabled || (this.features & (1n << 30n)) === 0n);
    });
    const statusOk = !hasProtocolFeature(this.protocolFeatures, ProtocolFeature.STATUS) || (this.status & S.DRIVER_OK) !== 0;
    const now = ok && statusOk;
    if (now && !this.ready) this.readyTimes.push(this.opts.ns.scheduler.now);
    this.ready = now;
  }
}

/**
 * Runs the scheduler until `pred` holds or nothing is left to do, up to `maxTime` virtual
 * seconds past now. Returns whether `pred` held.
 */
export function runUntil(sched: { run(o: { until?: number; stopWhen?: () => boolean; maxEvents?: number }): unknown; now: number }, pred: () => boolean, maxTime = 60): boolean {
  if (pred()) return true;
  sched.run({ until: sched.now + maxTime, stopWhen: pred, maxEvents: 1_000_000 });
  return pred();
}
