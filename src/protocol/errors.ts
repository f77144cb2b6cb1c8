/**
 * Why a vhost-user message (or a stream of them) was refused.
 *
 * Two families, told apart by `ProtocolError.fatal`:
 *
 * - **Fatal to the stream** — the framing can no longer be trusted, so nothing after
 *   this point can be read. DPDK 22.11 closes the connection in these cases
 *   (`read_vhost_message`: "invalid msg size", "Unexpected header size read",
 *   "read control message failed"); QEMU does the same for replies ("Failed to read
 *   msg header"). A decoder that met one refuses all further input with the same error.
 * - **Per message** — the header framed the message correctly (we know where the next
 *   one starts) but its content is wrong for its request. The decoder hands the message
 *   out with the error attached and carries on; what to do about it (DPDK: ack 1 if
 *   NEED_REPLY, else close) is the endpoint's decision, not the codec's.
 */
export type ProtocolErrorCode =
  // fatal: framing lost
  | 'bad-version' // flags bits 0-1 are not 1: not a vhost-user v1 header, its size cannot be trusted
  | 'payload-too-large' // size field above the reader's limit (DPDK 22.11: 632)
  | 'truncated' // the stream ended inside a message
  // per message: well framed, wrong content
  | 'unknown-request' // no such request code in this channel's request space
  | 'size-mismatch' // payload size does not fit the request's payload kind
  | 'too-many-fds' // more fds attached than the reader accepts (DPDK: 8)
  | 'fd-count' // fd count differs from what the request carries (e.g. KICK without NOFD needs 1)
  | 'too-many-regions' // memory table nregions above 8
  | 'region-count-mismatch' // memory table nregions disagrees with the payload size
  | 'config-too-large' // config space access above 256 bytes
  | 'status-out-of-range' // device status above 0xff
  // building messages
  | 'wrong-payload-kind' // a typed payload of a kind the request (or its reply) never carries
  | 'field-out-of-range' // a typed field that does not fit its wire width
  // decoder input
  | 'fds-without-bytes'; // fds pushed with an empty chunk: a socket never delivers those

const FATAL: ReadonlySet<ProtocolErrorCode> = new Set<ProtocolErrorCode>(['bad-version', 'payload-too-large', 'truncated']);

/** True for the codes after which a byte stream cannot be resynchronised. */
export function isFatalCode(code: ProtocolErrorCode): boolean {
  return FATAL.has(code);
}

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  /** The stream is dead after this error (see the type's doc). */
  readonly fatal: boolean;
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    /** The request code of the offending message, when there was a header. */
    readonly request?: number,
    /** Byte offset in the stream of the offending message's header, when decoding a stream. */
    readonly offset?: number,
  ) {
    super(message);
    this.fatal = isFatalCode(code);
  }
}
