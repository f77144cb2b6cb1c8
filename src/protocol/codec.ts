/**
 * Message-level codec: typed messages to wire bytes, and the validation of one framed
 * message (header + payload + fd count) shared by the encoder, the streaming decoder and
 * the trace tools.
 */
import { ProtocolError } from './errors.ts';
import {
  DPDK_22_11_MAX_PAYLOAD,
  HEADER_SIZE,
  MAX_FDS,
  VERSION,
  VERSION_MASK,
  encodeHeader,
  replyFlagsFor,
  requestFlags,
  type MessageHeader,
} from './header.ts';
import { decodePayload, encodePayload, payloadSizeFits, type Payload } from './payloads.ts';
import { expectedFdCount, formsFor, lookupRequest, type MessageForm, type RequestSpace, type RequestSpec } from './requests.ts';

/**
 * A message to send. `F` is the transport's fd handle type; the codec only counts and
 * forwards fds. `payload` is a typed payload, raw bytes (sent as they are), or absent (size 0).
 */
export interface Message<F = unknown> {
  readonly request: number;
  readonly flags: number;
  readonly payload?: Payload | Uint8Array;
  readonly fds?: readonly F[];
}

export interface EncodedMessage<F> {
  /** Header and payload, exactly the 12 + size bytes a sender writes in one sendmsg. */
  readonly bytes: Uint8Array;
  /** The fds to attach (SCM_RIGHTS) to those bytes. */
  readonly fds: readonly F[];
}

export interface CheckOptions {
  /** Request space of the channel (default `frontend`, the main socket). */
  readonly space?: RequestSpace;
  /** Most fds a message may carry (default 8, DPDK's control buffer). */
  readonly maxFds?: number;
}

export interface EncodeOptions extends CheckOptions {
  /**
   * Check the message as a receiver would (default true): typed payload kind fits the request,
   * fd count, protocol limits, version bits, size ≤ `maxPayload`; raw-byte payloads are checked
   * the same way. Off, malformed messages can be built on purpose: only the representability of
   * typed fields is still enforced.
   */
  readonly validate?: boolean;
  /** Largest payload a receiver accepts (default 632, DPDK 22.11). */
  readonly maxPayload?: number;
}

/** What one framed message means, and what is wrong with it, if anything. */
export interface MessageCheck {
  /** Catalogue entry, absent for an unknown request. */
  readonly spec?: RequestSpec;
  /** The shape the payload was read as (request form or one of the reply forms). */
  readonly form?: MessageForm;
  /** Typed payload; present exactly when there is no error. */
  readonly decoded?: Payload;
  /** A per-message error (never a fatal one: the message was framed). */
  readonly error?: ProtocolError;
}

/**
 * Interprets a framed message: looks the request up in `space`, picks the request form or
 * (REPLY flag) the first reply form whose size fits, decodes the payload, checks the fd count.
 * Checks run in the order a DPDK reader meets them: fd overflow at recvmsg, unknown request
 * at dispatch, then payload content, then the handler's fd count.
 */
export function checkMessage(header: MessageHeader, payload: Uint8Array, nfds: number, opts: CheckOptions = {}): MessageCheck {
  const space = opts.space ?? 'frontend';
  const maxFds = opts.maxFds ?? MAX_FDS;
  const req = header.request;
  const fail = (e: ProtocolError, spec?: RequestSpec, form?: MessageForm): MessageCheck => ({
    ...(spec ? { spec } : {}),
    ...(form ? { form } : {}),
    error: e,
  });
  if (nfds > maxFds) {
    return fail(new ProtocolError('too-many-fds', `${nfds} fds attached, at most ${maxFds} accepted`, req), lookupRequest(req, space));
  }
  const spec = lookupRequest(req, space);
  if (!spec) return fail(new ProtocolError('unknown-request', `unknown ${space} request ${req}`, req));
  const forms = formsFor(spec, header.flags);
  const fitting = forms.filter((f) => payloadSizeFits(f.kind, payload.length));
  if (fitting.length === 0) {
    const want = forms.map((f) => f.kind).join(' or ');
    return fail(new ProtocolError('size-mismatch', `${spec.name}: size ${payload.length} fits no ${want} payload`, req), spec);
  }
  // Several reply shapes can share a size (an 8-byte ack and an 8-byte result, say): the
  // message is valid if any of them decodes with the fds it carries; the first failure
  // is the one reported.
  let firstFailure: MessageCheck | undefined;
  for (const form of fitting) {
    let decoded: Payload;
    try {
      decoded = decodePayload(form.kind, payload);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      firstFailure ??= fail(new ProtocolError(e.code, `${spec.name}: ${e.message}`, req), spec, form);
      continue;
    }
    const { min, max } = expectedFdCount(form.fds, decoded);
    if (nfds < min || nfds > max) {
      const want = min === max ? String(min) : `${min}..${max}`;
      firstFailure ??= fail(new ProtocolError('fd-count', `${spec.name}: expected ${want} fds, received ${nfds}`, req), spec, form);
      continue;
    }
    return { spec, form, decoded };
  }
  return firstFailure!;
}

function isTyped(p: Payload | Uint8Array | undefined): p is Payload {
  return p !== undefined && !(p instanceof Uint8Array);
}

/** Wire bytes of a message, plus the fds to attach. Throws `ProtocolError` when validation fails. */
export function encode<F>(msg: Message<F>, opts: EncodeOptions = {}): EncodedMessage<F> {
  const validate = opts.validate ?? true;
  const space = opts.space ?? 'frontend';
  const fds = msg.fds ?? [];
  const p = msg.payload;
  if (validate && isTyped(p)) {
    const spec = lookupRequest(msg.request, space);
    if (!spec) throw new ProtocolError('unknown-request', `unknown ${space} request ${msg.request}`, msg.request);
    const kinds = formsFor(spec, msg.flags).map((f) => f.kind);
    if (!kinds.includes(p.kind)) {
      throw new ProtocolError('wrong-payload-kind', `${spec.name} carries ${kinds.join(' or ')}, not ${p.kind}`, msg.request);
    }
  }
  const body = p === undefined ? new Uint8Array(0) : isTyped(p) ? encodePayload(p, { validate }) : p;
  const header: MessageHeader = { request: msg.request, flags: msg.flags, size: body.length };
  if (validate) {
    if ((msg.flags & VERSION_MASK) !== VERSION) {
      throw new ProtocolError('bad-version', `flags 0x${msg.flags.toString(16)}: version must be 1`, msg.request);
    }
    const maxPayload = opts.maxPayload ?? DPDK_22_11_MAX_PAYLOAD;
    if (body.length > maxPayload) {
      throw new ProtocolError('payload-too-large', `payload of ${body.length} bytes, receiver accepts ${maxPayload}`, msg.request);
    }
    const check = checkMessage(header, body, fds.length, opts);
    if (check.error) throw check.error;
  }
  const bytes = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader(header, bytes);
  bytes.set(body, HEADER_SIZE);
  return { bytes, fds };
}

export interface RequestOptions<F> {
  /** Set NEED_REPLY (only meaningful with REPLY_ACK negotiated). */
  readonly needReply?: boolean;
  readonly fds?: readonly F[];
}

/** A request as QEMU and DPDK build them: flags 0x1, or 0x9 with NEED_REPLY. */
export function makeRequest<F = never>(request: number, payload?: Payload | Uint8Array, opts: RequestOptions<F> = {}): Message<F> {
  return {
    request,
    flags: requestFlags(opts.needReply ?? false),
    ...(payload !== undefined ? { payload } : {}),
    fds: opts.fds ?? [],
  };
}

/**
 * The reply to `to`, built as DPDK's `send_vhost_reply` does: same request code, flags with
 * version/NEED_REPLY replaced by VERSION|REPLY (0x5 for any ordinary request).
 */
export function makeReply<F = never>(
  to: { readonly request: number; readonly flags?: number },
  payload?: Payload | Uint8Array,
  fds: readonly F[] = [],
): Message<F> {
  return {
    request: to.request,
    flags: replyFlagsFor(to.flags ?? VERSION),
    ...(payload !== undefined ? { payload } : {}),
    fds,
  };
}

/**
 * A REPLY_ACK answer: u64 0 for success; for failure DPDK sends exactly 1. A bigint is sent
 * as given (QEMU's back-end channel answers `!!ret`, other peers may send any non-zero value).
 */
export function makeAck(to: { readonly request: number; readonly flags?: number }, result: boolean | bigint): Message<never> {
  const value = typeof result === 'bigint' ? result : result ? 0n : 1n;
  return makeReply(to, { kind: 'ack', value });
}
