/**
 * Why a front-end operation failed. Each failure carries the text the real front-end logs
 * for it (`upstream`), so a model run and a real log can be read side by side.
 */
export type FrontendErrorCode =
  /** A send failed: the connection is shut down (EPIPE) or this end is closed (EBADF). */
  | 'transport'
  /** The connection closed while a reply was awaited (QEMU "Read 0 instead of 12"). */
  | 'eof'
  /** The connection closed inside a reply. */
  | 'truncated'
  /** A reply whose flags are not exactly VERSION|REPLY (0x5). */
  | 'bad-reply-flags'
  /** A reply that echoes another request code. */
  | 'unexpected-request'
  /** A reply of the wrong size for its request. */
  | 'bad-reply-size'
  /** The byte stream cannot be framed any more (bad version bits, payload above the reader's limit). */
  | 'bad-framing'
  /** REPLY_ACK answered non-zero. */
  | 'nack'
  /** virtio-user: GET_VRING_BASE answered for another ring. */
  | 'bad-vring-index'
  /** QEMU: the back-end lacks feature bits the guest acked on an earlier connection. */
  | 'features-lacking'
  /** QEMU: the back-end supports fewer queue pairs than configured. */
  | 'queue-num'
  /** QEMU: IOMMU_PLATFORM offered without SLAVE_REQ + REPLY_ACK. */
  | 'iommu'
  /** QEMU (inflight on): GET_INFLIGHT_FD answered without the memfd. */
  | 'inflight'
  /** virtio-user: the device did not keep FEATURES_OK. */
  | 'features-ok'
  /** SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES (QEMU -EINVAL). */
  | 'no-protocol-features'
  /** listen()/connect() failed. */
  | 'socket';

export class FrontendError extends Error {
  override readonly name = 'FrontendError';
  constructor(
    readonly code: FrontendErrorCode,
    message: string,
    /** Request code of the message involved, if any. */
    readonly request?: number,
    /** The line the real front-end logs for this failure. */
    readonly upstream?: string,
  ) {
    super(message);
  }
}
