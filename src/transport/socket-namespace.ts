import { FdRegistry, type FdHandle, type TransportRng, type TransportScheduler } from './fd.ts';
import { TransportError } from './errors.ts';
import { MemFd } from './memfd.ts';
import { EventFd } from './eventfd.ts';
import { createConnection, type SocketFd } from './socket.ts';
import { drawDelay, resolveFaults, validateFaults, type ChannelFaults, type DelaySpec, type FaultPolicy } from './faults.ts';

/**
 * The Unix-socket path namespace of one simulated host.
 *
 * A path is a socket file. `listen` creates it (EADDRINUSE if anything is there, as
 * bind() does; DPDK's server mode fails the same way on a stale file, QEMU unlinks
 * first). A listener closed without unlinking leaves a stale file: connecting then
 * gives ECONNREFUSED; with no file, ENOENT — the two errors DPDK's client logs while
 * it retries. `unlink` removes whatever is at the path now, as unlink(2) does, even if
 * that is a newer listener's file.
 *
 * `connect` never answers synchronously: its callback and the server's `onConnection`
 * are separate scheduler events (after `connectDelay` and `acceptDelay`), in an order
 * the seed decides when the delays are equal. The outcome is fixed when connect is
 * called. A client builds its retry policy on top, for example DPDK's
 * "retry every second":
 *
 *     const attempt = () => ns.connect(path, (r) => {
 *       if (r instanceof TransportError) sched.after(1, attempt, 'vhost_reconn');
 *       else startSession(r);
 *     });
 */

/** Longest path bind()/connect() accept (sun_path holds 108 bytes with the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface SocketNamespaceOptions {
  scheduler: TransportScheduler;
  /** Host name, used in labels and rng stream names (default 'host'). */
  name?: string;
  /** The fd registry of this host (default: a new one). */
  registry?: FdRegistry;
  /** Delay, chunking and cuts for each new connection (and socketpair). */
  faults?: FaultPolicy;
  /** From connect() to the client's callback (default 0). */
  connectDelay?: DelaySpec;
  /** From connect() to the listener's onConnection (default 0). */
  acceptDelay?: DelaySpec;
}

export interface ConnectOptions {
  /** Faults for this connection, instead of the namespace policy. */
  faults?: ChannelFaults;
}

export type ConnectCallback = (result: SocketFd | TransportError) => void;

export interface PendingConnect {
  readonly path: string;
  /** True once the callback ran or the attempt was cancelled. */
  readonly settled: boolean;
  /**
   * Drops the attempt before its callback runs (a client giving up). If it was going
   * to succeed, the client end is closed, so the server sees a connection that closes.
   * Returns false when already settled.
   */
  cancel(): boolean;
}

interface SocketFile {
  listener: Listener | undefined;
}

export class Listener {
  private isClosed = false;
  private acceptedCount = 0;
  private readonly queue: { fd: SocketFd; event: { cancel(): boolean } }[] = [];

  constructor(
    private readonly ns: SocketNamespace,
    private readonly file: SocketFile,
    readonly path: string,
    private readonly onConnection: (channel: SocketFd) => void,
  ) {}

  get closed(): boolean {
    return this.isClosed;
  }

  /** Connections made but not yet accepted. */
  get backlog(): number {
    return this.queue.length;
  }

  get accepted(): number {
    return this.acceptedCount;
  }

  /**
   * Stops listening. Connections not yet accepted are dropped (their clients see a
   * reset). With `unlink`, the path is removed too (a graceful shutdown); without, the
   * file stays and connects are refused (a killed process).
   */
  close(opts: { unlink?: boolean } = {}): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.file.listener === this) this.file.listener = undefined;
    for (const { fd, event } of this.queue.splice(0)) {
      event.cancel();
      fd.object.resetOnRelease = true;
      fd.close();
    }
    if (opts.unlink) this.ns.unlink(this.path);
  }

  /** @internal */
  enqueue(fd: SocketFd, delay: number): void {
    const entry = {
      fd,
      event: this.ns.scheduler.after(
        delay,
        () => {
          const i = this.queue.indexOf(entry);
          if (i < 0) return;
          this.queue.splice(i, 1);
          this.acceptedCount++;
          fd.origin = `accepted on ${this.path}`;
          this.onConnection(fd);
        },
        `${this.ns.name}:${this.path} accept`,
      ),
    };
    this.queue.push(entry);
  }
}

export class SocketNamespace {
  readonly scheduler: TransportScheduler;
  readonly registry: FdRegistry;
  readonly name: string;
  private readonly files = new Map<string, SocketFile>();
  private readonly perPath = new Map<string, number>();
  private readonly faults: FaultPolicy | undefined;
  private readonly connectDelay: DelaySpec | undefined;
  private readonly acceptDelay: DelaySpec | undefined;
  private readonly rng: TransportRng;
  private readonly delayRng: TransportRng;
  private connCount = 0;

  constructor(opts: SocketNamespaceOptions) {
    this.scheduler = opts.scheduler;
    this.name = opts.name ?? 'host';
    this.registry = opts.registry ?? new FdRegistry(opts.scheduler, this.name);
    if (this.registry.scheduler !== this.scheduler) throw new Error('the fd registry must use the namespace scheduler');
    this.faults = opts.faults;
    if (this.faults !== undefined && typeof this.faults !== 'function') validateFaults(this.faults);
    this.connectDelay = opts.connectDelay;
    this.acceptDelay = opts.acceptDelay;
    this.rng = this.scheduler.rng.fork(`ns:${this.name}`);
    this.delayRng = this.rng.fork('connect-delays');
  }

  /** Binds and listens on `path`; `onConnection` runs (as an event) for each accepted connection. */
  listen(path: string, onConnection: (channel: SocketFd) => void): Listener | TransportError {
    const bad = checkPath(path);
    if (bad) return bad;
    if (this.files.has(path)) return new TransportError('EADDRINUSE', `${path} already exists`, path);
    const file: SocketFile = { listener: undefined };
    const l = new Listener(this, file, path, onConnection);
    file.listener = l;
    this.files.set(path, file);
    return l;
  }

  connect(path: string, cb: ConnectCallback, opts: ConnectOptions = {}): PendingConnect {
    let result: SocketFd | TransportError;
    const bad = checkPath(path);
    const file = this.files.get(path);
    if (bad) result = bad;
    else if (file === undefined) result = new TransportError('ENOENT', `connect ${path}: no such file`, path);
    else if (file.listener === undefined) result = new TransportError('ECONNREFUSED', `connect ${path}: nobody listening`, path);
    else {
      const id = ++this.connCount;
      const pathIndex = (this.perPath.get(path) ?? 0) + 1;
      this.perPath.set(path, pathIndex);
      const info = { id, kind: 'connect' as const, path, pathIndex };
      const faults = opts.faults ?? resolveFaults(this.faults, info);
      const [client, server] = createConnection(this.registry, info, `${this.name}:${path}#${id}`, faults, this.rng.fork(`conn#${id}`), [
        `connected to ${path}`,
        `accept queue of ${path}`,
      ]);
      file.listener.enqueue(server, drawDelay(this.acceptDelay, this.delayRng));
      result = client;
    }
    let settled = false;
    const event = this.scheduler.after(
      drawDelay(this.connectDelay, this.delayRng),
      () => {
        settled = true;
        cb(result);
      },
      `${this.name}:${path} connect`,
    );
    return {
      path,
      get settled() {
        return settled;
      },
      cancel: () => {
        if (settled) return false;
        settled = true;
        event.cancel();
        if (!(result instanceof TransportError)) result.close();
        return true;
      },
    };
  }

  /** Removes the socket file at `path` (a listener on it keeps its queue but cannot be reached). */
  unlink(path: string): TransportError | undefined {
    if (!this.files.delete(path)) return new TransportError('ENOENT', `unlink ${path}: no such file`, path);
    return undefined;
  }

  exists(path: string): boolean {
    return this.files.has(path);
  }

  /** Socket files present, sorted. */
  paths(): string[] {
    return [...this.files.keys()].sort();
  }

  /** A connected pair, as socketpair(AF_UNIX, SOCK_STREAM); [0] plays 'client' for fault rules. */
  socketpair(opts: ConnectOptions = {}): [SocketFd, SocketFd] {
    const id = ++this.connCount;
    const info = { id, kind: 'socketpair' as const, pathIndex: 1 };
    const faults = opts.faults ?? resolveFaults(this.faults, info);
    return createConnection(this.registry, info, `${this.name}:socketpair#${id}`, faults, this.rng.fork(`conn#${id}`), ['socketpair', 'socketpair']);
  }

  memfd(name: string, sizeOrBuffer: number | SharedArrayBuffer): MemFd {
    return MemFd.create(this.registry, name, sizeOrBuffer);
  }

  eventfd(name?: string, initial?: bigint): EventFd {
    return EventFd.create(this.registry, name, initial);
  }

  /** Open fd handles of this host (see FdRegistry). */
  openHandles(): FdHandle[] {
    return this.registry.openHandles();
  }
}

function checkPath(path: string): TransportError | undefined {
  if (typeof path !== 'string' || path.length === 0) return new TransportError('EINVAL', 'empty socket path');
  if (Buffer.byteLength(path, 'utf8') > MAX_SOCKET_PATH_BYTES) {
    return new TransportError('EINVAL', `socket path of ${Buffer.byteLength(path, 'utf8')} bytes (max ${MAX_SOCKET_PATH_BYTES})`, path);
  }
  return undefined;
}
