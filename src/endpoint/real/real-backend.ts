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
import { TransportError } from '../../transport/index.ts';
import { RealFdRegistry, connectUnix, type RealFd, type RealSocketFd } from '../../transport/real/index.ts';
import {
  VhostUserDevice,
  dpdk2211Profile,
  type DpdkBackendOptions,
  type DpdkBackendProfile,
  type Lifecycle,
  type VhostLogEvent,
} from '../backend/index.ts';
import { BackendConnection, ClientConnector } from '../backend/connection.ts';
import { configEvent } from '../backend/log.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { RealFdAdapters, epochSeconds, realFdOf } from './fd-adapter.ts';
import { NetDataPath, type DataPathOptions, type DataPathStats } from './data-path.ts';

export type RealBackendState =
  | 'idle' // not started
  | 'connecting' // only inside a connect call: a real connect answers at once
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
  readonly link: BackendConnection<RealFd>;
  readonly session: RealSession;
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
  private started = false;
  private stoppedAll = false;
  private readonly client: ClientConnector<RealSocketFd>;
  private conn: Connection | undefined;
  private nextSockLabel = 100;
  private waiters: ReadyWaiter[] = [];

  constructor(private readonly cfg: RealModelBackendConfig) {
    this.path = cfg.path;
    const p = cfg.profile;
    this.profile = p !== undefined && 'name' in p ? (p as DpdkBackendProfile) : dpdk2211Profile({ ...(p as Partial<DpdkBackendOptions> | undefined), client: true });
    this.registry = cfg.registry ?? new RealFdRegistry(`model back-end ${cfg.path}`);
    this.adapters = new RealFdAdapters(`model back-end ${cfg.path}`);
    this.dataPath = cfg.dataPath === false ? undefined : new NetDataPath({ queues: this.profile.options.queues, ...cfg.dataPath });
    this.client = new ClientConnector<RealSocketFd>({
      path: this.path,
      profile: this.profile,
      emit: (e) => this.emit(e),
      connect: (done) => {
        done(this.tryConnect());
        return undefined;
      },
      after: (seconds, fn) => {
        const t = setTimeout(fn, seconds * 1000);
        return { cancel: () => clearTimeout(t) };
      },
      connected: (sock) => this.addConnection(sock),
      nextSocketLabel: () => this.nextSockLabel++,
    });
  }

  get state(): RealBackendState {
    if (this.stoppedAll) return 'stopped';
    if (!this.started) return 'idle';
    return this.client.state as RealBackendState;
  }

  /** The live connection's device. */
  get device(): VhostUserDevice | undefined {
    return this.conn?.link.open ? this.conn.link.device : undefined;
  }

  get session(): RealSession | undefined {
    return this.conn?.link.open ? this.conn.session : undefined;
  }

  /** Data-path counters (all zero without a data path). */
  get stats(): DataPathStats | undefined {
    return this.dataPath?.stats;
  }

  /** `rte_vhost_driver_start` in client mode. A failed connect without reconnect is returned. */
  start(): TransportError | undefined {
    if (this.state !== 'idle') throw new Error(`RealModelBackend.start in state ${this.state}`);
    this.started = true;
    this.client.start();
    return this.client.state === 'failed' ? this.client.failure : undefined;
  }

  /** testpmd `quit`: close the connection ("free connfd"), destroy the device, stop retrying. */
  quit(): void {
    this.stop(true);
  }

  /** A crash: every fd closed, nothing logged. */
  kill(): void {
    this.stop(false);
  }

  /**
   * Resolves with the first session numbered `session` or later whose device reaches ready
   * (new_device()); by default the current connection's, or the next one's. Rejects after
   * `timeoutMs` or at quit.
   */
  waitForReady(opts: { session?: number; timeoutMs?: number } = {}): Promise<RealSession> {
    const min = opts.session ?? (this.conn?.link.open ? this.conn.session.n : this.sessions.length + 1);
    const done = this.sessions.find((s) => s.n >= min && s.readyAt.length > 0);
    if (done !== undefined) return Promise.resolve(done);
    if (this.state === 'stopped') return Promise.reject(new Error('the back-end was stopped'));
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise<RealSession>((resolve, reject) => {
      const w: ReadyWaiter = {
        min,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`${this.path}: no device ready within ${timeoutMs} ms (state ${this.state}, ${this.sessions.length} sessions)`));
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

  private stop(graceful: boolean): void {
    if (this.state === 'stopped') return;
    this.client.stop();
    const c = this.conn;
    if (c?.link.open) {
      if (graceful) this.emit(configEvent('INFO', `free connfd ${c.link.sock.fd}`, { kind: 'closed-locally', fd: c.link.sock.fd }), c.session);
      this.closeConnection(c, graceful ? 'closed-locally' : 'killed', graceful);
    }
    this.stopped();
  }

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

  private tryConnect(): RealSocketFd | Error {
    try {
      return connectUnix(this.path, { registry: this.registry });
    } catch (e) {
      // An errno the transport does not expect from connect (EACCES, say): DPDK just retries.
      return e instanceof Error ? e : new Error(String(e));
    }
  }

  private stopped(): void {
    this.stoppedAll = true;
    this.client.stop();
    this.dataPath?.detach();
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error('the back-end was stopped'));
    }
  }

  /** `vhost_user_add_connection`: a new device (handle 0: the previous one is gone). */
  private addConnection(sock: RealSocketFd): void {
    const n = this.sessions.length + 1;
    let session: RealSession | undefined;
    const device = new VhostUserDevice(
      this.profile,
      {
        path: this.path,
        memfd: (name, size) => this.adapters.createMemFd(name, size, this.registry),
        dataPathEvent: (e) => this.emit(e, session),
      },
      0,
    );
    session = { n, device, connectedAt: epochSeconds(), messages: [], events: [], readyAt: [], endedAt: undefined, end: undefined };
    this.sessions.push(session);
    const s = session;
    this.emit(configEvent('INFO', `new device, handle is ${device.vid}`, { kind: 'new-device', vid: device.vid }), s);
    let conn: Connection | undefined;
    const link = new BackendConnection<RealFd>(sock, device, {
      profile: this.profile,
      emit: (e) => this.emit(e, s),
      lifecycle: (l) => this.lifecycle(s, l),
      ended: (how) => this.ended(conn!, how),
      recorder: this.cfg.recorder,
      adopt: (f) => this.adapters.adopt(f),
      wire: (fd) => {
        const real = realFdOf(fd);
        if (real === undefined) throw new Error(`reply carries fd ${fd.fd}, which is not a real fd`);
        return real;
      },
      // Back-end channel requests need a SET_SLAVE_REQ_FD socket; received sockets are adopted
      // as plain files here (see fd-adapter.ts), so the device never has one.
      // Mappings the device let go of while handling (a replaced memory table) go now.
      afterMessage: (d) => this.adapters.sweep(buffersInUse(d)),
    });
    conn = { link, session: s };
    this.conn = conn;
  }

  private lifecycle(session: RealSession, l: Lifecycle): void {
    if (l === 'new-device') {
      session.readyAt.push(epochSeconds());
      this.dataPath?.attach(session.device);
      const ready = this.waiters.filter((w) => session.n >= w.min);
      this.waiters = this.waiters.filter((w) => session.n < w.min);
      for (const w of ready) {
        clearTimeout(w.timer);
        w.resolve(session);
      }
    }
    this.cfg.onLifecycle?.(l, session);
  }

  /** The connection failed or the peer left: the device is destroyed; start over (reconnect on). */
  private ended(conn: Connection, how: 'peer-closed' | 'error'): void {
    this.dataPath?.detach(conn.session.device);
    this.finish(conn, how);
    if (this.state === 'stopped') return;
    if (!this.profile.options.reconnect) {
      this.stopped();
      return;
    }
    this.client.restart();
  }

  private closeConnection(conn: Connection, end: NonNullable<RealSession['end']>, log: boolean): void {
    if (!conn.link.open) return;
    this.dataPath?.detach(conn.session.device);
    conn.link.close(log);
    this.finish(conn, end);
  }

  private finish(conn: Connection, end: NonNullable<RealSession['end']>): void {
    // Every region fd is closed now: release every mapping.
    this.adapters.sweep(NOTHING_IN_USE);
    conn.session.end = end;
    conn.session.endedAt = epochSeconds();
  }
}
