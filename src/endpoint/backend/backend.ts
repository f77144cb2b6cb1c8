/**
 * The DPDK 22.11 back-end on the in-process transport: lib/vhost/socket.c's connection
 * management around the sans-IO VhostUserDevice.
 *
 * - Server mode (default): create the socket, bind (fails if the path exists: "failed to
 *   bind: …; remove it and try again" — the library never unlinks it), listen; every accepted
 *   connection is a new device; the listener outlives disconnects.
 * - Client mode (`client=1`): connect once at start. On failure: WARNING "failed to connect:
 *   <strerror>", "reconnecting...", then the `vhost_reconn` thread retries every second,
 *   forever and silently, until "connected". With `reconnect: false` (NO_RECONNECT) a failed
 *   connect fails the start. After any disconnect the device is destroyed and, with
 *   reconnect, a new socket is created and the connect/retry cycle starts again.
 * - A handler failure without NEED_REPLY, an oversized message, or the peer closing ends the
 *   connection and destroys its device; nothing of it survives into the next connection.
 * - `quit()` is testpmd's graceful `quit` (rte_vhost_driver_unregister: "free connfd N", device
 *   destroyed, server socket closed and unlinked, reconnect cancelled); `kill()` is a crash:
 *   every fd is closed by the kernel, nothing is sent or logged, a server's socket file stays.
 *
 * Everything happens in the namespace's scheduler's virtual time.
 */
import type { Message } from '../../protocol/index.ts';
import {
  TransportError,
  type AnyFd,
  type Listener,
  type PendingConnect,
  type SocketFd,
  type SocketNamespace,
  type TransportScheduler,
} from '../../transport/index.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { dpdk2211Profile, type DpdkBackendOptions, type DpdkBackendProfile } from './profile.ts';
import { configEvent, errorEvent, type VhostLogEvent } from './log.ts';
import { DpdkMessageReader } from './reader.ts';
import { VhostUserDevice, encodeBackendMessage, type Lifecycle, type VringView } from './vhost-device.ts';

export type BackendState =
  | 'idle' // not started
  | 'listening' // server: bound and listening
  | 'connecting' // client: a connect is in flight
  | 'retrying' // client: waiting for the next reconnect attempt
  | 'connected' // client: a connection is up
  | 'failed' // start failed (bind refused, or a failed connect without reconnect)
  | 'stopped'; // quit or killed

export interface DpdkBackendConfig {
  readonly ns: SocketNamespace;
  /** The `iface=` socket path. */
  readonly path: string;
  /** A profile, or options for `dpdk2211Profile`. */
  readonly profile?: DpdkBackendProfile | Partial<DpdkBackendOptions>;
  /** Records f2b messages as they are read and b2f messages as they are sent. */
  readonly recorder?: TraceRecorder;
  /** Open/close trace sessions per connection (default: true when a recorder is given). */
  readonly recordSessions?: boolean;
  /** Every log event, as it happens. */
  readonly onEvent?: (e: VhostLogEvent) => void;
  /** new_device()/destroy_device() of the PMD, with the device concerned. */
  readonly onLifecycle?: (kind: Lifecycle, device: VhostUserDevice) => void;
}

const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  ECONNREFUSED: 'Connection refused',
  EADDRINUSE: 'Address already in use',
  EINVAL: 'Invalid argument',
  EPIPE: 'Broken pipe',
  EBADF: 'Bad file descriptor',
};

function strerror(e: TransportError): string {
  return STRERROR[e.code] ?? e.code;
}

interface Connection {
  readonly sock: SocketFd;
  readonly device: VhostUserDevice;
  readonly reader: DpdkMessageReader;
  readonly session: number | undefined;
  open: boolean;
}

export class DpdkBackend {
  readonly profile: DpdkBackendProfile;
  readonly path: string;
  /** Every event of this back-end, stamped with time and path. */
  readonly events: VhostLogEvent[] = [];
  private readonly ns: SocketNamespace;
  private readonly sched: TransportScheduler;
  private st: BackendState = 'idle';
  private listener: Listener | undefined;
  private pending: PendingConnect | undefined;
  private retryTimer: { cancel(): boolean } | undefined;
  private conns: Connection[] = [];
  /** Socket fd numbers for log lines (the model's, not the kernel's). */
  private nextSockLabel = 100;
  private sockLabel = -1;
  private connectionsMade = 0;

  constructor(private readonly cfg: DpdkBackendConfig) {
    this.ns = cfg.ns;
    this.sched = cfg.ns.scheduler;
    this.path = cfg.path;
    const p = cfg.profile;
    this.profile = p !== undefined && 'name' in p ? (p as DpdkBackendProfile) : dpdk2211Profile(p as Partial<DpdkBackendOptions> | undefined);
  }

  get state(): BackendState {
    return this.st;
  }

  /** The device of the most recent live connection. */
  get device(): VhostUserDevice | undefined {
    for (let i = this.conns.length - 1; i >= 0; i--) if (this.conns[i]!.open) return this.conns[i]!.device;
    return undefined;
  }

  /** Devices of all live connections (a server may have several). */
  get devices(): VhostUserDevice[] {
    return this.conns.filter((c) => c.open).map((c) => c.device);
  }

  /** Connections established so far. */
  get connections(): number {
    return this.connectionsMade;
  }

  /** A ready vring of the current device, for the data path (undefined when not running). */
  vring(i: number): VringView | undefined {
    return this.device?.vring(i);
  }

  /** Flushes vring `i` of the current device and writes its call eventfd if the ring says so. */
  notify(i: number): boolean {
    return this.vring(i)?.notify() ?? false;
  }

  /** `rte_vhost_driver_register` + `rte_vhost_driver_start`. */
  start(): TransportError | undefined {
    if (this.st !== 'idle') throw new Error(`DpdkBackend.start in state ${this.st}`);
    if (this.profile.options.client) {
      this.createSocket('client');
      this.connect(false);
      return undefined;
    }
    this.createSocket('server');
    const l = this.ns.listen(this.path, (sock) => this.accept(sock));
    if (l instanceof TransportError) {
      this.emit(errorEvent('bind-failed', `failed to bind: ${strerror(l)}; remove it and try again`));
      this.st = 'failed';
      return l;
    }
    this.listener = l;
    this.emit(configEvent('INFO', 'binding succeeded', { kind: 'bind-ok' }));
    this.st = 'listening';
    return undefined;
  }

  /** testpmd `quit`: unregister the driver: close every connection (device destroyed), stop reconnecting, remove a server's socket. */
  quit(): void {
    if (this.st === 'stopped') return;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.pending?.cancel();
    this.pending = undefined;
    for (const c of this.conns) {
      if (!c.open) continue;
      this.emit(configEvent('INFO', `free connfd ${c.sock.fd}`, { kind: 'closed-locally', fd: c.sock.fd }));
      this.closeConnection(c, { log: true });
    }
    if (this.listener !== undefined) {
      this.listener.close({ unlink: true });
      this.listener = undefined;
    }
    this.st = 'stopped';
  }

  /** A crash (SIGKILL): the kernel closes every fd; nothing is sent, nothing is logged, the socket file stays. */
  kill(): void {
    if (this.st === 'stopped') return;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.pending?.cancel();
    this.pending = undefined;
    for (const c of this.conns) if (c.open) this.closeConnection(c, { log: false });
    if (this.listener !== undefined) {
      this.listener.close({ unlink: false });
      this.listener = undefined;
    }
    this.st = 'stopped';
  }

  // ---- internals -------------------------------------------------------------------------

  private emit(e: VhostLogEvent): void {
    e.t = this.sched.now;
    e.path = this.path;
    this.events.push(e);
    this.cfg.onEvent?.(e);
  }

  private createSocket(role: 'client' | 'server'): void {
    this.sockLabel = this.nextSockLabel++;
    this.emit(configEvent('INFO', `vhost-user ${role}: socket created, fd: ${this.sockLabel}`, { kind: 'socket-created', role, fd: this.sockLabel }));
  }

  /** `vhost_user_start_client` (retry=false) or one pass of the reconnect thread (retry=true). */
  private connect(retry: boolean): void {
    this.st = 'connecting';
    this.pending = this.ns.connect(this.path, (r) => {
      this.pending = undefined;
      if (this.st === 'stopped') {
        if (!(r instanceof TransportError)) r.close();
        return;
      }
      if (r instanceof TransportError) {
        if (retry) {
          this.scheduleRetry();
          return;
        }
        this.emit(configEvent('WARNING', `failed to connect: ${strerror(r)}`, { kind: 'connect-failed', error: strerror(r) }));
        if (!this.profile.options.reconnect) {
          this.st = 'failed';
          return;
        }
        this.emit(configEvent('INFO', 'reconnecting...', { kind: 'reconnecting' }));
        this.scheduleRetry();
        return;
      }
      if (retry) this.emit(configEvent('INFO', 'connected', { kind: 'connected' }));
      this.st = 'connected';
      this.addConnection(r);
    });
  }

  private scheduleRetry(): void {
    this.st = 'retrying';
    this.retryTimer = this.sched.after(
      this.profile.options.reconnectPeriod,
      () => {
        this.retryTimer = undefined;
        if (this.st === 'retrying') this.connect(true);
      },
      `vhost_reconn ${this.path}`,
    );
  }

  private accept(sock: SocketFd): void {
    if (this.st === 'stopped') {
      sock.close();
      return;
    }
    this.emit(configEvent('INFO', `new vhost user connection is ${sock.fd}`, { kind: 'new-connection', fd: sock.fd }));
    this.addConnection(sock);
  }

  /** `vhost_user_add_connection`: a new device with the lowest free handle. */
  private addConnection(sock: SocketFd): void {
    const used = new Set(this.devices.map((d) => d.vid));
    let vid = 0;
    while (used.has(vid)) vid++;
    const device = new VhostUserDevice(
      this.profile,
      {
        path: this.path,
        memfd: (name, size) => this.ns.memfd(name, size),
        dataPathEvent: (e) => this.emit(e),
      },
      vid,
    );
    this.emit(configEvent('INFO', `new device, handle is ${vid}`, { kind: 'new-device', vid }));
    const recordSessions = this.cfg.recordSessions ?? this.cfg.recorder !== undefined;
    const session = recordSessions ? this.cfg.recorder?.openSession() : undefined;
    const conn: Connection = { sock, device, reader: new DpdkMessageReader(this.profile.maxPayload, this.profile.options.patch), session, open: true };
    this.conns = this.conns.filter((c) => c.open);
    this.conns.push(conn);
    this.connectionsMade++;
    sock.onData((chunk, fds) => this.receive(conn, chunk, fds));
    sock.onClose(() => this.peerClosed(conn));
  }

  private receive(conn: Connection, chunk: Uint8Array, fds: AnyFd[]): void {
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
        for (const e of r.events) this.emit(e);
        this.dropConnection(conn);
        return;
      }
      const m = r.message;
      this.cfg.recorder?.message('f2b', rawBytes(m.header, m.payload), m.fds.length);
      const res = conn.device.handle(m);
      for (const e of res.events) this.emit(e);
      for (const reply of res.replies) this.send(conn.sock, reply, 'frontend');
      for (const req of res.backendRequests) {
        const ch = conn.device.slaveReqFd;
        if (ch !== undefined && ch.kind === 'socket' && !ch.closed) this.send(ch, req, 'backend', false);
      }
      for (const l of res.lifecycle) this.cfg.onLifecycle?.(l, conn.device);
      if (res.close) {
        this.dropConnection(conn);
        return;
      }
    }
  }

  private send(sock: SocketFd, msg: Message<AnyFd>, space: 'frontend' | 'backend', record = true): void {
    const enc = encodeBackendMessage(msg, space, this.profile.maxFds);
    if (record) this.cfg.recorder?.message('b2f', enc.bytes, enc.fds.length);
    const err = sock.send(enc.bytes, enc.fds);
    if (err !== undefined) this.emit(errorEvent('send-failed', `sendmsg error on fd ${sock.fd} (${strerror(err)})`));
  }

  private peerClosed(conn: Connection): void {
    if (!conn.open) return;
    for (const e of conn.reader.close()) this.emit(e);
    this.dropConnection(conn);
  }

  /** `vhost_user_read_cb` after the handler returned -1: close, destroy, and (client) start over. */
  private dropConnection(conn: Connection): void {
    this.closeConnection(conn, { log: true });
    if (this.profile.options.client && this.st !== 'stopped') {
      if (this.profile.options.reconnect) {
        this.createSocket('client');
        this.connect(false);
      } else {
        this.st = 'stopped';
      }
    }
  }

  private closeConnection(conn: Connection, opts: { log: boolean }): void {
    if (!conn.open) return;
    conn.open = false;
    conn.reader.discard();
    conn.sock.close();
    const events = conn.device.destroy();
    const lifecycle = [...conn.device.lastLifecycle];
    if (opts.log) for (const e of events) this.emit(e);
    if (opts.log) for (const l of lifecycle) this.cfg.onLifecycle?.(l, conn.device);
    if (conn.session !== undefined) this.cfg.recorder?.closeSession(conn.session);
  }
}

function rawBytes(h: { request: number; flags: number; size: number }, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, h.request >>> 0, true);
  dv.setUint32(4, h.flags >>> 0, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, 12);
  return out;
}
