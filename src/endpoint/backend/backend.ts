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
import {
  TransportError,
  type AnyFd,
  type Listener,
  type SocketFd,
  type SocketNamespace,
  type TransportScheduler,
} from '../../transport/index.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { BackendConnection, ClientConnector, strerror } from './connection.ts';
import { dpdk2211Profile, type DpdkBackendOptions, type DpdkBackendProfile } from './profile.ts';
import { configEvent, errorEvent, type VhostLogEvent } from './log.ts';
import { VhostUserDevice, type Lifecycle, type VringView } from './vhost-device.ts';

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

export class DpdkBackend {
  readonly profile: DpdkBackendProfile;
  readonly path: string;
  /** Every event of this back-end, stamped with time and path. */
  readonly events: VhostLogEvent[] = [];
  private readonly ns: SocketNamespace;
  private readonly sched: TransportScheduler;
  private st: 'idle' | 'listening' | 'failed' | 'client' | 'stopped' = 'idle';
  private listener: Listener | undefined;
  private client: ClientConnector<SocketFd> | undefined;
  private conns: BackendConnection<AnyFd>[] = [];
  /** Socket fd numbers for log lines (the model's, not the kernel's). */
  private nextSockLabel = 100;
  private connectionsMade = 0;

  constructor(private readonly cfg: DpdkBackendConfig) {
    this.ns = cfg.ns;
    this.sched = cfg.ns.scheduler;
    this.path = cfg.path;
    const p = cfg.profile;
    this.profile = p !== undefined && 'name' in p ? (p as DpdkBackendProfile) : dpdk2211Profile(p as Partial<DpdkBackendOptions> | undefined);
  }

  get state(): BackendState {
    return this.st === 'client' ? this.client!.state : this.st;
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
      this.st = 'client';
      this.client = new ClientConnector<SocketFd>({
        path: this.path,
        profile: this.profile,
        emit: (e) => this.emit(e),
        connect: (done) => this.ns.connect(this.path, done),
        after: (seconds, fn) => this.sched.after(seconds, fn, `vhost_reconn ${this.path}`),
        connected: (sock) => this.addConnection(sock),
        nextSocketLabel: () => this.nextSockLabel++,
      });
      this.client.start();
      return undefined;
    }
    const fd = this.nextSockLabel++;
    this.emit(configEvent('INFO', `vhost-user server: socket created, fd: ${fd}`, { kind: 'socket-created', role: 'server', fd }));
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
    this.stop(true);
  }

  /** A crash (SIGKILL): the kernel closes every fd; nothing is sent, nothing is logged, the socket file stays. */
  kill(): void {
    this.stop(false);
  }

  // ---- internals -------------------------------------------------------------------------

  private stop(graceful: boolean): void {
    if (this.state === 'stopped') return;
    this.client?.stop();
    for (const c of this.conns) {
      if (!c.open) continue;
      if (graceful) this.emit(configEvent('INFO', `free connfd ${c.sock.fd}`, { kind: 'closed-locally', fd: c.sock.fd }));
      c.close(graceful);
    }
    if (this.listener !== undefined) {
      this.listener.close({ unlink: graceful });
      this.listener = undefined;
    }
    this.st = 'stopped';
  }

  private emit(e: VhostLogEvent): void {
    e.t = this.sched.now;
    e.path = this.path;
    this.events.push(e);
    this.cfg.onEvent?.(e);
  }

  private accept(sock: SocketFd): void {
    if (this.state === 'stopped') {
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
    this.conns = this.conns.filter((c) => c.open);
    const conn: BackendConnection<AnyFd> = new BackendConnection<AnyFd>(sock, device, {
      profile: this.profile,
      emit: (e) => this.emit(e),
      lifecycle: (l: Lifecycle) => this.cfg.onLifecycle?.(l, device),
      // `vhost_user_read_cb` after a failure or the peer's close: a client starts over.
      ended: () => this.client?.restart(),
      recorder: this.cfg.recorder,
      recordSession: this.cfg.recordSessions ?? this.cfg.recorder !== undefined,
      adopt: (fd) => fd,
      wire: (fd) => fd,
      backendRequest: (dev, req) => {
        const ch = dev.slaveReqFd;
        if (ch !== undefined && ch.kind === 'socket' && !ch.closed) conn.send(req, { space: 'backend', sock: ch, record: false });
      },
    });
    this.conns.push(conn);
    this.connectionsMade++;
  }
}
