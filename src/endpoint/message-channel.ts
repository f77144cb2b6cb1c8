import type { Channel } from '../transport/channel.ts';
import type { AnyFd } from '../transport/fd.ts';
import { TransportError } from '../transport/errors.ts';
import { encode, type Message, type EncodeOptions } from '../protocol/codec.ts';
import { MessageDecoder, type DecodedMessage } from '../protocol/decoder.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { messageBytes } from '../protocol/header.ts';
import type { RequestSpace } from '../protocol/requests.ts';
import type { TraceRecorder } from './trace-recorder.ts';

export interface MessageChannelOptions {
  /** Which side this end is: decides the trace direction of what it sends. */
  role: 'frontend' | 'backend';
  /** Request space of the connection: `frontend` for the main socket, `backend` for the back-end channel. */
  space?: RequestSpace;
  /** Largest payload the reading side accepts (DPDK 22.11: 632). */
  maxPayload?: number;
  recorder?: TraceRecorder;
}

export interface MessageHandlers {
  /** A well-framed message (it may still carry a per-message `error`). */
  message(m: DecodedMessage<AnyFd>): void;
  /** The stream cannot be framed any more (bad header); the connection should be dropped. */
  fatal(e: ProtocolError): void;
  /** The peer closed; `midMessage` when it vanished inside a message. */
  closed(info: { midMessage: boolean }): void;
}

/**
 * vhost-user messages over one stream Channel: encodes what is sent (one message per
 * send, fds attached, as one sendmsg), reassembles what arrives in any chunking, and
 * records both directions in a trace. Codec and transport stay ignorant of each other;
 * endpoint state machines see only whole messages.
 */
export class MessageChannel {
  private readonly decoder: MessageDecoder<AnyFd>;
  private handlers: MessageHandlers | undefined;
  private dead = false;

  constructor(
    readonly channel: Channel<AnyFd>,
    private readonly opts: MessageChannelOptions,
  ) {
    this.decoder = new MessageDecoder<AnyFd>({ space: opts.space ?? 'frontend', maxPayload: opts.maxPayload });
    channel.onData((chunk, fds) => this.receive(chunk, fds));
    channel.onClose(() => {
      if (this.dead) return;
      this.dead = true;
      const midMessage = this.decoder.bufferedBytes > 0;
      this.handlers?.closed({ midMessage });
    });
  }

  on(handlers: MessageHandlers): void {
    this.handlers = handlers;
  }

  get closed(): boolean {
    return this.dead || this.channel.closed;
  }

  /** Encodes and sends one message; a transport failure (peer gone) is returned, not thrown. */
  send(msg: Message<AnyFd>, opts: EncodeOptions = {}): TransportError | ProtocolError | undefined {
    if (this.closed) return new TransportError(this.channel.closed ? 'EBADF' : 'EPIPE', 'the connection is closed');
    let encoded;
    try {
      encoded = encode(msg, { space: this.opts.space ?? 'frontend', ...opts });
    } catch (e) {
      if (e instanceof ProtocolError) return e;
      throw e;
    }
    const failed = this.channel.send(encoded.bytes, encoded.fds);
    // only what the transport accepted went on the wire, so only that is traced
    if (failed === undefined) this.opts.recorder?.message(this.opts.role === 'frontend' ? 'f2b' : 'b2f', encoded.bytes, encoded.fds.length);
    return failed;
  }

  close(): void {
    this.dead = true;
    this.channel.close();
  }

  private receive(chunk: Uint8Array, fds: AnyFd[]): void {
    if (this.dead) {
      for (const fd of fds) fd.close();
      return;
    }
    try {
      this.decoder.push(chunk, fds);
      for (;;) {
        const m = this.decoder.next();
        if (m === undefined) break;
        this.opts.recorder?.message(this.opts.role === 'frontend' ? 'b2f' : 'f2b', messageBytes(m), m.fds.length);
        this.handlers?.message(m);
        if (this.dead) return;
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.dead = true;
      this.handlers?.fatal(e);
      // the framing is lost: drop the connection so the peer sees it, as a real reader does
      this.channel.close();
    }
  }
}
