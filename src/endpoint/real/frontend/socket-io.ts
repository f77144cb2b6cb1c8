/** A connection's session record and a `SequenceIo` over a real socket, shared by the real model front-ends. */
import { MessageDecoder, encode, requestName, type DecodedMessage, type Message } from '../../../protocol/index.ts';
import type { AnyFd } from '../../../transport/index.ts';
import type { RealFd, RealSocketFd } from '../../../transport/real/index.ts';
import { FrontendError } from '../../frontend/errors.ts';
import { PendingRead, checkReply, type OpResult, type ReplySpec, type SequenceIo } from '../../frontend/handshake.ts';
import { VIRTIO_USER_MAX_REPLY_PAYLOAD } from '../../frontend/virtio-user.ts';
import { realFdOf } from '../fd-adapter.ts';

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


/** A `SequenceIo` over a real socket: replies are queued until a sequence reads one. */
export class SocketIo implements SequenceIo {
  private readonly inbound: DecodedMessage<RealFd>[] = [];
  private readonly decoder: MessageDecoder<RealFd>;
  private readonly pending = new PendingRead((spec) => this.tryRead(spec), 'SocketIo');
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
    this.pending.wake();
  }

  private fail(e: unknown): void {
    this.failure = e instanceof Error ? e : new Error(String(e));
    this.gone = true;
    this.pending.wake();
    this.onFatal(this.failure);
  }

  closed(): void {
    this.gone = true;
    for (const m of this.inbound.splice(0)) for (const f of m.fds) f.close();
    this.pending.wake();
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
    return this.pending.read(spec, resume);
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
