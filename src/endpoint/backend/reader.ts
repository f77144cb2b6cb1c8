/**
 * DPDK 22.11's framing of the main socket (lib/vhost/vhost_user.c `read_vhost_message`,
 * socket.c `read_fd_message`): a 12-byte header with its fds, then exactly `size` payload
 * bytes. Unlike the project's MessageDecoder it does not look at the version bits (DPDK
 * 22.11 never checks them: a request with flags 0 is handled like any other) and it does not
 * interpret payloads; the only fatal conditions are DPDK's own: `size` above 632, and the
 * peer closing inside a message.
 *
 * Bytes may arrive in any chunking; fds attach to the message being read when their chunk
 * begins (the rule of protocol/decoder.ts), which is what a reader that takes the header with
 * one recvmsg sees when senders put each message in one sendmsg.
 */
import { HEADER_SIZE, requestName, type MessageHeader } from '../../protocol/index.ts';
import { StreamBuffer } from '../../protocol/stream-buffer.ts';
import type { AnyFd } from '../../transport/index.ts';
import { configEvent, errorEvent, type VhostLogEvent } from './log.ts';
import { dpdkHandlerName, type IncomingMessage } from './vhost-device.ts';

export type ReadResult =
  | { readonly kind: 'message'; readonly message: IncomingMessage }
  /** The stream can no longer be read: DPDK closes the connection. */
  | { readonly kind: 'fatal'; readonly events: VhostLogEvent[]; readonly header: MessageHeader };

export class DpdkMessageReader {
  private readonly stream = new StreamBuffer<AnyFd>();
  private dead = false;

  constructor(
    private readonly maxPayload = 632,
    private readonly patch = 11,
  ) {}

  get bufferedBytes(): number {
    return this.stream.bufferedBytes;
  }

  /** Buffers a chunk. After a fatal result or `close`, the fds are closed and the bytes dropped. */
  push(chunk: Uint8Array, fds: readonly AnyFd[] = []): void {
    if (this.dead) {
      for (const fd of fds) fd.close();
      return;
    }
    if (chunk.length === 0) {
      for (const fd of fds) fd.close();
      return;
    }
    this.stream.push(chunk, fds);
  }

  /** The next whole message, a fatal framing error, or undefined until more bytes arrive. */
  next(): ReadResult | undefined {
    if (this.dead) return undefined;
    const header = this.stream.peekHeader();
    if (header === undefined) return undefined;
    if (header.size > this.maxPayload) {
      this.dead = true;
      const events = [errorEvent('invalid-msg-size', `invalid msg size: ${header.size | 0}`), this.readFailed(header.request)];
      this.dropAll();
      return { kind: 'fatal', events, header };
    }
    const whole = this.stream.take(header);
    if (whole === undefined) return undefined;
    return { kind: 'message', message: { header, payload: whole.payload, fds: whole.fds } };
  }

  /**
   * The peer closed. Returns DPDK's log for how the stream ended: "vhost peer closed" on a
   * message boundary (or after a header whose payload never started, where read() returns 0),
   * otherwise the short-read errors. Closes any fds still held.
   */
  close(): VhostLogEvent[] {
    if (this.dead) return [];
    this.dead = true;
    const have = this.bufferedBytes;
    let events: VhostLogEvent[];
    if (have === 0 || have === HEADER_SIZE) {
      events = [configEvent('INFO', 'vhost peer closed', { kind: 'peer-closed' })];
    } else if (have < HEADER_SIZE) {
      events = [errorEvent('unexpected-header-size', 'Unexpected header size read'), this.readFailed(undefined)];
    } else {
      const header = this.stream.peekHeader()!;
      events = [errorEvent('read-control-failed', 'read control message failed'), this.readFailed(header.request)];
    }
    this.dropAll();
    return events;
  }

  /** Drops everything without a log (the connection was closed locally). */
  discard(): void {
    this.dead = true;
    this.dropAll();
  }

  private readFailed(request: number | undefined): VhostLogEvent {
    if (this.patch < 2 || request === undefined) return errorEvent('read-failed', 'vhost read message failed');
    const name = dpdkHandlerName(request);
    return errorEvent('read-failed', name !== undefined ? `vhost read message for ${name} failed` : 'vhost read message failed');
  }

  private dropAll(): void {
    for (const fd of this.stream.drain()) if (!fd.closed) fd.close();
  }
}

/** Name for logs of a request that may have no handler. */
export function dpdkRequestLabel(request: number): string {
  return dpdkHandlerName(request) ?? requestName(request);
}
