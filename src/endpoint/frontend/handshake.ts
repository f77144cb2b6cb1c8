/**
 * The sans-IO core of the front-end models.
 *
 * A front-end's control path is sequential code that writes a request, maybe waits for its
 * reply, and decides what to do next from the reply (DPDK virtio-user and QEMU both block on
 * the socket while they wait). Each profile writes its sequences as generator functions that
 * `yield` one effect per message and receive the outcome back, mirroring the upstream
 * control flow: which failures abort, which are logged and ignored.
 *
 * Nothing here touches a socket. `runSequence` drives a sequence against anything that can
 * send and read (a `Conversation` over a live connection, or a script in a unit test).
 */
import { FLAG_NEED_REPLY, HEADER_SIZE, REPLY_FLAGS, requestName, type DecodedMessage, type Message } from '../../protocol/index.ts';
import type { AnyFd } from '../../transport/index.ts';
import type { MessageChannel } from '../message-channel.ts';
import { FrontendError } from './errors.ts';

/** What the reader insists on in a reply. Flags must always be exactly VERSION|REPLY (0x5). */
export interface ReplySpec {
  readonly request: number;
  /** Exact payload size required; absent when the reader does not check it (QEMU's ack reads). */
  readonly size?: number;
  /** Hand the reply's fds to the sequence instead of closing them (GET_INFLIGHT_FD's memfd). */
  readonly keepFds?: boolean;
}

/** One message to send, and whether (and how) its reply is read. */
export interface SendEffect {
  readonly op: 'send';
  readonly msg: Message<AnyFd>;
  readonly reply?: ReplySpec;
}

export type Effect = SendEffect;

export type OpResult =
  | { readonly ok: true; readonly reply?: Reply }
  | { readonly ok: false; readonly error: FrontendError };

/** A reply as the profile code sees it: the header fields and the raw payload. */
export interface Reply {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  /** Received fds, only when the read asked to keep them. */
  readonly fds?: readonly AnyFd[];
}

/** A profile sequence: yields effects, gets each one's outcome, returns its result. */
export type Sequence<T = void> = Generator<Effect, T, OpResult>;

export function send(msg: Message<AnyFd>, reply?: ReplySpec): SendEffect {
  return reply === undefined ? { op: 'send', msg } : { op: 'send', msg, reply };
}

/** u64 at the start of a reply payload (0 if the payload is shorter: a reader that does not check the size reads its stale buffer, modelled as 0). */
export function replyU64(r: Reply): bigint {
  if (r.payload.length < 8) return 0n;
  return new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true);
}

/** `struct vhost_vring_state` of a reply. */
export function replyVringState(r: Reply): { index: number; num: number } {
  if (r.payload.length < 8) return { index: 0, num: 0 };
  const dv = new DataView(r.payload.buffer, r.payload.byteOffset, 8);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

/** Whether a message sent with these flags waits for an ack. */
export function needsReply(msg: Message<unknown>): boolean {
  return (msg.flags & FLAG_NEED_REPLY) !== 0;
}

/** The I/O a sequence needs; `read` either answers now or registers a callback. */
export interface SequenceIo {
  /** Sends one message; a failure (peer gone, own end closed) is returned. */
  send(msg: Message<AnyFd>): FrontendError | undefined;
  /** Reads one reply: returns the outcome now, or 'wait' and calls `resume` later. */
  read(spec: ReplySpec, resume: (r: OpResult) => void): OpResult | 'wait';
}

/**
 * Runs `seq` to completion against `io`, synchronously as far as replies are already there,
 * then from the callbacks that deliver them. `done` receives the sequence's result.
 */
export function runSequence<T>(seq: Sequence<T>, io: SequenceIo, done: (result: T) => void): void {
  let started = false;
  const step = (input: OpResult | undefined): void => {
    for (;;) {
      const it = started ? seq.next(input as OpResult) : seq.next();
      started = true;
      if (it.done) {
        done(it.value);
        return;
      }
      const eff = it.value;
      const err = io.send(eff.msg);
      if (err !== undefined) {
        input = { ok: false, error: err };
        continue;
      }
      if (eff.reply === undefined) {
        input = { ok: true };
        continue;
      }
      const r = io.read(eff.reply, (res) => step(res));
      if (r === 'wait') return;
      input = r;
    }
  };
  step(undefined);
}

/**
 * Checks a received message as the real readers do, in their order: flags exactly 0x5
 * (QEMU `vhost_user_read_header`, DPDK `vhost_user_read`), then the request code, then the
 * size where the caller checks it.
 */
export function checkReply(m: { header: { request: number; flags: number; size: number } }, spec: ReplySpec): FrontendError | undefined {
  const { request, flags, size } = m.header;
  if (flags !== REPLY_FLAGS) {
    return new FrontendError(
      'bad-reply-flags',
      `reply to ${requestName(spec.request)} has flags 0x${flags.toString(16)}, not 0x5`,
      spec.request,
      `Failed to read msg header. Flags 0x${flags.toString(16)} instead of 0x5.`,
    );
  }
  if (request !== spec.request) {
    return new FrontendError(
      'unexpected-request',
      `reply to ${requestName(spec.request)} carries request ${requestName(request)}`,
      spec.request,
      `Received unexpected msg type. Expected ${spec.request} received ${request}`,
    );
  }
  if (spec.size !== undefined && size !== spec.size) {
    return new FrontendError('bad-reply-size', `reply to ${requestName(spec.request)} has ${size} payload bytes, not ${spec.size}`, spec.request, 'Received bad msg size.');
  }
  return undefined;
}

/**
 * One live connection as the control path sees it: what it sends goes out through the
 * MessageChannel; what arrives is queued until a sequence reads it as a reply. Neither QEMU
 * nor virtio-user reads the main socket unless it waits for a reply, so a message nobody
 * asked for stays queued and is taken as the next reply (and then usually refused).
 */
/**
 * The one read a sequence may have pending: `read` answers at once when `tryRead` can, else it
 * parks the continuation, and `wake` (called when a message arrives or the link closes) resumes it.
 */
export class PendingRead {
  private waiter: { spec: ReplySpec; resume: (r: OpResult) => void } | undefined;

  constructor(
    private readonly tryRead: (spec: ReplySpec) => OpResult | undefined,
    private readonly owner: string,
  ) {}

  read(spec: ReplySpec, resume: (r: OpResult) => void): OpResult | 'wait' {
    const now = this.tryRead(spec);
    if (now !== undefined) return now;
    if (this.waiter !== undefined) throw new Error(`${this.owner}.read: a read is already pending`);
    this.waiter = { spec, resume };
    return 'wait';
  }

  wake(): void {
    const w = this.waiter;
    if (w === undefined) return;
    const r = this.tryRead(w.spec);
    if (r === undefined) return;
    this.waiter = undefined;
    w.resume(r);
  }
}

export class Conversation implements SequenceIo {
  private readonly inbound: DecodedMessage<AnyFd>[] = [];
  private readonly pending = new PendingRead((spec) => this.tryRead(spec), 'Conversation');
  private failure: FrontendError | undefined;
  private peerGone: { midMessage: boolean } | undefined;
  private localClosed = false;
  private readonly closeListeners: ((info: { midMessage: boolean }) => void)[] = [];
  private readonly fatalListeners: ((e: FrontendError) => void)[] = [];
  private readonly replyErrorListeners: ((e: FrontendError) => void)[] = [];

  constructor(readonly mc: MessageChannel) {
    mc.on({
      message: (m) => this.onMessage(m),
      fatal: (e) => {
        this.failure = new FrontendError('bad-framing', `back-end stream cannot be framed: ${e.message}`, e.request, 'Failed to read msg header.');
        for (const l of this.fatalListeners) l(this.failure);
        this.pending.wake();
      },
      closed: (info) => {
        this.peerGone = info;
        for (const l of this.closeListeners) l(info);
        this.pending.wake();
      },
    });
  }

  /** The peer closed (or the connection was cut). */
  get peerClosed(): boolean {
    return this.peerGone !== undefined;
  }

  get closed(): boolean {
    return this.localClosed || this.peerGone !== undefined;
  }

  /** Messages received and not read yet. */
  get pendingMessages(): number {
    return this.inbound.length;
  }

  onPeerClose(cb: (info: { midMessage: boolean }) => void): void {
    this.closeListeners.push(cb);
  }

  onFatal(cb: (e: FrontendError) => void): void {
    this.fatalListeners.push(cb);
  }

  /** A read was refused for what the back-end sent (flags, request, size, framing). */
  onReplyError(cb: (e: FrontendError) => void): void {
    this.replyErrorListeners.push(cb);
  }

  send(msg: Message<AnyFd>): FrontendError | undefined {
    if (this.localClosed) return new FrontendError('transport', `send ${requestName(msg.request)}: connection already closed here (EBADF)`, msg.request);
    if (this.peerGone !== undefined || this.mc.closed) {
      return new FrontendError('transport', `send ${requestName(msg.request)}: connection shut down (EPIPE)`, msg.request, 'Failed to set msg fds.');
    }
    const err = this.mc.send(msg);
    if (err === undefined) return undefined;
    if ('code' in err && (err.code === 'EPIPE' || err.code === 'EBADF')) {
      return new FrontendError('transport', `send ${requestName(msg.request)}: ${err.message}`, msg.request, 'Failed to set msg fds.');
    }
    // Anything else is a message the model built wrongly: a bug, not a peer's doing.
    throw err;
  }

  read(spec: ReplySpec, resume: (r: OpResult) => void): OpResult | 'wait' {
    return this.pending.read(spec, resume);
  }

  /** Closes this end; a pending read fails. */
  close(): void {
    if (this.localClosed) return;
    this.localClosed = true;
    for (const m of this.inbound.splice(0)) for (const fd of m.fds) fd.close();
    this.mc.close();
    this.pending.wake();
  }

  private onMessage(m: DecodedMessage<AnyFd>): void {
    this.inbound.push(m);
    this.pending.wake();
  }


  private tryRead(spec: ReplySpec): OpResult | undefined {
    const m = this.inbound.shift();
    if (m !== undefined) {
      // Only GET_INFLIGHT_FD's reply carries an fd the front-end keeps; any other is closed.
      const err = checkReply(m, spec);
      if (spec.keepFds !== true || err !== undefined) for (const fd of m.fds) fd.close();
      if (err !== undefined) {
        for (const l of this.replyErrorListeners) l(err);
        return { ok: false, error: err };
      }
      if (spec.keepFds === true) return { ok: true, reply: { request: m.header.request, flags: m.header.flags, payload: m.payload, fds: m.fds } };
      return { ok: true, reply: { request: m.header.request, flags: m.header.flags, payload: m.payload } };
    }
    if (this.localClosed) {
      return { ok: false, error: new FrontendError('transport', `read reply to ${requestName(spec.request)}: connection closed here (EBADF)`, spec.request) };
    }
    if (this.failure !== undefined) {
      for (const l of this.replyErrorListeners) l(this.failure);
      return { ok: false, error: this.failure };
    }
    if (this.peerGone !== undefined) {
      const mid = this.peerGone.midMessage;
      return {
        ok: false,
        error: new FrontendError(
          mid ? 'truncated' : 'eof',
          `connection closed ${mid ? 'inside' : 'before'} the reply to ${requestName(spec.request)}`,
          spec.request,
          mid
            ? `Failed to read msg payload. Original request ${spec.request}.`
            : `Failed to read msg header. Read 0 instead of ${HEADER_SIZE}. Original request ${spec.request}.`,
        ),
      };
    }
    return undefined;
  }
}
