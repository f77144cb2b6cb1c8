/**
 * Test helpers for the back-end: a device harness for message-level unit tests, a guest
 * (memfd + ring layouts) and a scripted front-end that replays DPDK virtio-user 22.11's
 * handshake (`server=1`) as recorded in reference/traces, over the in-process socket.
 * The real front-end profiles live in src/endpoint/frontend/; this one only knows the script.
 */
import {
  encode,
  makeRequest,
  FrontendRequest as R,
  FLAG_NEED_REPLY,
  VERSION,
  decodeHeader,
  HEADER_SIZE,
  type Message,
  type Payload,
  type DecodedMessage,
} from '../../protocol/index.ts';
import { GuestMemory } from '../../memory/index.ts';
import { Scheduler } from '../../sim/scheduler.ts';
import {
  SocketNamespace,
  TransportError,
  type AnyFd,
  type EventFd,
  type MemFd,
  type SocketFd,
  type Listener,
  type FaultPolicy,
} from '../../transport/index.ts';
import { layoutSplitRing, SplitDriver, splitRingFootprint, type SplitLayout } from '../../ring/split/index.ts';
import { layoutPackedRing, packedRingFootprint, type PackedLayout } from '../../ring/packed/index.ts';
import { MessageChannel } from '../message-channel.ts';
import { dpdk2211Profile, type DpdkBackendOptions, type DpdkBackendProfile } from './profile.ts';
import { VhostUserDevice, type HandleResult } from './vhost-device.ts';

/** Virtio features DPDK virtio-user 22.11 acks by default (mrg_rxbuf, in_order, indirect, version 1, bit 30). */
export const VIRTIO_USER_FEATURES = 0x950008000n;
export const VIRTIO_USER_PACKED_FEATURES = VIRTIO_USER_FEATURES | (1n << 34n);
export const VIRTIO_USER_PROTOCOL_FEATURES = 0x10009n;

// ---- device harness --------------------------------------------------------------------------

export interface SendOptions {
  needReply?: boolean;
  fds?: AnyFd[];
  /** Raw flags (overrides needReply). */
  flags?: number;
}

/** A VhostUserDevice with a namespace for fds, and helpers to send it requests. */
export class DeviceHarness {
  readonly sched: Scheduler;
  readonly ns: SocketNamespace;
  device: VhostUserDevice;
  readonly profile: DpdkBackendProfile;
  /** Results of every `send`, in order. */
  readonly results: HandleResult[] = [];

  constructor(opts: Partial<DpdkBackendOptions> = {}, seed: number | string = 1) {
    this.sched = new Scheduler({ seed });
    this.ns = new SocketNamespace({ scheduler: this.sched, name: 'harness' });
    this.profile = dpdk2211Profile(opts);
    this.device = this.newDevice();
  }

  newDevice(): VhostUserDevice {
    this.device = new VhostUserDevice(this.profile, { path: '/tmp/vhost.sock', memfd: (n, s) => this.ns.memfd(n, s) }, 0);
    return this.device;
  }

  /** Sends a request built like QEMU/virtio-user do (flags 0x1, or 0x9 with needReply). */
  send(request: number, payload?: Payload | Uint8Array, opts: SendOptions = {}): HandleResult {
    const flags = opts.flags ?? (VERSION | (opts.needReply ? FLAG_NEED_REPLY : 0));
    const msg: Message<AnyFd> = { request, flags, ...(payload !== undefined ? { payload } : {}), fds: opts.fds ?? [] };
    const enc = encode(msg, { validate: false });
    return this.sendRaw(enc.bytes, opts.fds ?? []);
  }

  /** Sends exact wire bytes (one message: header + payload). */
  sendRaw(bytes: Uint8Array, fds: AnyFd[] = []): HandleResult {
    const header = decodeHeader(bytes);
    const payload = bytes.slice(HEADER_SIZE);
    const r = this.device.handle({ header: { ...header, size: payload.length }, payload, fds });
    this.results.push(r);
    return r;
  }

  /** Sends every step of a script; returns the results in order. */
  play(steps: readonly ScriptStep[]): HandleResult[] {
    return steps.filter((st) => st.raw === undefined && !st.close).map((st) => {
      const enc = encode(st.msg, { validate: false });
      // As sendmsg does: the receiver gets its own handles; the sender keeps only its eventfds.
      const fds = (st.msg.fds ?? []).map((fd) => fd.dup() as AnyFd);
      for (const fd of st.msg.fds ?? []) if (fd.kind !== 'eventfd') fd.close();
      return this.sendRaw(enc.bytes, fds);
    });
  }

  /** A guest in this harness's namespace and the virtio-user handshake for it, played. */
  handshake(guestOpts: GuestOptions = {}, session = 1): { guest: Guest; results: HandleResult[]; eventfds: EventFd[] } {
    const guest = new Guest(this.ns, guestOpts);
    const eventfds: EventFd[] = [];
    const results = this.play(
      virtioUserHandshake(guest, {
        session,
        newEventfd: () => {
          const e = this.eventfd();
          eventfds.push(e);
          return e;
        },
      }),
    );
    return { guest, results, eventfds };
  }

  eventfd(name = 'efd'): EventFd {
    return this.ns.eventfd(name);
  }

  memfd(size: number, name = 'guest'): MemFd {
    return this.ns.memfd(name, size);
  }
}

// ---- a guest -------------------------------------------------------------------------------

export interface GuestOptions {
  queueSize?: number;
  packed?: boolean;
  /** Bytes of guest memory (default 1 MiB). */
  memSize?: number;
  /** GPA = front-end VA of the region, as virtio-user maps it (default 0x100c3e000, as in the capture). */
  base?: number;
  /** Number of vrings (default 2). */
  vrings?: number;
}

/** A front-end's guest: one memfd region with GPA == VA and the rings laid out in it. */
export class Guest {
  readonly memfd: MemFd;
  readonly memory: GuestMemory;
  readonly base: number;
  readonly size: number;
  readonly queueSize: number;
  readonly packed: boolean;
  readonly split: SplitLayout[] = [];
  readonly packedLayouts: PackedLayout[] = [];

  constructor(ns: SocketNamespace, opts: GuestOptions = {}) {
    this.queueSize = opts.queueSize ?? 256;
    this.packed = opts.packed ?? false;
    this.size = opts.memSize ?? 1 << 20;
    this.base = opts.base ?? 0x100c3e000;
    this.memfd = ns.memfd('guest-mem', this.size);
    this.memory = new GuestMemory([{ gpa: this.base, size: this.size, uva: this.base, buffer: this.memfd.buffer }]);
    const n = opts.vrings ?? 2;
    let at = this.base + 0x1000;
    for (let i = 0; i < n; i++) {
      if (this.packed) {
        this.packedLayouts.push(layoutPackedRing(at, this.queueSize));
        at += Math.ceil(packedRingFootprint(this.queueSize) / 4096) * 4096;
      } else {
        const l = layoutSplitRing(at, this.queueSize);
        this.split.push(l);
        at += Math.ceil(splitRingFootprint(this.queueSize) / 4096) * 4096;
      }
    }
  }

  get vrings(): number {
    return this.packed ? this.packedLayouts.length : this.split.length;
  }

  /** desc/used/avail front-end addresses of vring i (the SET_VRING_ADDR payload). */
  addr(i: number): Payload {
    if (this.packed) {
      const l = this.packedLayouts[i]!;
      return { kind: 'vringAddr', index: i, flags: 0, desc: BigInt(l.desc), used: BigInt(l.deviceEvent), avail: BigInt(l.driverEvent), log: 0n };
    }
    const l = this.split[i]!;
    return { kind: 'vringAddr', index: i, flags: 0, desc: BigInt(l.desc), used: BigInt(l.used), avail: BigInt(l.avail), log: 0n };
  }

  memTable(): Payload {
    return {
      kind: 'memoryTable',
      regions: [{ guestPhysAddr: BigInt(this.base), memorySize: BigInt(this.size), userspaceAddr: BigInt(this.base), mmapOffset: 0n }],
    };
  }

  /** A split driver for vring i (zeroes the ring first when `init`). */
  splitDriver<T>(i: number, features = { indirect: true, eventIdx: false, inOrder: true }, init = true): SplitDriver<T> {
    const l = this.split[i]!;
    if (init) SplitDriver.init(this.memory, l);
    return new SplitDriver<T>(this.memory, l, features);
  }
}

// ---- the virtio-user handshake ----------------------------------------------------------------

export interface ScriptStep {
  /** The message to send (ignored when `raw` or `close` is given). */
  readonly msg: Message<AnyFd>;
  /** Bytes to write as they are (garbage, a truncated message), with optional fds. */
  readonly raw?: { bytes: Uint8Array; fds?: AnyFd[] };
  /** Close the connection here (a front-end crash). */
  readonly close?: boolean;
  /** A reply comes back (GET_* or NEED_REPLY): virtio-user waits for it before going on. */
  readonly expectReply: boolean;
  readonly label: string;
}

export interface HandshakeOptions {
  /** Session 1 starts with SET_OWNER; later sessions start with virtio_reset's ENABLE 0 + GET_VRING_BASE (default 1). */
  session?: number;
  /** Eventfds the front-end passes (call and kick per vring); created when absent. */
  newEventfd: () => EventFd;
}

/**
 * DPDK virtio-user 22.11 (`server=1`) as the reference capture shows it: session 1 from
 * SET_OWNER, a reconnected session from `virtio_user_dev_server_reconnect` (ENABLE 0 and
 * GET_VRING_BASE per vring first, no SET_OWNER), then protocol negotiation, FEATURES_OK steps,
 * memory table, per-vring setup, ENABLE 1 and DRIVER_OK.
 */
export function virtioUserHandshake(guest: Guest, opts: HandshakeOptions): ScriptStep[] {
  const session = opts.session ?? 1;
  const steps: ScriptStep[] = [];
  const add = (label: string, request: number, payload?: Payload, o: { needReply?: boolean; fds?: AnyFd[] } = {}, expectReply = o.needReply ?? false) =>
    steps.push({ label, msg: makeRequest<AnyFd>(request, payload, { needReply: o.needReply ?? false, fds: o.fds ?? [] }), expectReply });
  const n = guest.vrings;
  if (session > 1) {
    for (let i = 0; i < n; i++) add(`SET_VRING_ENABLE ${i} 0`, R.SET_VRING_ENABLE, { kind: 'vringState', index: i, num: 0 });
    for (let i = 0; i < n; i++) add(`GET_VRING_BASE ${i}`, R.GET_VRING_BASE, { kind: 'vringState', index: i, num: 0 }, {}, true);
  } else {
    add('SET_OWNER', R.SET_OWNER);
  }
  add('GET_FEATURES', R.GET_FEATURES, undefined, {}, true);
  add('GET_PROTOCOL_FEATURES', R.GET_PROTOCOL_FEATURES, undefined, {}, true);
  add('SET_PROTOCOL_FEATURES', R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: VIRTIO_USER_PROTOCOL_FEATURES });
  for (let i = 0; i < n; i++) add(`SET_VRING_CALL ${i}`, R.SET_VRING_CALL, { kind: 'vringFile', index: i, noFd: false }, { fds: [opts.newEventfd()] });
  add('SET_FEATURES', R.SET_FEATURES, { kind: 'features', features: guest.packed ? VIRTIO_USER_PACKED_FEATURES : VIRTIO_USER_FEATURES });
  add('SET_STATUS 0xb', R.SET_STATUS, { kind: 'status', status: 0xb }, { needReply: true });
  add('GET_STATUS', R.GET_STATUS, undefined, {}, true);
  if (session === 1) add('GET_STATUS', R.GET_STATUS, undefined, {}, true);
  add('SET_MEM_TABLE', R.SET_MEM_TABLE, guest.memTable(), { needReply: true, fds: [guest.memfd.dup()] });
  for (let i = 0; i < n; i++) {
    add(`SET_VRING_NUM ${i}`, R.SET_VRING_NUM, { kind: 'vringState', index: i, num: guest.queueSize });
    add(`SET_VRING_BASE ${i}`, R.SET_VRING_BASE, { kind: 'vringState', index: i, num: guest.packed ? 0x8000 : 0 });
    add(`SET_VRING_ADDR ${i}`, R.SET_VRING_ADDR, guest.addr(i));
    add(`SET_VRING_KICK ${i}`, R.SET_VRING_KICK, { kind: 'vringFile', index: i, noFd: false }, { fds: [opts.newEventfd()] });
  }
  for (let i = 0; i < n; i++) add(`SET_VRING_ENABLE ${i} 1`, R.SET_VRING_ENABLE, { kind: 'vringState', index: i, num: 1 });
  add('SET_STATUS 0xf', R.SET_STATUS, { kind: 'status', status: 0xf }, { needReply: true });
  return steps;
}

// ---- a scripted front-end over the socket ------------------------------------------------------

export interface ScriptedFrontendOptions {
  readonly ns: SocketNamespace;
  readonly path: string;
  readonly guest: Guest;
  /** 'server': listen and accept (virtio-user server=1); 'client': connect once. Default 'server'. */
  readonly mode?: 'server' | 'client';
  /** Steps of session n (default: `virtioUserHandshake`). */
  readonly script?: (session: number, newEventfd: () => EventFd) => ScriptStep[];
  /** Faults for the connections this front-end accepts or makes. */
  readonly faults?: FaultPolicy;
}

export interface FrontendSession {
  readonly n: number;
  readonly channel: MessageChannel;
  readonly replies: DecodedMessage<AnyFd>[];
  /** Script steps sent. */
  sent: number;
  /** The whole script was sent and every reply received. */
  done: boolean;
  closed: boolean;
  /** Eventfds this session passed (call/kick per vring, in script order). */
  readonly eventfds: EventFd[];
}

/** Plays a script on each connection; replies are collected, not checked. */
export class ScriptedFrontend {
  readonly sessions: FrontendSession[] = [];
  private listener: Listener | undefined;

  constructor(private readonly o: ScriptedFrontendOptions) {}

  get current(): FrontendSession | undefined {
    return this.sessions[this.sessions.length - 1];
  }

  /** Server: listen (unlinks a stale socket file first, as virtio-user does). Client: connect. */
  start(): TransportError | undefined {
    if ((this.o.mode ?? 'server') === 'server') {
      if (this.o.ns.exists(this.o.path)) this.o.ns.unlink(this.o.path);
      const l = this.o.ns.listen(this.o.path, (sock) => this.run(sock));
      if (l instanceof TransportError) return l;
      this.listener = l;
      return undefined;
    }
    this.o.ns.connect(this.o.path, (r) => {
      if (!(r instanceof TransportError)) this.run(r);
    }, this.o.faults !== undefined && typeof this.o.faults !== 'function' ? { faults: this.o.faults } : {});
    return undefined;
  }

  /** Front-end exit: closes the connection and the listener (unlinking its socket file). */
  stop(): void {
    this.current?.channel.close();
    if (this.current) this.current.closed = true;
    this.listener?.close({ unlink: true });
    this.listener = undefined;
  }

  private run(sock: SocketFd): void {
    const n = this.sessions.length + 1;
    const eventfds: EventFd[] = [];
    const newEventfd = () => {
      const e = this.o.ns.eventfd(`fe s${n} efd${eventfds.length}`);
      eventfds.push(e);
      return e;
    };
    const steps = (this.o.script ?? ((s, ne) => virtioUserHandshake(this.o.guest, { session: s, newEventfd: ne })))(n, newEventfd);
    const channel = new MessageChannel(sock, { role: 'frontend' });
    const s: FrontendSession = { n, channel, replies: [], sent: 0, done: false, closed: false, eventfds };
    this.sessions.push(s);
    let waiting = false;
    const pump = () => {
      while (!s.closed && !waiting && s.sent < steps.length) {
        const step = steps[s.sent]!;
        s.sent++;
        if (step.close) {
          s.closed = true;
          channel.close();
          return;
        }
        if (step.raw !== undefined) {
          const e = sock.send(step.raw.bytes, step.raw.fds ?? []);
          for (const fd of step.raw.fds ?? []) if (!fd.closed) fd.close();
          if (e !== undefined) return;
          continue;
        }
        const err = channel.send(step.msg, { validate: false });
        // The fds were dup'ed into the socket; the front-end's own copies go.
        for (const fd of step.msg.fds ?? []) if (fd.kind !== 'eventfd' && !fd.closed) fd.close();
        if (err !== undefined) return;
        if (step.expectReply) waiting = true;
      }
      if (!waiting && s.sent >= steps.length) s.done = true;
    };
    channel.on({
      message: (m) => {
        s.replies.push(m);
        for (const fd of m.fds) fd.close();
        if (waiting) {
          waiting = false;
          pump();
        }
      },
      fatal: () => {
        s.closed = true;
        channel.close();
      },
      closed: () => {
        s.closed = true;
        channel.close();
      },
    });
    pump();
  }
}

/** A scheduler + namespace pair for socket-level tests. */
export function simHost(seed: number | string = 1, faults?: FaultPolicy): { sched: Scheduler; ns: SocketNamespace } {
  const sched = new Scheduler({ seed });
  const ns = new SocketNamespace({ scheduler: sched, name: 'host', ...(faults !== undefined ? { faults } : {}) });
  return { sched, ns };
}
