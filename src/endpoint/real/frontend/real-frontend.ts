/**
 * The model front-end `virtio-user-22.11` with `server=1` on a real AF_UNIX socket, serving a
 * real back-end (DPDK vhost `client=1`) in real time.
 *
 * The control path is the sans-IO `virtioUserSeq` (probe on the first connection, the server
 * reconnect sequence on each later one), run over the accepted socket by a small
 * `SequenceIo`. Guest memory is one sealed memfd (`RealMemFd`), mapped once for the life of
 * the front-end; the rings live in it and, as in virtio-user, outlive connections (split rings
 * keep their indices, packed rings are reset by the reconnect sequence). Kick and call are
 * real eventfds. The sequences hand out model handles (`RealBackedEventFd/MemFd` from
 * `RealFdAdapters`), which go on the wire as the real fds they wrap.
 *
 * The guest data path (post TX frames, kick when the ring asks, reclaim; post RX buffers and
 * read what comes back) is driven by the caller on the Node event loop.
 */
import { MessageDecoder, encode, requestName, type DecodedMessage, type Message } from '../../../protocol/index.ts';
import { TransportError, type AnyFd, type EventFd, type MemFd } from '../../../transport/index.ts';
import { MappedGuestMemory, RealEventFd, RealFdRegistry, RealMemFd, RealUnixListener, type RealFd, type RealSocketFd } from '../../../transport/real/index.ts';
import { FrontendError } from '../../frontend/errors.ts';
import { checkReply, runSequence, type OpResult, type ReplySpec, type SequenceIo } from '../../frontend/handshake.ts';
import { VIRTIO_USER_DEFAULTS, ringFeaturesOf, ringKindOf, type VirtioUserConfig } from '../../frontend/profiles.ts';
import { VIRTIO_USER_MAX_REPLY_PAYLOAD } from '../../frontend/virtio-user.ts';
import { close as closeSeq, newVirtioUserState, probe, serverReconnect, type VirtioUserEnv, type VirtioUserState } from '../../frontend/virtio-user-seq.ts';
import { RealFdAdapters, epochSeconds, realFdOf } from '../fd-adapter.ts';
import { BUF_SIZE, GuestPort, ringStride } from './guest-port.ts';

export { BUF_SIZE };

/** GPA = VA of the memory, as in the reference capture (virtio-user describes memsegs flat). */
const BASE = 0x100c3e000;

export interface RealModelFrontendOptions extends Partial<VirtioUserConfig> {
  readonly path: string;
  /** Guest memory bytes (default 4 MiB). */
  readonly ramSize?: number;
  readonly registry?: RealFdRegistry;
}

export interface RealFrontendSession {
  readonly n: number;
  /** Requests sent, by name without `VHOST_USER_`, in order. */
  readonly sent: string[];
  readonly connectedAt: number;
  /** The rings are handed to this back-end (from virtio-user's start_device until a stop or the end). */
  running: boolean;
  /** Set when the sequence finished (undefined while it runs). */
  outcome: 'started' | 'failed' | undefined;
  end: 'peer-closed' | 'closed-locally' | undefined;
}

export interface RealFrontendLogLine {
  readonly t: number;
  readonly level: string;
  readonly text: string;
}

interface Conn {
  readonly sock: RealSocketFd;
  readonly session: RealFrontendSession;
  readonly io: SocketIo;
  open: boolean;
}

/** A `SequenceIo` over a real socket: replies are queued until a sequence reads one. */
export class SocketIo implements SequenceIo {
  private readonly inbound: DecodedMessage<RealFd>[] = [];
  private readonly decoder: MessageDecoder<RealFd>;
  private waiter: { spec: ReplySpec; resume: (r: OpResult) => void } | undefined;
  private gone = false;

  constructor(
    private readonly sock: RealSocketFd,
    private readonly onSent: (name: string) => void,
    private readonly onFatal: (e: Error) => void,
    /** The largest reply payload the modelled reader accepts. */
    maxPayload = VIRTIO_USER_MAX_REPLY_PAYLOAD,
  ) {
    this.decoder = new MessageDecoder<RealFd>({ space: 'frontend', maxPayload });
  }

  /** The connection is gone (peer closed, closed here, or unframeable): sends fail with EPIPE. */
  get isGone(): boolean {
    return this.gone;
  }

  /** Set when the back-end's bytes could not be framed: nothing after them can be read. */
  failure: Error | undefined;

  push(chunk: Uint8Array, fds: RealFd[]): void {
    if (this.failure !== undefined) {
      for (const f of fds) f.close();
      return;
    }
    try {
      this.decoder.push(chunk, fds);
    } catch (e) {
      for (const f of fds) if (!f.closed) f.close();
      this.fail(e);
      return;
    }
    try {
      for (let m = this.decoder.next(); m !== undefined; m = this.decoder.next()) this.inbound.push(m);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.wake();
  }

  private fail(e: unknown): void {
    this.failure = e instanceof Error ? e : new Error(String(e));
    this.gone = true;
    this.wake();
    this.onFatal(this.failure);
  }

  closed(): void {
    this.gone = true;
    for (const m of this.inbound.splice(0)) for (const f of m.fds) f.close();
    this.wake();
  }

  send(msg: Message<AnyFd>): FrontendError | undefined {
    if (this.gone) return new FrontendError('transport', `send ${requestName(msg.request)}: connection shut down (EPIPE)`, msg.request);
    const enc = encode(msg, { validate: false });
    const fds = enc.fds.map((f) => {
      const r = realFdOf(f);
      if (r === undefined) throw new Error(`${requestName(msg.request)} carries fd ${f.fd}, which is not a real fd`);
      return r;
    });
    const err = this.sock.send(enc.bytes, fds);
    if (err !== undefined) return new FrontendError('transport', `send ${requestName(msg.request)}: ${err.message}`, msg.request);
    this.onSent(requestName(msg.request).replace(/^VHOST_USER_/, ''));
    return undefined;
  }

  read(spec: ReplySpec, resume: (r: OpResult) => void): OpResult | 'wait' {
    const now = this.tryRead(spec);
    if (now !== undefined) return now;
    this.waiter = { spec, resume };
    return 'wait';
  }

  private wake(): void {
    const w = this.waiter;
    if (w === undefined) return;
    const r = this.tryRead(w.spec);
    if (r === undefined) return;
    this.waiter = undefined;
    w.resume(r);
  }

  private tryRead(spec: ReplySpec): OpResult | undefined {
    const m = this.inbound.shift();
    if (m !== undefined) {
      for (const f of m.fds) f.close();
      const err = checkReply(m, spec);
      return err !== undefined ? { ok: false, error: err } : { ok: true, reply: { request: m.header.request, flags: m.header.flags, payload: m.payload } };
    }
    if (this.gone) return { ok: false, error: new FrontendError('eof', `connection closed before the reply to ${requestName(spec.request)}`, spec.request) };
    return undefined;
  }
}

export class RealModelFrontend {
  readonly path: string;
  readonly cfg: VirtioUserConfig;
  readonly registry: RealFdRegistry;
  readonly adapters: RealFdAdapters;
  readonly state: VirtioUserState;
  readonly sessions: RealFrontendSession[] = [];
  readonly log: RealFrontendLogLine[] = [];
  /** Buffers in flight dropped by packed-ring resets on reconnect. */
  droppedOnReset = 0;
  private readonly memfd: RealMemFd;
  private readonly mem: MappedGuestMemory;
  private readonly memHandle: MemFd;
  private readonly kicks: EventFd[] = [];
  private readonly calls: EventFd[] = [];
  private readonly port: GuestPort;
  private readonly env: VirtioUserEnv;
  private listener: RealUnixListener | undefined;
  private conn: Conn | undefined;
  private readonly backlog: RealSocketFd[] = [];
  private probed = false;
  private stopped = false;

  constructor(opts: RealModelFrontendOptions) {
    const { path, ramSize, registry, ...cfg } = opts;
    this.path = path;
    this.cfg = { ...VIRTIO_USER_DEFAULTS, ...Object.fromEntries(Object.entries(cfg).filter(([, v]) => v !== undefined)) };
    if (this.cfg.queues !== 1) throw new RangeError('RealModelFrontend serves one queue pair');
    this.registry = registry ?? new RealFdRegistry(`model front-end ${path}`);
    this.adapters = new RealFdAdapters(`model front-end ${path}`);
    this.state = newVirtioUserState(this.cfg, 0);
    const size = ramSize ?? 4 << 20;
    const q = this.cfg.queueSize;
    // Every vring gets a page-rounded slot at the top of RAM (big enough for either ring kind).
    const stride = ringStride(q);
    if (2 * stride + 2 * q * BUF_SIZE > size) throw new RangeError(`${size} bytes of guest memory cannot hold the rings and ${2 * q} buffers`);
    this.memfd = RealMemFd.create('virtio-user-ram', size, this.registry);
    try {
      this.mem = new MappedGuestMemory([{ gpa: BASE, uva: BASE, mapping: this.memfd.map(0, size, 'model front-end guest memory') }]);
    } catch (e) {
      this.memfd.close();
      throw e;
    }
    // The handle the sequences send; it owns the memfd from here on (it never maps it).
    this.memHandle = this.adapters.adopt(this.memfd) as MemFd;
    for (let i = 0; i < 2; i++) {
      this.kicks.push(this.adapters.adopt(RealEventFd.create(0, { registry: this.registry })) as EventFd);
      this.calls.push(this.adapters.adopt(RealEventFd.create(0, { registry: this.registry })) as EventFd);
    }
    this.port = new GuestPort({
      memory: () => this.memory,
      queueSize: q,
      ringBase: [0, 1].map((i) => BASE + size - (i + 1) * stride),
      bufBase: BASE,
      kick: (i) => this.kicks[i]!.write(1n),
      running: () => this.running,
      // DPDK's virtio PMD polls: virtio_init_vring() calls virtqueue_disable_intr() on every
      // vring (drivers/net/virtio, 22.11), split VRING_AVAIL_F_NO_INTERRUPT / packed DISABLE.
      usedNotifications: false,
    });
    this.env = this.makeEnv(size);
  }

  get memory() {
    return this.mem.memory;
  }

  get session(): RealFrontendSession | undefined {
    return this.conn?.open ? this.conn.session : undefined;
  }

  /** DRIVER_OK reached on the current back-end. */
  get running(): boolean {
    return this.conn?.open === true && this.conn.session.running;
  }

  /** Takes each vring's call eventfd count: used-buffer notifications the back-end sent since the last take. */
  takeCalls(): bigint[] {
    return this.calls.map((c) => (realFdOf(c) as RealEventFd).read());
  }

  /** The negotiated ring kind (after the probe). */
  get packed(): boolean {
    return this.port.packed;
  }

  /** Listen: "waiting for client connection...". */
  listen(): void {
    const l = RealUnixListener.listen(this.path, (s) => this.onAccept(s), { registry: this.registry });
    if (l instanceof TransportError) throw l;
    this.listener = l;
    this.note('NOTICE', `(${this.path}) waiting for client connection...`);
  }

  /** Resolves when connection `n` (1, 2, …) finished its sequence with DRIVER_OK; rejects if it failed. */
  async waitForRunning(n: number, timeoutMs = 15_000): Promise<RealFrontendSession> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = this.sessions[n - 1];
      if (s?.outcome === 'started') return s;
      if (s?.outcome === 'failed') throw new Error(`${this.path}: session ${n} did not start: ${this.log.map((l) => l.text).join(' | ')}`);
      if (Date.now() > end) throw new Error(`${this.path}: session ${n} not running within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  // ---- data path ---------------------------------------------------------------------------

  /** Posts empty RX buffers until `n` are posted or the ring is full; kicks if asked. */
  postRx(n: number): number {
    return this.port.postRx(n);
  }

  /** Transmits packets (virtio-net header included) one buffer each; returns how many fit. */
  send(packets: readonly Uint8Array[]): number {
    return this.port.send(packets);
  }

  /** TX buffers given back. */
  reclaimTx(): number {
    return this.port.reclaimTx();
  }

  /** Received packets (virtio-net header included), oldest first. */
  receive(): Uint8Array[] {
    return this.port.receive();
  }

  /** Buffers of vring `i` the back-end has not given back. */
  inFlight(i: number): number {
    return this.port.inFlight(i);
  }

  // ---- shutdown ----------------------------------------------------------------------------

  /**
   * testpmd `quit` of virtio-user: the port's close sends the reset (ENABLE 0, GET_VRING_BASE)
   * when a back-end is held, then everything is closed and the socket file removed.
   */
  async quit(timeoutMs = 5_000): Promise<void> {
    if (this.stopped) return;
    const c = this.conn;
    if (c?.open) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        runSequence(closeSeq(this.state, this.env), c.io, () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    this.shutdown();
  }

  /** Closes every socket and fd and releases the mapping, each exactly once. */
  shutdown(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.conn?.open) this.dropConnection('closed-locally');
    for (const s of this.backlog.splice(0)) s.close();
    this.listener?.close({ unlink: true });
    this.listener = undefined;
    this.port.clear();
    this.mem.release();
    this.memHandle.close();
    for (const e of [...this.kicks, ...this.calls]) e.close();
  }

  /** Open fds and live mappings: empty after `shutdown()`, or something leaked. */
  leaks(): string[] {
    const out = [...this.registry.describeOpen(), ...this.adapters.describeOpen()];
    if (!this.mem.released) out.push('guest memory still mapped');
    if (this.adapters.liveMappings > 0) out.push(`${this.adapters.liveMappings} adapter mapping(s) live`);
    return out;
  }

  // ---- internals ---------------------------------------------------------------------------

  private note(level: string, text: string): void {
    this.log.push({ t: epochSeconds(), level, text });
  }

  private onAccept(sock: RealSocketFd): void {
    if (this.stopped) {
      sock.close();
      return;
    }
    this.backlog.push(sock);
    this.maybeAccept();
  }

  /** One back-end at a time: the next is taken up only once the current one is gone. */
  private maybeAccept(): void {
    if (this.conn?.open || this.stopped) return;
    const sock = this.backlog.shift();
    if (sock === undefined) return;
    const session: RealFrontendSession = { n: this.sessions.length + 1, sent: [], connectedAt: epochSeconds(), running: false, outcome: undefined, end: undefined };
    this.sessions.push(session);
    // Unframeable garbage: drop this back-end and wait for the next, as the in-process model does.
    const io = new SocketIo(
      sock,
      (name) => session.sent.push(name),
      (e) => {
        this.note('ERR', `back-end stream cannot be framed: ${e.message}`);
        setImmediate(() => {
          if (this.conn === c && c.open) this.dropConnection('closed-locally');
          this.maybeAccept();
        });
      },
    );
    const c: Conn = { sock, session, io, open: true };
    this.conn = c;
    sock.onData((chunk, fds) => {
      if (!c.open) {
        for (const f of fds) f.close();
        return;
      }
      io.push(chunk, fds);
    });
    sock.onClose(() => {
      if (!c.open) return;
      this.note('ERR', 'virtio-user port is down');
      io.closed();
      // After the pending sequence has seen the EOF (same tick), let the fd go.
      setImmediate(() => {
        if (this.conn === c && c.open) this.dropConnection('peer-closed');
        this.maybeAccept();
      });
    });
    const finish = (ok: boolean): void => {
      session.outcome = ok ? 'started' : 'failed';
      session.running = ok && c.open;
    };
    if (!this.probed) {
      runSequence(probe(this.state, this.env), io, (r) => {
        // The real PMD's port would not exist after a failed probe; here the next back-end is probed afresh.
        if (r.probed) this.probed = true;
        else Object.assign(this.state, newVirtioUserState(this.cfg, this.state.staleVringNum));
        finish(r.probed && r.started);
      });
    } else {
      runSequence(serverReconnect(this.state, this.env), io, finish);
    }
  }

  private dropConnection(end: 'peer-closed' | 'closed-locally'): void {
    const c = this.conn;
    if (c === undefined || !c.open) return;
    c.open = false;
    c.session.running = false;
    c.session.end = end;
    c.io.closed();
    c.sock.close();
  }

  private makeEnv(size: number): VirtioUserEnv {
    const region = { guestPhysAddr: BigInt(BASE), memorySize: BigInt(size), userspaceAddr: BigInt(BASE), mmapOffset: 0n };
    return {
      cfg: this.cfg,
      connected: () => this.conn?.open === true,
      callFd: (i) => this.calls[i]!,
      kickFd: (i) => this.kicks[i]!,
      memoryTable: () => ({ regions: [region], fds: [this.memHandle] }),
      // GPA = VA here, so the areas' GPAs are the addresses virtio-user sends.
      vringAddr: (i) => {
        const a = this.port.areas(i);
        return { desc: BigInt(a.desc), avail: BigInt(a.avail), used: BigInt(a.used) };
      },
      allocQueues: (features) => {
        for (let i = 0; i < 2; i++) this.port.build(i, ringKindOf(features) === 'packed', ringFeaturesOf(features));
      },
      resetPackedQueues: () => {
        const packed = this.port.packed;
        const f = ringFeaturesOf(this.state.guestFeatures);
        for (let i = 0; i < 2; i++) this.droppedOnReset += this.port.build(i, packed, f);
      },
      log: (level, text) => this.note(level, text),
      milestone: (kind) => {
        this.note('INFO', kind);
        const c = this.conn;
        if (c?.open && kind === 'started') c.session.running = true;
        if (c?.open && kind === 'stopped') c.session.running = false;
      },
    };
  }
}
