/**
 * Test helpers for the real back-end without DPDK: a front-end in this process that behaves
 * like DPDK virtio-user 22.11 with `server=1` (the message order of fact sheet §4.5 and
 * Appendix B) over a real socket, with real memfd guest memory and real eventfds, and a split
 * ring driver per vring so tests can transmit and receive frames. Also a builder for
 * well-formed IPv4/UDP frames.
 */
import { FrontendRequest as R, MessageDecoder, encode, makeRequest, type DecodedMessage, type Message, type Payload } from '../../protocol/index.ts';
import { TransportError } from '../../transport/index.ts';
import {
  MappedGuestMemory,
  RealEventFd,
  RealFdRegistry,
  RealMemFd,
  RealUnixListener,
  openFdNumbers,
  type RealFd,
  type RealSocketFd,
} from '../../transport/real/index.ts';
import { fdsOpenedSince, tempDir } from '../../transport/real/test-support.ts';
import { RealModelBackend } from './real-backend.ts';
import { SplitDriver, layoutSplitRing, splitRingFootprint, type SplitLayout } from '../../ring/split/index.ts';
import type { UsedBuffer } from '../../ring/types.ts';

/** What DPDK virtio-user 22.11 acks (mrg_rxbuf, in_order, indirect, version 1, bit 30) and its protocol features. */
export const VIRTIO_USER_FEATURES = 0x950008000n;
export const VIRTIO_USER_PROTOCOL_FEATURES = 0x10009n;

function ipv4Checksum(b: Uint8Array, o: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (b[o + i]! << 8) | b[o + i + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** A well-formed Ethernet/IPv4/UDP frame of `len` bytes (≥ 42), payload bytes from `seq`. */
export function udpFrame(len: number, seq = 0): Uint8Array {
  if (len < 42) throw new RangeError(`a UDP frame needs at least 42 bytes, not ${len}`);
  const f = new Uint8Array(len);
  const dv = new DataView(f.buffer);
  f.set([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01], 0);
  dv.setUint16(12, 0x0800);
  f[14] = 0x45;
  dv.setUint16(16, len - 14);
  f[22] = 64;
  f[23] = 17;
  f.set([198, 18, 0, 1, 198, 18, 0, 2], 26);
  dv.setUint16(24, ipv4Checksum(f, 14, 20));
  dv.setUint16(34, 9);
  dv.setUint16(36, 9);
  dv.setUint16(38, len - 34);
  for (let i = 42; i < len; i++) f[i] = (seq + i) & 0xff;
  return f;
}

export interface TestFrontendOptions {
  readonly path: string;
  readonly registry: RealFdRegistry;
  readonly queueSize?: number;
  /** Guest memory bytes (default 2 MiB). */
  readonly memSize?: number;
}

export interface TestSession {
  readonly n: number;
  readonly sock: RealSocketFd;
  readonly replies: DecodedMessage<RealFd>[];
  /** Every step sent and every awaited reply received. */
  done: boolean;
  closed: boolean;
}

interface Step {
  readonly msg: Message<RealFd>;
  readonly reply: boolean;
}

const GUEST_BASE = 0x100c3e000;
const BUF_SIZE = 2048;

/**
 * virtio-user `server=1` in miniature: listens, plays the handshake on each connection
 * (session 1 from SET_OWNER; later ones from virtio_reset's ENABLE 0 and GET_VRING_BASE), and
 * keeps its split rings across reconnects as virtio-user does, so the back-end resyncs to
 * used->idx. vring 0 receives, vring 1 transmits; one 2 KiB buffer per descriptor slot.
 */
export class TestFrontend {
  readonly sessions: TestSession[] = [];
  readonly queueSize: number;
  readonly memory: MappedGuestMemory;
  private readonly memfd: RealMemFd;
  private readonly layouts: SplitLayout[];
  private readonly rxDriver: SplitDriver<number>;
  private readonly txDriver: SplitDriver<number>;
  private readonly bufBase: number;
  private readonly eventfds: RealEventFd[] = [];
  private listener: RealUnixListener | undefined;
  private txSlot = 0;
  private rxSlot = 0;

  constructor(private readonly o: TestFrontendOptions) {
    this.queueSize = o.queueSize ?? 256;
    const size = o.memSize ?? 2 << 20;
    const ringBytes = 2 * Math.ceil(splitRingFootprint(this.queueSize) / 4096) * 4096;
    if (0x1000 + ringBytes + 2 * this.queueSize * BUF_SIZE > size) throw new RangeError(`${size} bytes of guest memory cannot hold the rings and buffers`);
    this.memfd = RealMemFd.create('test-guest', size, o.registry);
    this.memory = new MappedGuestMemory([{ gpa: GUEST_BASE, uva: GUEST_BASE, mapping: this.memfd.map(0, size, 'test guest memory') }]);
    const mem = this.memory.memory;
    let at = GUEST_BASE + 0x1000;
    this.layouts = [];
    for (let i = 0; i < 2; i++) {
      const l = layoutSplitRing(at, this.queueSize);
      this.layouts.push(l);
      SplitDriver.init(mem, l);
      at += Math.ceil(splitRingFootprint(this.queueSize) / 4096) * 4096;
    }
    const features = { indirect: true, eventIdx: false, inOrder: true };
    this.rxDriver = new SplitDriver<number>(mem, this.layouts[0]!, features);
    this.txDriver = new SplitDriver<number>(mem, this.layouts[1]!, features);
    this.bufBase = at;
  }

  get current(): TestSession | undefined {
    return this.sessions[this.sessions.length - 1];
  }

  /** Listen on the path (the back-end connects). */
  listen(): void {
    const l = RealUnixListener.listen(this.o.path, (sock) => this.run(sock), { registry: this.o.registry });
    if (l instanceof TransportError) throw l;
    this.listener = l;
  }

  /** Closes the current connection (a front-end reset of the socket), keeping the listener. */
  dropConnection(): void {
    const s = this.current;
    if (s === undefined || s.closed) return;
    s.closed = true;
    s.sock.close();
  }

  /** Front-end exit: connection and listener closed, socket file removed, memory unmapped, fds closed. */
  stop(): void {
    this.dropConnection();
    this.listener?.close({ unlink: true });
    this.listener = undefined;
    this.memory.release();
    this.memfd.close();
    for (const e of this.eventfds.splice(0)) e.close();
  }

  /** Posts `n` empty RX buffers; returns how many fit. */
  postRx(n: number): number {
    const mem = this.memory.memory;
    let posted = 0;
    for (; posted < n && this.rxDriver.freeDescriptors > 0; posted++) {
      const slot = this.rxSlot++ % this.queueSize;
      const addr = this.bufBase + slot * BUF_SIZE;
      mem.fill(addr, BUF_SIZE, 0);
      this.rxDriver.add([{ addr, len: BUF_SIZE, writable: true }], slot);
    }
    this.rxDriver.publish();
    return posted;
  }

  /** Transmits each frame behind a zeroed 12-byte virtio-net header; returns how many fit. */
  send(frames: readonly Uint8Array[]): number {
    const mem = this.memory.memory;
    let sent = 0;
    for (const f of frames) {
      if (this.txDriver.freeDescriptors === 0) break;
      const slot = this.queueSize + (this.txSlot++ % this.queueSize);
      const addr = this.bufBase + slot * BUF_SIZE;
      mem.fill(addr, 12, 0);
      mem.write(addr + 12, f);
      this.txDriver.add([{ addr, len: 12 + f.length, writable: false }], slot);
      sent++;
    }
    this.txDriver.publish();
    return sent;
  }

  /** TX buffers the back-end has given back. */
  reclaimTx(): number {
    const out: UsedBuffer<number> = { token: 0, len: 0, id: 0 };
    let n = 0;
    while (this.txDriver.reclaim(out)) n++;
    return n;
  }

  /** Received packets (virtio-net header included), oldest first. */
  receive(): Uint8Array[] {
    const out: UsedBuffer<number> = { token: 0, len: 0, id: 0 };
    const got: Uint8Array[] = [];
    while (this.rxDriver.reclaim(out)) {
      const b = new Uint8Array(out.len);
      this.memory.memory.read(this.bufBase + out.token * BUF_SIZE, b);
      got.push(b);
    }
    return got;
  }

  private newEventfd(): RealEventFd {
    const e = RealEventFd.create(0, { registry: this.o.registry });
    this.eventfds.push(e);
    return e;
  }

  private script(n: number): Step[] {
    const steps: Step[] = [];
    const add = (request: number, payload?: Payload, o: { needReply?: boolean; fds?: RealFd[]; reply?: boolean } = {}) =>
      steps.push({ msg: makeRequest<RealFd>(request, payload, { needReply: o.needReply ?? false, fds: o.fds ?? [] }), reply: o.reply ?? o.needReply ?? false });
    if (n === 1) add(R.SET_OWNER);
    else {
      for (const i of [0, 1]) add(R.SET_VRING_ENABLE, { kind: 'vringState', index: i, num: 0 });
      for (const i of [0, 1]) add(R.GET_VRING_BASE, { kind: 'vringState', index: i, num: 0 }, { reply: true });
    }
    add(R.GET_FEATURES, undefined, { reply: true });
    add(R.GET_PROTOCOL_FEATURES, undefined, { reply: true });
    add(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: VIRTIO_USER_PROTOCOL_FEATURES });
    for (const i of [0, 1]) add(R.SET_VRING_CALL, { kind: 'vringFile', index: i, noFd: false }, { fds: [this.newEventfd()] });
    add(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_FEATURES });
    add(R.SET_STATUS, { kind: 'status', status: 0xb }, { needReply: true });
    add(R.GET_STATUS, undefined, { reply: true });
    const size = this.memory.memory.regions[0]!.size;
    add(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: BigInt(GUEST_BASE), memorySize: BigInt(size), userspaceAddr: BigInt(GUEST_BASE), mmapOffset: 0n }] },
      { needReply: true, fds: [this.memfd] },
    );
    for (const i of [0, 1]) {
      const l = this.layouts[i]!;
      add(R.SET_VRING_NUM, { kind: 'vringState', index: i, num: this.queueSize });
      add(R.SET_VRING_BASE, { kind: 'vringState', index: i, num: 0 });
      add(R.SET_VRING_ADDR, { kind: 'vringAddr', index: i, flags: 0, desc: BigInt(l.desc), used: BigInt(l.used), avail: BigInt(l.avail), log: 0n });
      add(R.SET_VRING_KICK, { kind: 'vringFile', index: i, noFd: false }, { fds: [this.newEventfd()] });
    }
    for (const i of [0, 1]) add(R.SET_VRING_ENABLE, { kind: 'vringState', index: i, num: 1 });
    add(R.SET_STATUS, { kind: 'status', status: 0xf }, { needReply: true });
    return steps;
  }

  private run(sock: RealSocketFd): void {
    const s: TestSession = { n: this.sessions.length + 1, sock, replies: [], done: false, closed: false };
    this.sessions.push(s);
    const steps = this.script(s.n);
    const decoder = new MessageDecoder<RealFd>({ space: 'frontend' });
    let next = 0;
    let waiting = false;
    const pump = (): void => {
      while (!s.closed && !waiting && next < steps.length) {
        const step = steps[next++]!;
        const enc = encode(step.msg, { validate: false });
        if (sock.send(enc.bytes, enc.fds) !== undefined) return;
        waiting = step.reply;
      }
      if (!waiting && next >= steps.length) s.done = true;
    };
    sock.onData((chunk, fds) => {
      decoder.push(chunk, fds);
      for (let m = decoder.next(); m !== undefined; m = decoder.next()) {
        s.replies.push(m);
        for (const fd of m.fds) fd.close();
        waiting = false;
      }
      pump();
    });
    sock.onClose(() => {
      s.closed = true;
      sock.close();
    });
    pump();
  }
}

/** Throws when `found` is not empty (a test helper's check without a test framework). */
function expectNone(what: string, found: readonly unknown[]): void {
  if (found.length > 0) throw new Error(`${what}: ${JSON.stringify(found)}`);
}

/** A real front-end under test: shut down and checked for leaks at the end. */
export interface RealFrontendUnderTest {
  shutdown(): void;
  leaks(): string[];
}

/**
 * Per-test scaffolding of the real model front-end tests: a back-end fd registry, a temp
 * dir, clean-ups run after each test, and checks that nothing of the test stays open.
 * Wire it with `beforeEach(() => fx.setUp())` and `afterEach(() => fx.tearDown())`.
 */
export class RealFrontendFixture {
  readonly cleanup: (() => void)[] = [];
  private state: { reg: RealFdRegistry; tmp: ReturnType<typeof tempDir>; before: number[] } | undefined;

  constructor(private readonly tmpPrefix: string) {}

  get reg(): RealFdRegistry {
    return this.state!.reg;
  }

  /** A path in this test's temp dir. */
  path(name: string): string {
    return this.state!.tmp.path(name);
  }

  setUp(): void {
    this.state = { reg: new RealFdRegistry('backend'), tmp: tempDir(this.tmpPrefix), before: openFdNumbers() };
  }

  tearDown(): void {
    const s = this.state!;
    try {
      for (const c of this.cleanup.splice(0)) c();
    } finally {
      s.tmp.cleanup();
    }
    expectNone('back-end fds open', s.reg.describeOpen());
    expectNone('fds opened by the test', fdsOpenedSince(s.before));
  }

  /** Echoing model back-ends on `path`, one a call; at the end they quit, then `fe` shuts down, and none leaks. */
  echoBackends(fe: RealFrontendUnderTest, path: string): () => RealModelBackend {
    const backends: RealModelBackend[] = [];
    this.cleanup.push(() => {
      for (const b of backends) b.quit();
      fe.shutdown();
      expectNone('front-end leaks', fe.leaks());
      for (const b of backends) expectNone('back-end leaks', b.leaks());
    });
    return () => {
      const b = new RealModelBackend({ path, registry: this.reg, dataPath: { rx: 'echo' } });
      backends.push(b);
      const err = b.start();
      if (err !== undefined) throw new Error(`back-end start: ${String(err)}`);
      return b;
    };
  }
}

/** The numbers `from`, `from + 1`, … (`n` of them). */
export const seqs = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
