/**
 * What lib/vhost/socket.c does around one device, whatever the socket is: the in-process model
 * (`DpdkBackend`) and a real AF_UNIX socket (`RealModelBackend`) share it.
 *
 * - `BackendConnection`: one accepted or connected socket and its device — frame the stream
 *   with DPDK's reader, hand each message to the device, send replies, report lifecycle, and
 *   destroy the device when the connection ends (`vhost_user_read_cb`, `vhost_destroy_device`).
 * - `ClientConnector`: `client=1` — connect once; on failure WARNING "failed to connect",
 *   INFO "reconnecting...", then the reconnect thread retries every `reconnectPeriod` seconds,
 *   silently, until INFO "connected" (`vhost_user_start_client`, `vhost_user_client_reconnect`).
 *
 * Both are generic over the socket's fd type (model handles or real fds) and the clock.
 */
import { messageBytes, type Message } from '../../protocol/index.ts';
import { TransportError, type AnyFd } from '../../transport/index.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { configEvent, errorEvent, type VhostLogEvent } from './log.ts';
import type { DpdkBackendProfile } from './profile.ts';
import { DpdkMessageReader } from './reader.ts';
import { encodeBackendMessage, type Lifecycle, type VhostUserDevice } from './vhost-device.ts';

/** A connected stream socket carrying fds of type `F`. */
export interface ConnectionSocket<F> {
  readonly fd: number;
  send(bytes: Uint8Array, fds: F[]): TransportError | undefined;
  close(): void;
  onData(cb: (chunk: Uint8Array, fds: F[]) => void): void;
  onClose(cb: () => void): void;
}

export interface ConnectionEnv<F> {
  readonly profile: DpdkBackendProfile;
  emit(e: VhostLogEvent): void;
  lifecycle(l: Lifecycle): void;
  /** The connection ended from this side (a handler failure, a framing error) or the peer's. */
  ended(how: 'peer-closed' | 'error'): void;
  readonly recorder?: TraceRecorder | undefined;
  /** Open a trace session for this connection. */
  readonly recordSession?: boolean;
  /** A received fd as the model handle the device keeps. */
  adopt(fd: F): AnyFd;
  /** A model handle as the fd that goes on the wire. */
  wire(fd: AnyFd): F;
  /** Requests on the back-end channel (SET_SLAVE_REQ_FD's socket), if this transport has one. */
  backendRequest?(device: VhostUserDevice, msg: Message<AnyFd>): void;
  /** After each handled message (the real transport releases mappings the device dropped). */
  afterMessage?(device: VhostUserDevice): void;
}

const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  ECONNREFUSED: 'Connection refused',
  EADDRINUSE: 'Address already in use',
  EAGAIN: 'Resource temporarily unavailable',
  EINVAL: 'Invalid argument',
  EPIPE: 'Broken pipe',
  EBADF: 'Bad file descriptor',
};

/** The text DPDK's log shows for an errno (`strerror`). */
export function strerror(e: TransportError | Error): string {
  if (e instanceof TransportError) return STRERROR[e.code] ?? e.code;
  return e.message;
}

export class BackendConnection<F> {
  open = true;
  readonly trace: number | undefined;
  private readonly reader: DpdkMessageReader;

  constructor(
    readonly sock: ConnectionSocket<F>,
    readonly device: VhostUserDevice,
    private readonly env: ConnectionEnv<F>,
  ) {
    this.reader = new DpdkMessageReader(env.profile.maxPayload, env.profile.options.patch);
    this.trace = env.recordSession === false ? undefined : env.recorder?.openSession();
    sock.onData((chunk, fds) => this.receive(chunk, fds));
    sock.onClose(() => this.peerClosed());
  }

  /** Encodes and sends `msg` on `sock` (the connection's socket by default). */
  send(msg: Message<AnyFd>, opts: { space?: 'frontend' | 'backend'; sock?: ConnectionSocket<F>; record?: boolean } = {}): void {
    const sock = opts.sock ?? this.sock;
    const enc = encodeBackendMessage(msg, opts.space ?? 'frontend', this.env.profile.maxFds);
    const fds = enc.fds.map((f) => this.env.wire(f));
    if (opts.record !== false) this.env.recorder?.message('b2f', enc.bytes, fds.length);
    const err = sock.send(enc.bytes, fds);
    if (err !== undefined) this.env.emit(errorEvent('send-failed', `sendmsg error on fd ${sock.fd} (${strerror(err)})`));
  }

  /**
   * Closes the socket and destroys the device. With `log` (a quit, the peer leaving) the
   * destruction's log lines and destroy_device() are reported; a crash reports nothing.
   */
  close(log: boolean): void {
    if (!this.open) return;
    this.open = false;
    this.reader.discard();
    this.sock.close();
    const events = this.device.destroy();
    const lifecycle = [...this.device.lastLifecycle];
    if (log) {
      for (const e of events) this.env.emit(e);
      for (const l of lifecycle) this.env.lifecycle(l);
    }
    if (this.trace !== undefined) this.env.recorder?.closeSession(this.trace);
  }

  private receive(chunk: Uint8Array, raw: F[]): void {
    const fds = raw.map((f) => this.env.adopt(f));
    if (!this.open) {
      for (const fd of fds) fd.close();
      return;
    }
    this.reader.push(chunk, fds);
    for (;;) {
      if (!this.open) return;
      const r = this.reader.next();
      if (r === undefined) return;
      if (r.kind === 'fatal') {
        for (const e of r.events) this.env.emit(e);
        this.fail('error');
        return;
      }
      const m = r.message;
      this.env.recorder?.message('f2b', messageBytes(m), m.fds.length);
      const res = this.device.handle(m);
      for (const e of res.events) this.env.emit(e);
      for (const reply of res.replies) this.send(reply);
      for (const req of res.backendRequests) this.env.backendRequest?.(this.device, req);
      for (const l of res.lifecycle) this.env.lifecycle(l);
      this.env.afterMessage?.(this.device);
      if (res.close) {
        this.fail('error');
        return;
      }
    }
  }

  private peerClosed(): void {
    if (!this.open) return;
    for (const e of this.reader.close()) this.env.emit(e);
    this.fail('peer-closed');
  }

  private fail(how: 'peer-closed' | 'error'): void {
    this.close(true);
    this.env.ended(how);
  }
}

export type ClientState = 'idle' | 'connecting' | 'retrying' | 'connected' | 'failed' | 'stopped';

export interface ClientConnectorEnv<S> {
  readonly path: string;
  readonly profile: DpdkBackendProfile;
  emit(e: VhostLogEvent): void;
  /** Starts a connect; `done` may be called at once (a real socket) or later (the model). */
  connect(done: (r: S | TransportError | Error) => void): { cancel(): void } | undefined;
  /** Runs `fn` after `seconds`. */
  after(seconds: number, fn: () => void): { cancel(): void };
  connected(sock: S): void;
  /** Labels for the "socket created" line (DPDK's fd numbers). */
  nextSocketLabel(): number;
}

export class ClientConnector<S> {
  private st: ClientState = 'idle';
  private pending: { cancel(): void } | undefined;
  private retryTimer: { cancel(): void } | undefined;
  /** The error of a failed first connect with reconnect off. */
  failure: TransportError | undefined;

  constructor(private readonly env: ClientConnectorEnv<S>) {}

  get state(): ClientState {
    return this.st;
  }

  /** `vhost_user_start_client`: a new socket and one connect (a retry cycle after it fails). */
  start(): void {
    if (this.st === 'stopped') return;
    const fd = this.env.nextSocketLabel();
    this.env.emit(configEvent('INFO', `vhost-user client: socket created, fd: ${fd}`, { kind: 'socket-created', role: 'client', fd }));
    this.connect(false);
  }

  /** After a connection ended: start over with a new socket, or stop without reconnect. */
  restart(): void {
    if (this.st === 'stopped') return;
    if (!this.env.profile.options.reconnect) {
      this.st = 'stopped';
      return;
    }
    this.start();
  }

  stop(): void {
    this.pending?.cancel();
    this.pending = undefined;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.st = 'stopped';
  }

  private connect(retry: boolean): void {
    this.st = 'connecting';
    let done = false;
    const pending = this.env.connect((r) => {
      done = true;
      this.pending = undefined;
      if (this.st === 'stopped') {
        if (!(r instanceof Error)) (r as { close?: () => void }).close?.();
        return;
      }
      if (r instanceof Error) {
        if (retry) return this.scheduleRetry();
        const text = strerror(r);
        this.env.emit(configEvent('WARNING', `failed to connect: ${text}`, { kind: 'connect-failed', error: text }));
        if (!this.env.profile.options.reconnect) {
          this.st = 'failed';
          this.failure = r instanceof TransportError ? r : new TransportError('ECONNREFUSED', `connect ${this.env.path}: ${text}`, this.env.path);
          return;
        }
        this.env.emit(configEvent('INFO', 'reconnecting...', { kind: 'reconnecting' }));
        return this.scheduleRetry();
      }
      if (retry) this.env.emit(configEvent('INFO', 'connected', { kind: 'connected' }));
      this.st = 'connected';
      this.env.connected(r);
    });
    if (!done) this.pending = pending;
  }

  private scheduleRetry(): void {
    this.st = 'retrying';
    this.retryTimer = this.env.after(this.env.profile.options.reconnectPeriod, () => {
      this.retryTimer = undefined;
      if (this.st === 'retrying') this.connect(true);
    });
  }
}
