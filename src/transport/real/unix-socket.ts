import type { Channel, CloseCallback, CloseInfo, DataCallback } from '../channel.ts';
import { TransportError, type TransportErrorCode } from '../errors.ts';
import {
  IO_CHUNK,
  MAX_UNIX_PATH_BYTES,
  OsError,
  SCM_MAX_FD,
  acceptConn,
  bindListen,
  connectPath,
  errno,
  errnoName,
  fdType,
  peekByte,
  recvChunk,
  sendChunk,
  shutdownRead,
  socketCreate,
  socketpairCreate,
  sysClose,
  unlinkPath,
  watchFd,
  type FdWatch,
  type Readiness,
} from './libc.ts';
import { RealEventFd, RealFdBase, RealMemFd, callSafely, defaultRealRegistry, type RealFdRegistry } from './real-fd.ts';

/**
 * The real transport: AF_UNIX SOCK_STREAM sockets with fds passed as SCM_RIGHTS,
 * implementing the same `Channel` contract as the in-process model.
 *
 * ## Readiness
 * Sockets are non-blocking and watched with a level-triggered libuv poll handle on
 * Node's own event loop (libc.ts `watchFd`): no thread, no timer, no CPU while idle, and
 * data is read in the loop iteration after it arrives. Reading is armed only while
 * somebody listens (`onData`, or `onClose` alone); writing is watched only while sends
 * are queued.
 *
 * ## Sending
 * `send` is one sendmsg with the fds attached, so they ride on the message's first byte.
 * If the socket buffer is full (the peer is not reading), what did not fit is queued in
 * order and sent when the socket turns writable; fds of a queued message are dup'd so the
 * caller may close its handles at once, as after a real sendmsg. `close()` with sends
 * still queued keeps the OS fd until they are out (or the peer is gone), so the peer gets
 * every byte before the end of stream, as the Channel contract says; meanwhile the socket
 * is shut for reading (the peer's sends fail with EPIPE, as after a close) and the handle
 * stays in the registry, marked closing.
 *
 * ## Receiving and framing
 * The kernel delivers a sendmsg's fds with the recvmsg that reads its first byte, and
 * stops a read after a message that carried fds, but it does join bytes of earlier
 * messages in front of it. A reader that takes "everything available" can therefore see
 * message B's fds on a chunk that starts inside message A. DPDK avoids that by reading
 * the 12-byte header with one recvmsg and then exactly `size` payload bytes
 * (`read_fd_message`); the default `vhost-user` framing reads the same way, so every
 * chunk that carries fds begins at the header of the message they came with, as the
 * decoder expects. `stream` framing reads whatever is there (fewer syscalls; for
 * fd-less traffic or a peer that never sends messages back to back).
 *
 * Each recvmsg has room for `maxRecvFds` fds (default 8, DPDK's VHOST_MEMORY_MAX_NREGIONS);
 * the kernel closes any beyond that (counted in `stats.ctrunc`). Received fds become
 * handles owned by the receiver: an eventfd becomes a RealEventFd, a socket a
 * RealSocketFd, anything else (memfd, hugetlbfs file) a RealMemFd.
 *
 * ## Closing
 * End of stream (the peer closed) is reported through `onClose({reason: 'eof'})` after
 * every byte before it was delivered; ECONNRESET (the peer closed with our data unread)
 * as 'reset'. A local `close()` reports nothing locally.
 *
 * ## Handles and the event loop
 * A socket has one reader: `dup()` gives another OS fd for the same socket (to pass it
 * on, or keep the connection open), and two handles that both read would split the
 * stream between them. Like a `net.Socket`, a socket being read and a listener keep
 * Node's event loop alive until closed.
 */

/** How to find message boundaries in the byte stream (for reads only; see above). */
export interface Framing {
  /** Fixed header length. */
  readonly headerBytes: number;
  /** Payload length announced by a complete header. */
  payloadBytes(header: Uint8Array): number;
}

/** vhost-user: 12-byte header, u32 little-endian payload size at offset 8. */
export const VHOST_USER_FRAMING: Framing = {
  headerBytes: 12,
  payloadBytes: (h) => (h[8] | (h[9] << 8) | (h[10] << 16) | (h[11] << 24)) >>> 0,
};

export interface RealChannelOptions {
  registry?: RealFdRegistry;
  /** Read boundaries: 'vhost-user' (default), 'stream', or a custom framing. */
  framing?: 'vhost-user' | 'stream' | Framing;
  /** fds one recvmsg can take (default 8, DPDK's control buffer). */
  maxRecvFds?: number;
}

/** Counters of one end. */
export interface RealChannelStats {
  messagesSent: number;
  bytesSent: number;
  fdsSent: number;
  chunksReceived: number;
  bytesReceived: number;
  fdsReceived: number;
  /** recvmsgs whose control buffer was too small (the kernel closed the extra fds). */
  ctrunc: number;
  /** Sends that did not fit the socket buffer and were queued. */
  queued: number;
}

/** Every fd handle of the real transport; narrow on `kind`. */
export type RealFd = RealMemFd | RealEventFd | RealSocketFd;

/** Reads per readiness callback before yielding to the event loop (level-triggered: the rest comes next turn). */
const READ_BUDGET = 64;
const DEFAULT_MAX_RECV_FDS = 8;

interface Outgoing {
  bytes: Uint8Array;
  off: number;
  /** dup'd handles still to be attached (to the first byte); empty once sent. */
  fds: RealFd[];
}

/** A connected AF_UNIX stream socket: an fd handle and a `Channel`. */
export class RealSocketFd extends RealFdBase implements Channel<RealFd> {
  readonly kind = 'socket' as const;
  private readonly framing: Framing | undefined;
  private readonly maxRecvFds: number;
  private watch: FdWatch | undefined;
  private dataCb: DataCallback<RealFd> | undefined;
  private closeCbs: CloseCallback[] = [];
  private closeInfo: CloseInfo | undefined;
  /** Data is waiting but nobody reads: stop watching until a reader comes. */
  private parked = false;
  private readonly out: Outgoing[] = [];
  private writeError: TransportError | undefined;
  // framing state: header bytes gathered so far, then payload bytes still to come
  private readonly header: Uint8Array;
  private headerHave = 0;
  private payloadLeft = 0;
  readonly stats: RealChannelStats = {
    messagesSent: 0,
    bytesSent: 0,
    fdsSent: 0,
    chunksReceived: 0,
    bytesReceived: 0,
    fdsReceived: 0,
    ctrunc: 0,
    queued: 0,
  };

  /** @internal Use connectUnix, RealUnixListener, realSocketpair, or receive one. */
  constructor(
    fd: number,
    registry: RealFdRegistry,
    origin: string,
    readonly id: string,
    readonly peer: string,
    private readonly opts: RealChannelOptions = {},
  ) {
    super(fd, registry, origin);
    const f = opts.framing ?? 'vhost-user';
    this.framing = f === 'stream' ? undefined : f === 'vhost-user' ? VHOST_USER_FRAMING : f;
    this.header = new Uint8Array(this.framing?.headerBytes ?? 0);
    this.maxRecvFds = opts.maxRecvFds ?? DEFAULT_MAX_RECV_FDS;
    if (!Number.isInteger(this.maxRecvFds) || this.maxRecvFds < 0 || this.maxRecvFds > SCM_MAX_FD) {
      throw new TransportError('EINVAL', `maxRecvFds ${this.maxRecvFds}`);
    }
  }

  get peerClosed(): boolean {
    return this.closeInfo !== undefined;
  }

  /** Bytes accepted by `send` but not yet handed to the kernel. */
  get queuedBytes(): number {
    return this.out.reduce((n, o) => n + o.bytes.length - o.off, 0);
  }

  send(bytes: Uint8Array, fds: readonly RealFd[] = []): TransportError | undefined {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('send: bytes must be a Uint8Array');
    if (this.closed) return new TransportError('EBADF', `send on closed fd ${this.fd} (${this.id})`);
    if (fds.length > SCM_MAX_FD) return new TransportError('EINVAL', `${fds.length} fds in one message (max ${SCM_MAX_FD})`);
    for (const fd of fds) {
      if (!(fd instanceof RealFdBase)) return new TransportError('EINVAL', 'attached fd is not an OS fd handle');
      if (fd.closed) return new TransportError('EBADF', `attached fd ${fd.fd} is closed`);
    }
    if (bytes.length === 0) {
      // A zero-length stream send carries nothing, not even its control message.
      return fds.length > 0 ? new TransportError('EINVAL', 'fds attached to an empty message') : undefined;
    }
    if (this.writeError) return this.writeError;
    this.stats.messagesSent++;
    this.stats.bytesSent += bytes.length;
    this.stats.fdsSent += fds.length;
    if (this.out.length > 0) {
      this.enqueue(bytes.slice(), 0, fds);
      return undefined;
    }
    let off = 0;
    let attach = fds.map((f) => f.fd);
    while (off < bytes.length) {
      const r = sendChunk(this.fd, bytes.subarray(off), attach);
      if (r === -errno('EAGAIN')) {
        // The kernel copies at send time; so do we, for the part it did not take.
        this.enqueue(bytes.slice(off), 0, attach.length > 0 ? fds : []);
        return undefined;
      }
      if (r < 0) return this.failWrite(r);
      off += r;
      attach = [];
    }
    return undefined;
  }

  onData(cb: DataCallback<RealFd>): void {
    this.assertOpen('onData');
    this.dataCb = cb;
    this.parked = false;
    this.rearm();
  }

  onClose(cb: CloseCallback): void {
    this.assertOpen('onClose');
    this.closeCbs.push(cb);
    const info = this.closeInfo;
    if (info !== undefined) {
      // Already closed by the peer: tell the late listener from the event loop, as the model does.
      setImmediate(() => {
        if (!this.closed && this.closeCbs.includes(cb)) callSafely(() => cb(info));
      });
    }
    this.rearm();
  }

  protected override wrap(fd: number, origin: string): this {
    return new RealSocketFd(fd, this.registry, origin, `${this.id} (dup fd ${fd})`, this.peer, this.opts) as this;
  }

  protected override closing(): void | 'defer' {
    this.dataCb = undefined;
    this.closeCbs = [];
    if (this.out.length > 0 && this.writeError === undefined && this.watch !== undefined) {
      // Bytes `send` accepted are still queued: deliver them before closing, as the kernel
      // would have had they fit its buffer. Stop taking the peer's data meanwhile.
      shutdownRead(this.fd);
      this.watch.set({ writable: true });
      return 'defer';
    }
    this.finish();
  }

  /** Stops watching, drops the queue, closes the OS fd. */
  private finish(): void {
    this.watch?.close();
    this.watch = undefined;
    for (const o of this.out.splice(0)) for (const f of o.fds) f.close();
    this.closeOsFd();
  }

  // ---- writing ----

  private enqueue(bytes: Uint8Array, off: number, fds: readonly RealFd[]): void {
    this.stats.queued++;
    this.out.push({ bytes, off, fds: fds.map((f) => f.dup(`in flight on ${this.id}`) as RealFd) });
    this.rearm();
  }

  private failWrite(r: number): TransportError {
    const name = errnoName(-r);
    if (name !== 'EPIPE' && name !== 'ECONNRESET') throw new OsError('sendmsg', -r, name, this.id);
    this.writeError = new TransportError('EPIPE', `send on ${this.id}: connection is shut down (${name})`);
    return this.writeError;
  }

  private flush(): void {
    while (this.out.length > 0 && this.osFdOpen) {
      const o = this.out[0];
      const r = sendChunk(
        this.fd,
        o.bytes.subarray(o.off),
        o.fds.map((f) => f.fd),
      );
      if (r === -errno('EAGAIN')) return;
      if (r < 0) {
        this.failWrite(r);
        for (const q of this.out.splice(0)) for (const f of q.fds) f.close();
        break;
      }
      for (const f of o.fds.splice(0)) f.close();
      o.off += r;
      if (o.off >= o.bytes.length) this.out.shift();
    }
    // A close deferred for the queue completes once it is sent (or cannot be).
    if (this.closed) {
      if (this.osFdOpen && (this.out.length === 0 || this.writeError !== undefined)) this.finish();
      return;
    }
    this.rearm();
  }

  // ---- reading ----

  /** Sets what the watch listens for, from the current state. */
  private rearm(): void {
    if (this.closed) return;
    const listening = this.dataCb !== undefined || this.closeCbs.length > 0;
    const readable = listening && this.closeInfo === undefined && !this.parked;
    const writable = this.out.length > 0 && this.writeError === undefined;
    if (!readable && !writable && this.watch === undefined) return;
    this.watch ??= watchFd(this.fd, (r) => this.ready(r));
    this.watch.set({ readable, writable });
  }

  private ready(r: Readiness): void {
    if (!this.osFdOpen) return;
    if (r.writable) this.flush();
    if (r.readable && !this.closed) this.readSome();
  }

  /** Bytes the next recvmsg may take without crossing a message boundary. */
  private wantBytes(): number {
    const f = this.framing;
    if (f === undefined) return IO_CHUNK;
    if (this.headerHave < f.headerBytes) return f.headerBytes - this.headerHave;
    return Math.min(this.payloadLeft, IO_CHUNK);
  }

  private advanceFraming(bytes: Uint8Array): void {
    const f = this.framing;
    if (f === undefined) return;
    let i = 0;
    while (i < bytes.length) {
      if (this.headerHave < f.headerBytes) {
        const n = Math.min(f.headerBytes - this.headerHave, bytes.length - i);
        this.header.set(bytes.subarray(i, i + n), this.headerHave);
        this.headerHave += n;
        i += n;
        if (this.headerHave === f.headerBytes) {
          this.payloadLeft = f.payloadBytes(this.header);
          if (this.payloadLeft === 0) this.headerHave = 0;
        }
      } else {
        const n = Math.min(this.payloadLeft, bytes.length - i);
        this.payloadLeft -= n;
        i += n;
        if (this.payloadLeft === 0) this.headerHave = 0;
      }
    }
  }

  private readSome(): void {
    const EAGAIN = -errno('EAGAIN');
    for (let i = 0; i < READ_BUDGET; i++) {
      if (this.closed || this.closeInfo !== undefined) return;
      const cb = this.dataCb;
      if (cb === undefined) {
        // Only close listeners: look without taking anything, as data stays for a later reader.
        const p = peekByte(this.fd);
        if (p === EAGAIN) return;
        if (p > 0) {
          this.parked = true;
          this.rearm();
          return;
        }
        this.observeClose(p === 0 ? 'eof' : 'reset');
        return;
      }
      const r = recvChunk(this.fd, this.wantBytes(), this.maxRecvFds);
      if (r === EAGAIN) return;
      if (typeof r === 'number') {
        // ECONNRESET: the peer went away with data of ours unread. Anything else is treated alike.
        this.observeClose('reset');
        return;
      }
      if (r.ctrunc) this.stats.ctrunc++;
      if (r.bytes.length === 0) {
        for (const n of r.fds) sysClose(n);
        this.observeClose('eof');
        return;
      }
      this.advanceFraming(r.bytes);
      const fds = r.fds.map((n) => adoptFd(n, this.registry, `received on ${this.id}`, this.opts));
      this.stats.chunksReceived++;
      this.stats.bytesReceived += r.bytes.length;
      this.stats.fdsReceived += fds.length;
      callSafely(() => cb(r.bytes, fds));
    }
  }

  private observeClose(reason: CloseInfo['reason']): void {
    if (this.closeInfo !== undefined) return;
    const info: CloseInfo = { reason };
    this.closeInfo = info;
    this.rearm();
    for (const cb of [...this.closeCbs]) {
      if (this.closed) return;
      if (this.closeCbs.includes(cb)) callSafely(() => cb(info));
    }
  }
}

/** Wraps a received OS fd in the handle class its file type calls for. */
export function adoptFd(n: number, registry: RealFdRegistry, origin: string, opts: RealChannelOptions = {}): RealFd {
  let type;
  try {
    type = fdType(n);
  } catch {
    type = 'other' as const;
  }
  if (type === 'eventfd') return new RealEventFd(n, registry, origin);
  if (type === 'socket') return new RealSocketFd(n, registry, origin, `fd ${n} ${origin}`, 'unknown', { ...opts, registry });
  return new RealMemFd(n, registry, origin);
}

// ---- connect, listen, socketpair ----------------------------------------------------------

function checkPath(path: string): TransportError | undefined {
  if (typeof path !== 'string' || path.length === 0) return new TransportError('EINVAL', 'empty socket path');
  const n = Buffer.byteLength(path, 'utf8');
  if (n > MAX_UNIX_PATH_BYTES) return new TransportError('EINVAL', `socket path of ${n} bytes (max ${MAX_UNIX_PATH_BYTES})`, path);
  return undefined;
}

const PATH_ERRORS: readonly TransportErrorCode[] = ['ENOENT', 'ECONNREFUSED', 'EADDRINUSE', 'EAGAIN'];

/** A connect/listen errno as the TransportError callers handle; anything unexpected throws. */
function pathError(op: string, path: string, r: number): TransportError {
  const name = errnoName(-r);
  const code = PATH_ERRORS.find((c) => c === name);
  if (code !== undefined) return new TransportError(code, `${op} ${path}: ${name}`, path);
  // Not a socket at the path, or a path through a non-directory: nobody listens there.
  if (name === 'ENOTDIR') return new TransportError('ENOENT', `${op} ${path}: ${name}`, path);
  throw new OsError(op, -r, name, path);
}

let connectCount = 0;

/**
 * Connects to a listening socket at `path`. AF_UNIX connects complete at once (the
 * connection waits in the listener's backlog until accepted), so the answer is
 * synchronous: the channel, or ENOENT (no file), ECONNREFUSED (a file but nobody
 * listening: a stale socket), EAGAIN (the listener's backlog is full), EINVAL (bad path).
 */
export function connectUnix(path: string, opts: RealChannelOptions = {}): RealSocketFd | TransportError {
  const bad = checkPath(path);
  if (bad) return bad;
  const fd = socketCreate();
  const r = connectPath(fd, path);
  if (r < 0) {
    sysClose(fd);
    return pathError('connect', path, r);
  }
  const n = ++connectCount;
  return new RealSocketFd(fd, opts.registry ?? defaultRealRegistry, `connected to ${path}`, `${path}#c${n}`, `${path} (server side of #c${n})`, opts);
}

let pairCount = 0;

/** A connected pair, as socketpair(AF_UNIX, SOCK_STREAM). */
export function realSocketpair(opts: RealChannelOptions = {}): [RealSocketFd, RealSocketFd] {
  const [a, b] = socketpairCreate();
  const n = ++pairCount;
  const reg = opts.registry ?? defaultRealRegistry;
  const label = `socketpair#${n}`;
  return [new RealSocketFd(a, reg, 'socketpair', `${label}/0`, `${label}/1`, opts), new RealSocketFd(b, reg, 'socketpair', `${label}/1`, `${label}/0`, opts)];
}

/** The listening socket's own fd, tracked like any other. */
class ListenFd extends RealFdBase {
  readonly kind = 'socket' as const;
  protected override wrap(fd: number, origin: string): this {
    return new ListenFd(fd, this.registry, origin) as this;
  }
}

export interface RealListenOptions extends RealChannelOptions {
  /** listen(2) backlog (default 16). */
  backlog?: number;
}

/** A listening AF_UNIX socket bound to a path; accepted connections go to `onConnection`. */
export class RealUnixListener {
  private readonly sock: ListenFd;
  private readonly watch: FdWatch;
  private acceptedCount = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Binds and listens on `path`: EADDRINUSE if anything exists there (as bind() does;
   * remove a stale socket first, as QEMU does), EINVAL for a bad path, ENOENT if the
   * directory does not exist.
   */
  static listen(path: string, onConnection: (channel: RealSocketFd) => void, opts: RealListenOptions = {}): RealUnixListener | TransportError {
    const bad = checkPath(path);
    if (bad) return bad;
    const fd = socketCreate();
    const r = bindListen(fd, path, opts.backlog ?? 16);
    if (r < 0) {
      sysClose(fd);
      return pathError('listen', path, r);
    }
    return new RealUnixListener(fd, path, onConnection, opts);
  }

  private constructor(
    fd: number,
    readonly path: string,
    private readonly onConnection: (channel: RealSocketFd) => void,
    private readonly opts: RealListenOptions,
  ) {
    this.sock = new ListenFd(fd, opts.registry ?? defaultRealRegistry, `listening on ${path}`);
    this.watch = watchFd(fd, () => this.acceptAll());
    this.watch.set({ readable: true });
  }

  get closed(): boolean {
    return this.sock.closed;
  }

  get accepted(): number {
    return this.acceptedCount;
  }

  /** The listening socket's fd number. */
  get fd(): number {
    return this.sock.fd;
  }

  /**
   * Stops listening; the kernel resets connections not yet accepted. With `unlink` the
   * socket file is removed too (a graceful shutdown); without, it stays and connects are
   * refused (a killed process).
   */
  close(opts: { unlink?: boolean } = {}): void {
    if (this.sock.closed) return;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.watch.close();
    this.sock.close();
    if (opts.unlink) unlinkPath(this.path);
  }

  private acceptAll(): void {
    const EAGAIN = -errno('EAGAIN');
    for (let i = 0; i < READ_BUDGET && !this.sock.closed; i++) {
      const r = acceptConn(this.sock.fd);
      if (r === EAGAIN) return;
      if (r < 0) {
        const name = errnoName(-r);
        if (name === 'ECONNABORTED' || name === 'EINTR') continue;
        // Out of fds (EMFILE/ENFILE) or memory: the connection stays pending; look again shortly rather than spin.
        this.watch.set({});
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          if (!this.sock.closed) this.watch.set({ readable: true });
        }, 50);
        return;
      }
      const n = ++this.acceptedCount;
      const ch = new RealSocketFd(r, this.sock.registry, `accepted on ${this.path}`, `${this.path}#s${n}`, `${this.path}#s${n} (client side)`, this.opts);
      callSafely(() => this.onConnection(ch));
    }
  }
}
