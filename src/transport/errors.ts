/**
 * errno-like failures of the socket and fd model. Operations a peer or the environment
 * can make fail at any time (send on a connection the peer closed, connect to a path
 * with nobody listening) return a `TransportError` instead of throwing, as the system
 * calls they model return -1 with errno; the caller must handle them as ordinary
 * outcomes. Using a handle after closing it throws `EBADF` (a programming error).
 */
export type TransportErrorCode =
  | 'EPIPE' // the connection is shut down for writing (peer closed, or a cut fault)
  | 'EBADF' // the handle was closed by its owner
  | 'ENOENT' // connect/unlink: no such path
  | 'ECONNREFUSED' // connect: the path exists but nothing listens on it
  | 'EADDRINUSE' // listen: the path already exists
  | 'EINVAL' // a malformed request (empty message with fds, too many fds, foreign fd)
  | 'EAGAIN'; // eventfd counter would overflow

export class TransportError extends Error {
  override readonly name = 'TransportError';
  constructor(
    readonly code: TransportErrorCode,
    message: string,
    /** The socket path involved, when there is one. */
    readonly path?: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export function isTransportError(x: unknown): x is TransportError {
  return x instanceof TransportError;
}
