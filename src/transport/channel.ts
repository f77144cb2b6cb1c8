import type { AnyFd, Fd } from './fd.ts';
import type { TransportError } from './errors.ts';

/**
 * One end of a connected stream socket, as endpoint code sees it. The in-process model
 * (`SocketFd`) and the real AF_UNIX transport both implement it.
 *
 * - `send` is one message, as one `sendmsg`: the bytes and the fds go together, and
 *   the fds arrive with the first chunk of those bytes. The peer may receive the bytes
 *   split into several chunks, or joined with neighbouring messages, as a stream
 *   socket allows; a reader must reassemble (the protocol decoder does).
 * - Failures a peer can cause at any time are returned, not thrown: `EPIPE` once the
 *   connection is shut down for writing, `EBADF` after this end was closed.
 * - `onClose` fires once, after every byte the peer sent before closing has been
 *   delivered through `onData`; it does not fire for a local `close()`.
 */
export interface Channel<F extends Fd = AnyFd> {
  /** This end's label, unique per host. */
  readonly id: string;
  /** The peer end's label. */
  readonly peer: string;
  /** True after this end's `close()`. */
  readonly closed: boolean;
  /** True once the peer's close (or a reset) has been observed. */
  readonly peerClosed: boolean;
  send(bytes: Uint8Array, fds?: readonly F[]): TransportError | undefined;
  /**
   * Sets the one reader of this end (a new call replaces the previous reader). The
   * received fds are new handles owned by the callee, who must close them.
   */
  onData(cb: DataCallback<F>): void;
  onClose(cb: CloseCallback): void;
  close(): void;
}

export type DataCallback<F extends Fd = AnyFd> = (chunk: Uint8Array, fds: F[]) => void;
export type CloseCallback = (info: CloseInfo) => void;

export interface CloseInfo {
  /**
   * 'eof': the peer closed (or the connection was cut) after its data; 'reset': the
   * peer's end went away with data still unread on its side (Linux reports
   * ECONNRESET then), or a connection never accepted was dropped by its listener.
   */
  reason: 'eof' | 'reset';
}
