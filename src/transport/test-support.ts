import { Scheduler } from '../sim/scheduler.ts';
import { SocketNamespace, type SocketNamespaceOptions } from './socket-namespace.ts';
import type { AnyFd } from './fd.ts';
import type { CloseInfo } from './channel.ts';
import type { SocketFd } from './socket.ts';

/** Helpers shared by the transport tests. */

export function world(seed: number | string = 1, opts: Omit<SocketNamespaceOptions, 'scheduler'> = {}): { sched: Scheduler; ns: SocketNamespace } {
  const sched = new Scheduler({ seed });
  return { sched, ns: new SocketNamespace({ scheduler: sched, ...opts }) };
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export interface Chunk {
  t: number;
  bytes: Uint8Array;
  fds: AnyFd[];
  /** Stream offset of the chunk's first byte. */
  offset: number;
}

/** Records what one end receives; closes received fds unless told to keep them. */
export class Recorder {
  readonly chunks: Chunk[] = [];
  closed: { t: number; info: CloseInfo; bytesBefore: number } | undefined;
  dataAfterClose = 0;
  private received = 0;

  constructor(
    readonly ch: SocketFd,
    private readonly sched: Scheduler,
    private readonly keepFds = false,
  ) {
    ch.onData((bytes, fds) => {
      if (this.closed) this.dataAfterClose++;
      this.chunks.push({ t: sched.now, bytes, fds, offset: this.received });
      this.received += bytes.length;
      if (!this.keepFds) for (const fd of fds) fd.close();
    });
    ch.onClose((info) => {
      this.closed = { t: this.sched.now, info, bytesBefore: this.received };
    });
  }

  get bytes(): Uint8Array {
    return concat(this.chunks.map((c) => c.bytes));
  }
}

export function bytesOf(...xs: number[]): Uint8Array {
  return Uint8Array.from(xs);
}
