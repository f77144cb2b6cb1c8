/**
 * What the two front-end models share around their sequences: the current connection
 * (a MessageChannel with trace recording and a Conversation on top), a serial task queue
 * (a real front-end's control path does one thing at a time), lifecycle events with
 * virtual timestamps, and upstream-style log lines.
 */
import type { Message } from '../../protocol/index.ts';
import type { AnyFd, SocketFd, SocketNamespace } from '../../transport/index.ts';
import { MessageChannel } from '../message-channel.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { FrontendError } from './errors.ts';
import { Conversation, runSequence, type OpResult, type ReplySpec, type Sequence, type SequenceIo } from './handshake.ts';
import type { Guest } from './guest.ts';
import type { FrontendProfileName } from './profiles.ts';

export type FrontendEventType =
  /** The front-end's socket is ready (listening, or a client about to connect). */
  | 'listening'
  /** A back-end connection was taken up. */
  | 'connected'
  /** Features (and protocol features) were negotiated on the current connection. */
  | 'negotiated'
  /** The rings were handed to the back-end: the device runs. */
  | 'started'
  /** The rings were taken back from the back-end. */
  | 'stopped'
  /** The back-end's connection went away. */
  | 'backend-lost'
  /** A later connection brought the device back to running. */
  | 'reconnected'
  /** Rings rebuilt without the guest asking (virtio-user packed reconnect); `dropped` buffers lost. */
  | 'rings-reset'
  /** A back-end was turned away (QEMU: it lacks features acked before). */
  | 'refused'
  /** Something failed; `error` says what. */
  | 'error'
  /** The guest reset the device (reboot); rings are rebuilt. */
  | 'guest-reset'
  /** The front-end process ended (quit or kill). */
  | 'quit';

export interface FrontendEvent {
  readonly type: FrontendEventType;
  /** Virtual time, seconds. */
  readonly t: number;
  /** Connection number (1-based; 0 before the first). */
  readonly session: number;
  readonly detail?: string;
  readonly error?: FrontendError;
  readonly features?: bigint;
  readonly dropped?: number;
}

export interface FrontendLogLine {
  readonly t: number;
  readonly session: number;
  readonly level: string;
  readonly text: string;
}

export interface Connection {
  readonly fd: SocketFd;
  readonly mc: MessageChannel;
  readonly conv: Conversation;
  readonly session: number;
  /** Set once this connection's close was recorded. */
  closedRecorded: boolean;
}

/** Sends and reads that always fail: a sequence run with no connection (the real code writes to fd -1). */
const NO_CONNECTION: SequenceIo = {
  send: (m: Message<AnyFd>) => new FrontendError('transport', `send request ${m.request}: no connection (EBADF)`, m.request),
  read: (spec: ReplySpec): OpResult => ({ ok: false, error: new FrontendError('transport', `read reply to ${spec.request}: no connection (EBADF)`, spec.request) }),
};

interface Task {
  readonly label: string;
  readonly run: (done: () => void) => void;
}

export interface FrontendBaseOptions {
  readonly ns: SocketNamespace;
  /** The vhost-user socket path. */
  readonly path: string;
  readonly recorder?: TraceRecorder;
  /** Largest reply payload the front-end's reader accepts (larger kills the stream). */
  readonly maxPayload: number;
}

export abstract class FrontendBase {
  abstract readonly profile: FrontendProfileName;
  abstract readonly guest: Guest;
  /** Where the front-end is in its life (profile-specific names; 'running' once DRIVER_OK reached the back-end). */
  abstract readonly phase: string;
  /** The virtio features acked to the current (or last) back-end, bit 30 included. */
  abstract readonly ackedFeatures: bigint | undefined;
  /** Sets up the socket (listen, or connect). */
  abstract start(): void;
  /** The process exits cleanly (what it sends first is profile-specific). */
  abstract quit(): void;
  /** The process dies: sockets close, nothing is sent, the socket file stays. */
  abstract kill(): void;
  /** Releases every fd (guest memory, eventfds, sockets). */
  abstract dispose(): void;
  readonly ns: SocketNamespace;
  readonly path: string;
  readonly events: FrontendEvent[] = [];
  readonly logs: FrontendLogLine[] = [];
  protected conn: Connection | undefined;
  protected sessionCount = 0;
  /** Back-ends that connected while one is held: a socket server takes one client at a time. */
  protected readonly backlog: SocketFd[] = [];
  private accepting = false;
  protected readonly recorder: TraceRecorder | undefined;
  private readonly maxPayload: number;
  private readonly listeners = new Set<(e: FrontendEvent) => void>();
  private readonly tasks: Task[] = [];
  private running: Task | undefined;

  constructor(opts: FrontendBaseOptions) {
    this.ns = opts.ns;
    this.path = opts.path;
    this.recorder = opts.recorder;
    this.maxPayload = opts.maxPayload;
  }

  /** The process has ended (quit or kill). */
  protected abstract get closed(): boolean;
  /** Takes up an accepted back-end connection. */
  protected abstract acceptConnection(fd: SocketFd): void;

  /** The listener's callback: queue the connection, accept it when no back-end is held. */
  protected onAccept(fd: SocketFd): void {
    if (this.closed) {
      fd.close();
      return;
    }
    this.backlog.push(fd);
    this.maybeAccept();
  }

  /** accept() runs only while no back-end is held; `delay` is the profile's accept latency. */
  protected maybeAccept(delay = 0, label = 'accept'): void {
    if (this.conn !== undefined || this.accepting || this.backlog.length === 0 || this.closed) return;
    this.accepting = true;
    this.ns.scheduler.after(
      delay,
      () => {
        this.accepting = false;
        if (this.conn !== undefined || this.closed) return;
        const fd = this.backlog.shift();
        if (fd !== undefined) this.acceptConnection(fd);
      },
      `${this.path} ${label}`,
    );
  }

  get now(): number {
    return this.ns.scheduler.now;
  }

  /** Number of connections taken up so far. */
  get sessions(): number {
    return this.sessionCount;
  }

  /** True while a connection is held. */
  get connected(): boolean {
    return this.conn !== undefined;
  }

  /** True when no control-path work is running or queued. */
  get idle(): boolean {
    return this.running === undefined && this.tasks.length === 0;
  }

  /** The last error event's error. */
  get lastError(): FrontendError | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i].error;
      if (e !== undefined) return e;
    }
    return undefined;
  }

  /** Subscribes to lifecycle events; returns the unsubscribe function. */
  on(cb: (e: FrontendEvent) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Events of one type, in order. */
  eventsOf(type: FrontendEventType): FrontendEvent[] {
    return this.events.filter((e) => e.type === type);
  }

  /** Writes vring `i`'s kick eventfd (after the driver's `publish()` asked for a kick). */
  kick(i: number): void {
    this.guest.notify(i);
  }

  /** Publishes what the driver of vring `i` added and kicks when the device wants it; true when it kicked. */
  publish(i: number): boolean {
    const d = this.guest.vring(i).driver;
    if (d === undefined || !d.publish()) return false;
    this.kick(i);
    return true;
  }

  protected emit(type: FrontendEventType, extra: Omit<FrontendEvent, 'type' | 't' | 'session'> = {}): void {
    const e: FrontendEvent = { type, t: this.now, session: this.conn?.session ?? this.sessionCount, ...extra };
    this.events.push(e);
    for (const l of [...this.listeners]) l(e);
  }

  protected log(level: string, text: string): void {
    this.logs.push({ t: this.now, session: this.conn?.session ?? this.sessionCount, level, text });
  }

  /** Takes up an accepted or connected socket as the current connection. */
  protected attach(fd: SocketFd): Connection {
    if (this.conn !== undefined) throw new Error('attach: a connection is already held');
    this.sessionCount++;
    const session = this.recorder?.openSession() ?? this.sessionCount;
    const mc = new MessageChannel(fd, { role: 'frontend', space: 'frontend', maxPayload: this.maxPayload, recorder: this.recorder });
    const conv = new Conversation(mc);
    const conn: Connection = { fd, mc, conv, session, closedRecorded: false };
    conv.onPeerClose((info) => {
      this.recordClosed(conn);
      this.onPeerClosed(conn, info);
    });
    this.conn = conn;
    this.emit('connected');
    return conn;
  }

  /** Drops the current connection (closing this end). */
  protected detach(): void {
    const conn = this.conn;
    if (conn === undefined) return;
    this.conn = undefined;
    conn.conv.close();
    this.recordClosed(conn);
  }

  /** The peer of `conn` closed; the connection is still held until `detach`. */
  protected abstract onPeerClosed(conn: Connection, info: { midMessage: boolean }): void;

  /** Queues a sequence on whatever connection is current when it starts. */
  protected runSeq<T>(label: string, make: () => Sequence<T>, then?: (result: T) => void): void {
    this.enqueue({
      label,
      run: (done) => {
        const io = this.conn?.conv ?? NO_CONNECTION;
        runSequence(make(), io, (r) => {
          then?.(r);
          done();
        });
      },
    });
  }

  /** Queues a plain action behind the running sequences. */
  protected runAction(label: string, fn: () => void): void {
    this.enqueue({
      label,
      run: (done) => {
        fn();
        done();
      },
    });
  }

  private enqueue(t: Task): void {
    this.tasks.push(t);
    this.pump();
  }

  private pump(): void {
    while (this.running === undefined && this.tasks.length > 0) {
      const t = this.tasks.shift()!;
      this.running = t;
      let sync = true;
      let finished = false;
      t.run(() => {
        finished = true;
        this.running = undefined;
        if (!sync) this.pump();
      });
      sync = false;
      if (!finished) return;
    }
  }

  private recordClosed(conn: Connection): void {
    if (conn.closedRecorded) return;
    conn.closedRecorded = true;
    this.recorder?.closeSession(conn.session);
  }
}
