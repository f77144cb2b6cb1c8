import { HEADER_SIZE, decodeHeader, type MessageHeader } from './header.ts';

/**
 * The byte side of reading a vhost-user stream: chunks in any size, the fds that came
 * with each chunk, and whole messages out. fds attach to the message being read when
 * their chunk begins (see decoder.ts). What counts as valid or fatal is the reader's
 * business: the codec's MessageDecoder and DPDK's more lenient reader share this.
 */
export class StreamBuffer<F> {
  private buf = new Uint8Array(256);
  private start = 0; // first unread byte in buf
  private end_ = 0; // one past the last buffered byte in buf
  private consumed = 0; // stream offset of buf[start]
  private groups: { readonly at: number; readonly fds: readonly F[] }[] = [];

  /** Bytes received but not yet taken as part of a message. */
  get bufferedBytes(): number {
    return this.end_ - this.start;
  }
  /** Stream offset of the next unread byte. */
  get offset(): number {
    return this.consumed;
  }

  /** Buffers a non-empty chunk and the fds that came with it. */
  push(chunk: Uint8Array, fds: readonly F[]): void {
    if (fds.length > 0) this.groups.push({ at: this.consumed + this.bufferedBytes, fds: [...fds] });
    this.ensure(chunk.length);
    this.buf.set(chunk, this.end_);
    this.end_ += chunk.length;
  }

  /** The header at the read position, once its 12 bytes are in. */
  peekHeader(): MessageHeader | undefined {
    return this.bufferedBytes < HEADER_SIZE ? undefined : decodeHeader(this.buf, this.start);
  }

  /** Takes the message whose header `peekHeader` gave, once all of it is in: a copy of its payload and its fds. */
  take(header: MessageHeader): { payload: Uint8Array; fds: F[]; offset: number } | undefined {
    const total = HEADER_SIZE + header.size;
    if (this.bufferedBytes < total) return undefined;
    const offset = this.consumed;
    const payload = this.buf.slice(this.start + HEADER_SIZE, this.start + total);
    const fds = this.takeFds(offset + total);
    this.start += total;
    this.consumed += total;
    return { payload, fds, offset };
  }

  /** Drops every buffered byte and hands back the fds not yet taken (the caller closes them). */
  drain(): F[] {
    const fds = this.groups.flatMap((g) => g.fds);
    this.groups = [];
    this.consumed += this.bufferedBytes;
    this.start = this.end_ = 0;
    return fds;
  }

  private takeFds(endOffset: number): F[] {
    const out: F[] = [];
    let i = 0;
    while (i < this.groups.length && this.groups[i]!.at < endOffset) {
      out.push(...this.groups[i]!.fds);
      i++;
    }
    if (i > 0) this.groups.splice(0, i);
    return out;
  }

  private ensure(extra: number): void {
    if (this.end_ + extra <= this.buf.length) return;
    const live = this.end_ - this.start;
    if (live + extra <= this.buf.length / 2) {
      // Plenty of room once the consumed prefix is dropped.
      this.buf.copyWithin(0, this.start, this.end_);
    } else {
      let cap = this.buf.length * 2;
      while (cap < live + extra) cap *= 2;
      const nb = new Uint8Array(cap);
      nb.set(this.buf.subarray(this.start, this.end_));
      this.buf = nb;
    }
    this.start = 0;
    this.end_ = live;
  }
}
