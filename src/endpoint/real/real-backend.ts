/**
 * The model back-end `dpdk-22.11` serving a real front-end (DPDK virtio-user `server=1`, or
 * QEMU with a server chardev) over a real AF_UNIX socket, in client mode (`client=1`), in
 * real time.
 *
 * The protocol is the sans-IO `VhostUserDevice`, unchanged; this file is the glue DPDK's
 * lib/vhost/socket.c is around it, with DPDK's log lines:
 * - connect once at start; on failure WARNING "failed to connect: <strerror>", INFO
 *   "reconnecting...", then retry every `reconnectPeriod` seconds (1 s) of real time, silently,
 *   until INFO "connected";
 * - on the peer's close (or a handler failure without NEED_REPLY, or a framing error) the
 *   device is destroyed — every fd it holds closed, every mapping released — and a new socket
 *   starts the connect/retry cycle again; nothing of the old device survives;
 * - `quit()` is testpmd's `quit` ("free connfd N", device destroyed, retrying stopped);
 *   `kill()` closes everything without a word, as the kernel does for a crashed process.
 *
 * Messages are framed with DPDK's reader (the socket itself reads header-then-payload, so fds
 * arrive with their message's header); received fds become model handles through
 * `RealFdAdapters`, and replies' fds go back out as the real fds they wrap.
 *
 * The data path (`NetDataPath`) starts at the device's new_device() and polls until the
 * device stops.
 */
import { encodeHeader, HEADER_SIZE, type Message } from '../../protocol/index.ts';
import { TransportError, type AnyFd } from '../../transport/index.ts';
import { RealFdRegistry, connectUnix, type RealFd, type RealSocketFd } from '../../transport/real/index.ts';
import {
  DpdkMessageReader,
  VhostUserDevice,
  dpdk2211Profile,
  encodeBackendMessage,
  type DpdkBackendOptions,
  type DpdkBackendProfile,
  type IncomingMessage,
  type Lifecycle,
  type VhostLogEvent,
} from '../backend/index.ts';
import { configEvent, errorEvent } from '../backend/log.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { RealFdAdapters, epochSeconds, realFdOf } from './fd-adapter.ts';
import { NetDataPath, type DataPathOptions, type DataPathStats } from './data-path.ts';

export type RealBackendState =
  | 'idle' // not started
  | 'retrying' // waiting for the next connect attempt
  | 'connected'
  | 'failed' // a failed connect with reconnect off
  | 'stopped'; // quit or killed

export interface RealModelBackendConfig {
  /** The front-end's socket path (net_vhost `iface=`). */
  readonly path: string;
  /** A profile or options for `dpdk2211Profile`; the back-end is always a client here. */
  readonly profile?: DpdkBackendProfile | Partial<DpdkBackendOptions>;
  /** Where real fds are tracked (default: a registry of this back-end's own). */
  readonly registry?: RealFdRegistry;
  /** f2b messages as read, b2f as sent, one trace session per connection. */
  readonly recorder?: TraceRecorder;
  readonly onEvent?: (e: VhostLogEvent) => void;
  readonly onLifecycle?: (kind: Lifecycle, session: RealSession) => void;
  /** Data-path options, or false for none (the device still reaches ready). Default: TX only. */
  readonly dataPath?: DataPathOptions | false;
}

/** One connection, from connect to close. */
export interface RealSession {
  /** 1, 2, … in connection order. */
  readonly n: number;
  readonly device: VhostUserDevice;
  readonly connectedAt: number;
  /** Requests read, by DPDK's handler name without `VHOST_USER_` (`SET_VRING_ENABLE`), in order. */
  readonly messages: string[];
  /** This connection's events (including the device's destruction). */
  readonly events: VhostLogEvent[];
  /** Epoch seconds of each new_device() (a device stopped by GET_VRING_BASE can start again). */
  readonly readyAt: number[];
  endedAt: number | undefined;
  end: 'peer-closed' | 'closed-locally' | 'error' | 'killed' | undefined;
}

interface Connection {
  readonly sock: RealSocketFd;
  readonly device: VhostUserDevice;
  readonly reader: DpdkMessageReader;
  readonly session: RealSession;
  readonly trace: number | undefined;
  open: boolean;
}

interface ReadyWaiter {
  readonly min: number;
  readonly resolve: (s: RealSession) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

const NOTHING_IN_USE: ReadonlySet<ArrayBufferLike> = new Set();

/** The buffers a device still reads or writes: its guest memory and its dirty log. */
function buffersInUse(d: VhostUserDevice): Set<ArrayBufferLike> {
  const s = new Set<ArrayBufferLike>();
  if (d.isDestroyed) return s;
  for (const r of d.memory?.regions ?? []) s.add(r.buffer);
  const log = d.dirtyLog;
  if (log !== undefined) s.add(log.bitmap.buffer);
  return s;
}

const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  ECONNREFUSED: 'Connection refused',
  EAGAIN: 'Resource temporarily unavailable',
  EINVAL: 'Invalid argument',
};

export class RealModelBackend {
  readonly path: string;
  readonly profile: DpdkBackendProfile;
  readonly registry: RealFdRegistry;
  /** Model handles for the real fds the devices hold. */
  readonly adapters: RealFdAdapters;
  /** Every event, stamped with epoch seconds and the path. */
  readonly events: VhostLogEvent[] = [];
  readonly sessions: RealSession[] = [];
  readonly dataPath: NetDataPath | undefined;
  private st: RealBackendState = 'idle';
  private conn: Connection | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private nextSockLabel = 100;
  private waiters: ReadyWaiter[] = [];

  constructor(private readonly cfg: RealModelBackendConfig) {
    this.path = cfg.path;
    const p = cfg.profile;
    this.profile = p !== undefined && 'name' in p ? (p as DpdkBackendProfile) : dpdk2211Profile({ ...(p as Partial<DpdkBackendOptions> | undefined), client: true });
    this.registry = cfg.registry ?? new RealFdRegistry(`model back-end ${cfg.path}`);
    this.adapters = new RealFdAdapters(`model back-end ${cfg.path}`);
    this.dataPath = cfg.dataPath === false ? undefined : new NetDataPath({ queues: this.profile.options.queues, ...cfg.dataPath });
  }

  get state(): RealBackendState {
    return this.st;
  }

  /** The live connection's device. */
  get device(): VhostUserDevice | undefined {
    return this.conn?.open ? this.conn.device : undefined;
  }

  get session(): RealSession | undefined {
    return this.conn?.open ? this.conn.session : undefined;
  }

  /** Data-path counters (all zero without a data path). */
  get stats(): DataPathStats | undefined {
    return this.dataPath?.stats;
  }

  /** `rte_vhost_driver_start` in client mode. A failed connect without reconnect is returned. */
  start(): TransportError | undefined {
    if (this.st !== 'idle') throw new Error(`RealModelBackend.start in state ${this.st}`);
    this.createSocket();
    return this.connect(false);
  }

  /** testpmd `quit`: close the connection ("free connfd"), destroy the device, stop retrying. */
  quit(): void {
    if (this.st === 'stopped') return;
    this.stopRetrying();
    const c = this.conn;
    if (c?.open) {
      this.emit(configEvent('INFO', `free connfd ${c.sock.fd}`, { kind: 'closed-locally', fd: c.sock.fd }), c.session);
      this.closeConnection(c, 'closed-locally', true);
    }
    this.stopped();
  }

  /** A crash: every fd closed, nothing logged. */
  kill(): void {
    if (this.st === 'stopped') return;
    this.stopRetrying();
    if (this.conn?.open) this.closeConnection(this.conn, 'killed', false);
    this.stopped();
  }

  /**
   * Resolves with the first session numbered `session` or later whose device reaches ready
   * (new_device()); by default the current connection's, or the next one's. Rejects after
   * `timeoutMs` or at quit.
   */
  waitForReady(opts: { session?: number; timeoutMs?: number } = {}): Promise<RealSession> {
    const min = opts.session ?? (this.conn?.open ? this.conn.session.n : this.sessions.length + 1);
    const done = this.sessions.find((s) => s.n >= min && s.readyAt.length > 0);
    if (done !== undefined) return Promise.resolve(done);
    if (this.st === 'stopped') return Promise.reject(new Error('the back-end was stopped'));
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise<RealSession>((resolve, reject) => {
      const w: ReadyWaiter = {
        min,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`${this.path}: no device ready within ${timeoutMs} ms (state ${this.st}, ${this.sessions.length} sessions)`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Open real fds, unreleased mappings and open adapters: empty once stopped, or something leaked. */
  leaks(): string[] {
    const out = [...this.registry.describeOpen(), ...this.adapters.describeOpen()];
    const maps = this.adapters.liveMappings;
    if (maps > 0) out.push(`${maps} mapping(s) made through adapters not released`);
    return out;
  }

  // ---- internals -------------------------------------------------------------------------

  private emit(e: VhostLogEvent, session?: RealSession): void {
    e.t = epochSeconds();
    e.path = this.path;
    this.events.push(e);
    if (session !== undefined) {
      session.events.push(e);
      if (e.kind === 'message') session.messages.push(e.name);
    }
    this.cfg.onEvent?.(e);
  }

  /** DPDK's "socket created" line; the number is a label (the real socket exists only once connected). */
  private createSocket(): void {
    const fd = this.nextSockLabel++;
    this.emit(configEvent('INFO', `vhost-user client: socket created, fd: ${fd}`, { kind: 'socket-created', role: 'client', fd }));
  }

  private tryConnect(): RealSocketFd | string {
    try {
      const r = connectUnix(this.path, { registry: this.registry });
      if (r instanceof TransportError) return STRERROR[r.code] ?? r.code;
      return r;
    } catch (e) {
      // An errno the transport does not expect from connect (EACCES, say): DPDK just retries.
      return e instanceof Error ? e.message : String(e);
    }
  }

  /** `vhost_user_start_client` (retry=false) or one pass of the reconnect thread (retry=true). */
  private connect(retry: boolean): TransportError | undefined {
    const r = this.tryConnect();
    if (typeof r === 'string') {
      if (retry) {
        this.scheduleRetry();
        return undefined;
      }
      this.emit(configEvent('WARNING', `failed to connect: ${r}`, { kind: 'connect-failed', error: r }));
      if (!this.profile.options.reconnect) {
        this.st = 'failed';
        return new TransportError('ECONNREFUSED', `connect ${this.path}: ${r}`, this.path);
      }
      this.emit(configEvent('INFO', 'reconnecting...', { kind: 'reconnecting' }));
      this.scheduleRetry();
      return undefined;
    }
    if (retry) this.emit(configEvent('INFO', 'connected', { kind: 'connected' }));
    this.st = 'connected';
    this.addConnection(r);
    return undefined;
  }

  private scheduleRetry(): void {
    this.st = 'retrying';
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.st === 'retrying') this.connect(true);
    }, this.profile.options.reconnectPeriod * 1000);
  }

  private stopRetrying(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private stopped(): void {
    this.st = 'stopped';
    this.dataPath?.detach();
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error('the back-end was stopped'));
    }
  }

  /** `vhost_user_add_connection`: a new device (handle 0: the previous one is gone). */
  private addConnection(sock: RealSocketFd): void {
    const n = this.sessions.length + 1;
    let conn: Connection | undefined;
    const device = new VhostUserDevice(
      this.profile,
      {
        path: this.path,
        memfd: (name, size) => this.adapters.createMemFd(name, size, this.registry),
        dataPathEvent: (e) => this.emit(e, conn?.session),
      },
      0,
    );
    const session: RealSession = { n, device, connectedAt: epochSeconds(), messages: [], events: [], readyAt: [], endedAt: undefined, end: undefined };
    this.sessions.push(session);
    conn = {
      sock,
      device,
      reader: new DpdkMessageReader(this.profile.maxPayload, this.profile.options.patch),
      session,
      trace: this.cfg.recorder?.openSession(),
      open: true,
    };
    this.conn = conn;
    this.emit(configEvent('INFO', `new device, handle is ${device.vid}`, { kind: 'new-device', vid: device.vid }), session);
    const c = conn;
    sock.onData((chunk, fds) => this.receive(c, chunk, fds));
    sock.onClose(() => this.peerClosed(c));
  }

  private receive(conn: Connection, chunk: Uint8Array, realFds: RealFd[]): void {
    const fds = realFds.map((f) => this.adapters.adopt(f));
    if (!conn.open) {
      for (const fd of fds) fd.close();
      return;
    }
    conn.reader.push(chunk, fds);
    for (;;) {
      if (!conn.open) return;
      const r = conn.reader.next();
      if (r === undefined) return;
      if (r.kind === 'fatal') {
        for (const e of r.events) this.emit(e, conn.session);
        this.drop(conn, 'error');
        return;
      }
      const m = r.message;
      this.cfg.recorder?.message('f2b', rawMessage(m), m.fds.length);
      const res = conn.device.handle(m);
      for (const e of res.events) this.emit(e, conn.session);
      for (const reply of res.replies) this.send(conn, reply);
      // res.backendRequests stays empty: they need a SET_SLAVE_REQ_FD socket, and received
      // sockets are adopted as plain files here (see fd-adapter.ts), so the device has none.
      for (const l of res.lifecycle) this.lifecycle(conn, l);
      // Mappings the device let go of while handling (a replaced memory table) go now.
      this.adapters.sweep(buffersInUse(conn.device));
      if (res.close) {
        this.drop(conn, 'error');
        return;
      }
    }
  }

  private send(conn: Connection, msg: Message<AnyFd>): void {
    const enc = encodeBackendMessage(msg, 'frontend', this.profile.maxFds);
    const fds: RealFd[] = [];
    for (const fd of enc.fds) {
      const real = realFdOf(fd);
      if (real === undefined) throw new Error(`reply carries fd ${fd.fd}, which is not a real fd`);
      fds.push(real);
    }
    this.cfg.recorder?.message('b2f', enc.bytes, fds.length);
    const err = conn.sock.send(enc.bytes, fds);
    if (err !== undefined) this.emit(errorEvent('send-failed', `sendmsg error on fd ${conn.sock.fd} (${err.code})`), conn.session);
  }

  private lifecycle(conn: Connection, l: Lifecycle): void {
    if (l === 'new-device') {
      conn.session.readyAt.push(epochSeconds());
      this.dataPath?.attach(conn.device);
      const ready = this.waiters.filter((w) => conn.session.n >= w.min);
      this.waiters = this.waiters.filter((w) => conn.session.n < w.min);
      for (const w of ready) {
        clearTimeout(w.timer);
        w.resolve(conn.session);
      }
    }
    this.cfg.onLifecycle?.(l, conn.session);
  }

  private peerClosed(conn: Connection): void {
    if (!conn.open) return;
    for (const e of conn.reader.close()) this.emit(e, conn.session);
    this.drop(conn, 'peer-closed');
  }

  /** The connection failed or the peer left: destroy, then (reconnect on) start over with a new socket. */
  private drop(conn: Connection, end: 'peer-closed' | 'error'): void {
    this.closeConnection(conn, end, true);
    if (this.st === 'stopped') return;
    if (!this.profile.options.reconnect) {
      this.stopped();
      return;
    }
    this.createSocket();
    this.connect(false);
  }

  private closeConnection(conn: Connection, end: NonNullable<RealSession['end']>, log: boolean): void {
    if (!conn.open) return;
    conn.open = false;
    this.dataPath?.detach(conn.device);
    conn.reader.discard();
    conn.sock.close();
    const events = conn.device.destroy();
    const lifecycle = [...conn.device.lastLifecycle];
    // Every region fd is closed now: release every mapping.
    this.adapters.sweep(NOTHING_IN_USE);
    if (log) {
      for (const e of events) this.emit(e, conn.session);
      for (const l of lifecycle) this.lifecycle(conn, l);
    }
    conn.session.end = end;
    conn.session.endedAt = epochSeconds();
    if (conn.trace !== undefined) this.cfg.recorder?.closeSession(conn.trace);
  }
}

function rawMessage(m: IncomingMessage): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + m.payload.length);
  encodeHeader({ request: m.header.request, flags: m.header.flags, size: m.payload.length }, out);
  out.set(m.payload, HEADER_SIZE);
  return out;
}
