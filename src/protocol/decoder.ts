/**
 * Streaming vhost-user decoder: bytes arrive in any chunking (a byte at a time, or many
 * messages at once), complete messages come out in order.
 *
 * Pull model: `push()` only buffers; `next()` (or iterating the decoder) hands out the next
 * complete message. A fatal error is thrown by `next()` exactly where the stream breaks, so
 * every message before the bad header has been handed out first, as a real reader would have
 * processed them. `feed()` is push + take everything, for callers that do not care.
 *
 * ## fds
 * On a Unix socket fds travel as SCM_RIGHTS attached to the bytes of one sendmsg, and senders
 * put a whole message in one sendmsg, so the fds ride on the header [QDOC intro]. The rule
 * here: **fds pushed with a chunk belong to the message being read when that chunk begins** —
 * the message that contains the chunk's first byte (the next message, if the chunk starts on a
 * boundary). A message collects the fds of every chunk that begins inside it. A reader that
 * reads as DPDK does (the 12-byte header with one recvmsg, then exactly `size` payload bytes;
 * `read_fd_message`) always receives a message's fds with a chunk that begins at its header,
 * so transports deliver chunks that way, or at least never start a fd-carrying chunk inside an
 * earlier message. An empty chunk cannot carry fds (`fds-without-bytes`).
 *
 * ## Errors
 * Fatal (`ProtocolError.fatal`): `bad-version`, `payload-too-large` (checked as soon as the
 * 12 header bytes are in, as DPDK does before reading the payload), and `truncated` from
 * `end()`. After one, every call throws the same error object.
 * Per message: everything `checkMessage` reports; the message is handed out with `error` set,
 * no `decoded`, and decoding continues with the next one.
 */
import { ProtocolError } from './errors.ts';
import { DPDK_22_11_MAX_PAYLOAD, HEADER_SIZE, MAX_FDS, VERSION, VERSION_MASK, type MessageHeader } from './header.ts';
import type { Payload } from './payloads.ts';
import { checkMessage } from './codec.ts';
import { StreamBuffer } from './stream-buffer.ts';
import type { MessageForm, RequestSpace, RequestSpec } from './requests.ts';

export interface DecoderOptions {
  /** Request space of the channel: `frontend` for the main socket (default), `backend` for the back-end channel. */
  readonly space?: RequestSpace;
  /** Largest payload accepted; above it the stream is dead. Default 632 (DPDK 22.11); `QEMU_MAX_PAYLOAD` for QEMU's reader. */
  readonly maxPayload?: number;
  /** Most fds one message may carry (default 8). */
  readonly maxFds?: number;
}

export interface DecodedMessage<F> {
  readonly header: MessageHeader;
  /** The payload bytes (a copy, `header.size` long). */
  readonly payload: Uint8Array;
  /** Typed payload, when the message is valid. */
  readonly decoded?: Payload;
  readonly spec?: RequestSpec;
  readonly form?: MessageForm;
  readonly fds: readonly F[];
  /** Per-message validation failure. */
  readonly error?: ProtocolError;
  /** Stream offset of the header's first byte. */
  readonly offset: number;
}

export class MessageDecoder<F = unknown> implements Iterable<DecodedMessage<F>> {
  private readonly space: RequestSpace;
  private readonly maxPayload: number;
  private readonly maxFds: number;
  private readonly stream = new StreamBuffer<F>();
  private failure: ProtocolError | undefined;
  private ended = false;

  constructor(opts: DecoderOptions = {}) {
    this.space = opts.space ?? 'frontend';
    this.maxPayload = opts.maxPayload ?? DPDK_22_11_MAX_PAYLOAD;
    this.maxFds = opts.maxFds ?? MAX_FDS;
  }

  /** The fatal error the stream died of, if it did. */
  get error(): ProtocolError | undefined {
    return this.failure;
  }
  /** Bytes received but not yet handed out as part of a message. */
  get bufferedBytes(): number {
    return this.stream.bufferedBytes;
  }
  /** Stream offset of the next unread byte. */
  get offset(): number {
    return this.stream.offset;
  }

  /** Buffers a chunk; fds attach per the rule in the module doc. Throws only if the decoder already failed or was ended. */
  push(chunk: Uint8Array, fds: readonly F[] = []): void {
    if (this.failure) throw this.failure;
    if (this.ended) throw new Error('MessageDecoder: push after end()');
    if (chunk.length === 0) {
      if (fds.length > 0) {
        throw new ProtocolError('fds-without-bytes', `${fds.length} fds pushed with an empty chunk`, undefined, this.offset + this.bufferedBytes);
      }
      return;
    }
    this.stream.push(chunk, fds);
  }

  /** The next complete message, or undefined until more bytes arrive. Throws a fatal `ProtocolError` where the framing breaks. */
  next(): DecodedMessage<F> | undefined {
    if (this.failure) throw this.failure;
    const header = this.stream.peekHeader();
    if (header === undefined) return undefined;
    const at = this.stream.offset;
    if ((header.flags & VERSION_MASK) !== VERSION) {
      return this.die(new ProtocolError('bad-version', `flags 0x${header.flags.toString(16)}: version ${header.flags & VERSION_MASK}, expected 1`, header.request, at));
    }
    if (header.size > this.maxPayload) {
      return this.die(new ProtocolError('payload-too-large', `size ${header.size} above the ${this.maxPayload}-byte limit`, header.request, at));
    }
    const whole = this.stream.take(header);
    if (whole === undefined) return undefined;
    const { payload, fds } = whole;
    const check = checkMessage(header, payload, fds.length, { space: this.space, maxFds: this.maxFds });
    return {
      header,
      payload,
      fds,
      offset: at,
      ...(check.spec ? { spec: check.spec } : {}),
      ...(check.form ? { form: check.form } : {}),
      ...(check.decoded ? { decoded: check.decoded } : {}),
      ...(check.error ? { error: check.error } : {}),
    };
  }

  *[Symbol.iterator](): Iterator<DecodedMessage<F>> {
    for (let m = this.next(); m; m = this.next()) yield m;
  }

  /** Push a chunk and take every message it completes. Throws at a fatal error (use push/next to keep the messages before it). */
  feed(chunk: Uint8Array, fds: readonly F[] = []): DecodedMessage<F>[] {
    this.push(chunk, fds);
    return [...this];
  }

  /**
   * The peer closed the stream. Throws `truncated` (fatal) if it stopped inside a message —
   * DPDK's "Unexpected header size read" / "read control message failed".
   */
  end(): void {
    if (this.failure) throw this.failure;
    this.ended = true;
    if (this.bufferedBytes > 0) {
      const have = this.bufferedBytes;
      const header = this.stream.peekHeader();
      const what = header ? `${have - HEADER_SIZE} of ${header.size} payload bytes` : `${have} of ${HEADER_SIZE} header bytes`;
      this.die(new ProtocolError('truncated', `stream ended inside a message (${what})`, header?.request, this.offset));
    }
  }

  private die(e: ProtocolError): never {
    this.failure = e;
    throw e;
  }
}

/** Decodes a complete byte string (fds attached to its first message) and requires it to end on a message boundary. */
export function decodeAll<F = never>(bytes: Uint8Array, fds: readonly F[] = [], opts: DecoderOptions = {}): DecodedMessage<F>[] {
  const d = new MessageDecoder<F>(opts);
  if (bytes.length > 0 || fds.length > 0) d.push(bytes, fds);
  const out = [...d];
  d.end();
  return out;
}
