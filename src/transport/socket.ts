import { FdHandle, FdObject, type AnyFd, type FdRegistry, type TransportRng } from './fd.ts';
import { TransportError } from './errors.ts';
import type { Channel, CloseCallback, CloseInfo, DataCallback } from './channel.ts';
import { drawDelay, splitMessage, validateFaults, type ChannelFaults, type ConnectionInfo, type CutFault, type Role } from './faults.ts';

/**
 * A connected stream socket of the model: two ends (`SocketEnd`, the shared objects
 * behind socket fds) and one pipe per direction.
 *
 * A pipe is a FIFO of chunks, each with the virtual time it becomes deliverable, and
 * at most one scheduler event (the "pump") that hands the head to the reader. Order
 * is kept by the FIFO, not by event times, so random delays and the scheduler's
 * random tie-break can never reorder a direction. A close travels as a FIN item
 * behind the data, so it is seen only after everything sent before it.
 */

/** Most fds one message can carry (Linux SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE = 253;

const ROLES: readonly Role[] = ['client', 'server'];

interface DataItem {
  kind: 'data';
  bytes: Uint8Array;
  fds: AnyFd[];
  due: number;
}
interface FinItem {
  kind: 'fin';
  reason: CloseInfo['reason'];
  due: number;
}
type Item = DataItem | FinItem;

/** Counters of one direction. */
export interface PipeStats {
  messagesSent: number;
  bytesSent: number;
  fdsSent: number;
  chunksDelivered: number;
  bytesDelivered: number;
  fdsDelivered: number;
  /** Bytes dropped: a cut's truncated tail, or data pending when the reader's end went away. */
  bytesDiscarded: number;
}

class Pipe {
  private items: Item[] = [];
  private head = 0;
  private lastDue = 0;
  private pump: { cancel(): boolean } | undefined;
  /** No more sends accepted: the writer's end went away, or the connection was cut. */
  writeShut = false;
  /** The reader's end went away: nothing more is delivered. */
  readerGone = false;
  readonly stats: PipeStats = { messagesSent: 0, bytesSent: 0, fdsSent: 0, chunksDelivered: 0, bytesDelivered: 0, fdsDelivered: 0, bytesDiscarded: 0 };
  private readonly label: string;

  constructor(
    private readonly conn: Connection,
    readonly from: 0 | 1,
  ) {
    this.label = `${conn.label} ${from === 0 ? 'c→s' : 's→c'}`;
  }

  get reader(): SocketEnd {
    return this.conn.ends[1 - this.from];
  }

  hasData(): boolean {
    for (let i = this.head; i < this.items.length; i++) if (this.items[i].kind === 'data') return true;
    return false;
  }

  enqueue(bytes: Uint8Array, fds: AnyFd[]): void {
    const sched = this.conn.registry.scheduler;
    const f = this.conn.faults;
    const rng = this.conn.rng;
    let due = Math.max(sched.now + drawDelay(f.delay, rng), this.lastDue);
    let off = 0;
    for (const len of splitMessage(bytes.length, f.chunking, rng)) {
      if (off > 0) due += drawDelay(f.chunkGap, rng);
      this.items.push({ kind: 'data', bytes: bytes.subarray(off, off + len), fds: off === 0 ? fds : [], due });
      off += len;
    }
    this.lastDue = due;
    this.schedule();
  }

  /** Stops accepting sends; the reader sees `reason` after the data already queued. */
  shutdown(reason: CloseInfo['reason']): void {
    if (this.writeShut) return;
    this.writeShut = true;
    if (this.readerGone) return;
    const sched = this.conn.registry.scheduler;
    const due = Math.max(sched.now + drawDelay(this.conn.faults.delay, this.conn.rng), this.lastDue);
    this.lastDue = due;
    this.items.push({ kind: 'fin', reason, due });
    this.schedule();
  }

  /** The reader went away: drop everything, closing fds still in flight (as the kernel does). */
  discard(): void {
    this.readerGone = true;
    this.pump?.cancel();
    this.pump = undefined;
    for (let i = this.head; i < this.items.length; i++) {
      const it = this.items[i];
      if (it.kind !== 'data') continue;
      this.stats.bytesDiscarded += it.bytes.length;
      for (const fd of it.fds) fd.close();
    }
    this.items = [];
    this.head = 0;
  }

  schedule(): void {
    if (this.pump !== undefined || this.readerGone) return;
    const item = this.items[this.head];
    if (item === undefined) return;
    if (item.kind === 'data' && this.reader.dataCb === undefined) return; // waits for a reader, like unread socket data
    const sched = this.conn.registry.scheduler;
    this.pump = sched.at(Math.max(sched.now, item.due), () => this.deliver(), this.label);
  }

  private shift(): Item {
    const it = this.items[this.head++];
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return it;
  }

  private deliver(): void {
    this.pump = undefined;
    if (this.readerGone) return;
    const head = this.items[this.head];
    if (head === undefined) return;
    const reader = this.reader;
    if (head.kind === 'fin') {
      this.shift();
      reader.observeClose({ reason: head.reason });
      return;
    }
    const cb = reader.dataCb;
    if (cb === undefined) return;
    this.shift();
    let bytes = head.bytes;
    const fds = head.fds;
    if (this.conn.faults.coalesce) {
      const now = this.conn.registry.scheduler.now;
      const parts = [bytes];
      let total = bytes.length;
      for (;;) {
        const next = this.items[this.head];
        if (next === undefined || next.kind !== 'data' || next.due > now || next.fds.length > 0) break;
        this.shift();
        parts.push(next.bytes);
        total += next.bytes.length;
      }
      if (parts.length > 1) {
        bytes = new Uint8Array(total);
        let o = 0;
        for (const p of parts) {
          bytes.set(p, o);
          o += p.length;
        }
      }
    }
    for (const fd of fds) fd.origin = `received on ${reader.label}`;
    this.stats.chunksDelivered++;
    this.stats.bytesDelivered += bytes.length;
    this.stats.fdsDelivered += fds.length;
    // Reschedule before the callback so a throwing reader cannot stall the pipe.
    this.schedule();
    cb(bytes, fds);
  }
}

/** One connection: its two ends, its two directions, its faults and its random stream. */
export class Connection {
  readonly ends: [SocketEnd, SocketEnd];
  /** pipes[0] carries client→server, pipes[1] server→client. */
  readonly pipes: [Pipe, Pipe];
  private readonly cutsPending: CutFault[];
  private sentAny = 0;
  private isCut = false;

  constructor(
    readonly registry: FdRegistry,
    readonly info: ConnectionInfo,
    readonly label: string,
    readonly faults: ChannelFaults,
    readonly rng: TransportRng,
  ) {
    validateFaults(faults);
    this.cutsPending = [...(faults.cuts ?? [])];
    this.ends = [new SocketEnd(this, 0), new SocketEnd(this, 1)];
    this.pipes = [new Pipe(this, 0), new Pipe(this, 1)];
  }

  /** True once a cut fault fired. */
  get cut(): boolean {
    return this.isCut;
  }

  stats(from: Role): PipeStats {
    return { ...this.pipes[from === 'client' ? 0 : 1].stats };
  }

  /** @internal */
  send(side: 0 | 1, bytes: Uint8Array, fds: readonly AnyFd[]): TransportError | undefined {
    const pipe = this.pipes[side];
    if (pipe.writeShut || pipe.readerGone) {
      return new TransportError('EPIPE', `send on ${this.ends[side].label}: connection is shut down`);
    }
    if (fds.length > MAX_FDS_PER_MESSAGE) return new TransportError('EINVAL', `${fds.length} fds in one message (max ${MAX_FDS_PER_MESSAGE})`);
    for (const fd of fds) {
      if (fd.closed) return new TransportError('EBADF', `attached fd ${fd.fd} is closed`);
      if (fd.registry !== this.registry) return new TransportError('EINVAL', `attached fd ${fd.fd} belongs to host '${fd.registry.name}'`);
    }
    if (bytes.length === 0) {
      // A zero-length stream send carries nothing, not even its control message.
      return fds.length > 0 ? new TransportError('EINVAL', 'fds attached to an empty message') : undefined;
    }
    const nSide = ++pipe.stats.messagesSent;
    const nAny = ++this.sentAny;
    const role = ROLES[side];
    const cutAt = this.cutsPending.findIndex((c) => (c.from === 'any' ? c.message === nAny : c.from === role && c.message === nSide));
    let data = bytes.slice(); // the kernel copies at send time; the caller may reuse its buffer
    if (cutAt >= 0) {
      const cut = this.cutsPending[cutAt];
      this.cutsPending.splice(cutAt, 1);
      if (cut.bytes !== undefined && cut.bytes < data.length) {
        pipe.stats.bytesDiscarded += data.length - cut.bytes;
        data = data.subarray(0, cut.bytes);
      }
    }
    pipe.stats.bytesSent += data.length;
    if (data.length > 0) {
      const inFlight = fds.map((fd) => fd.dup(`in flight on ${pipe === this.pipes[0] ? 'c→s' : 's→c'} of ${this.label}`) as AnyFd);
      pipe.stats.fdsSent += inFlight.length;
      pipe.enqueue(data, inFlight);
    }
    if (cutAt >= 0) this.cutNow();
    return undefined;
  }

  /** Adds a cut rule to a live connection; `message` counts from the connection's start, as in `faults.cuts`. */
  addCut(cut: CutFault): void {
    validateFaults({ cuts: [cut] });
    this.cutsPending.push(cut);
  }

  /** Shuts the connection down both ways after the data already queued (a link failure now). */
  cutNow(): void {
    this.isCut = true;
    this.pipes[0].shutdown('eof');
    this.pipes[1].shutdown('eof');
  }

  /** @internal The last handle of end `side` closed. */
  endReleased(side: 0 | 1, forceReset: boolean): void {
    const inbound = this.pipes[1 - side];
    const unread = inbound.hasData();
    inbound.discard();
    this.pipes[side].shutdown(unread || forceReset ? 'reset' : 'eof');
  }
}

/** One end of a connection: the object socket fds refer to. */
export class SocketEnd extends FdObject {
  readonly kind = 'socket' as const;
  readonly label: string;
  /** @internal */ dataCb: DataCallback | undefined;
  /** @internal */ dataOwner: SocketFd | undefined;
  /** @internal */ closeCbs: { cb: CloseCallback; owner: SocketFd }[] = [];
  /** Set once the peer's close was delivered. */
  closeInfo: CloseInfo | undefined;
  /** @internal A connection dropped before accept() shows its client a reset. */
  resetOnRelease = false;

  constructor(
    readonly conn: Connection,
    readonly side: 0 | 1,
  ) {
    super(conn.registry, `${conn.label}/${ROLES[side]}`);
    this.label = this.name;
  }

  get role(): Role {
    return ROLES[this.side];
  }

  /** @internal */
  observeClose(info: CloseInfo): void {
    if (this.released || this.closeInfo !== undefined) return;
    this.closeInfo = info;
    for (const { cb } of [...this.closeCbs]) cb(info);
  }

  protected override onRelease(): void {
    this.dataCb = undefined;
    this.dataOwner = undefined;
    this.closeCbs = [];
    this.conn.endReleased(this.side, this.resetOnRelease);
  }
}

/** A socket fd: a handle to one end of a connection, usable as a `Channel`. */
export class SocketFd extends FdHandle<SocketEnd> implements Channel<AnyFd> {
  readonly kind = 'socket' as const;

  get id(): string {
    return this.object.label;
  }

  get peer(): string {
    return this.object.conn.ends[1 - this.object.side].label;
  }

  get role(): Role {
    return this.object.role;
  }

  get connection(): Connection {
    return this.object.conn;
  }

  get peerClosed(): boolean {
    return this.object.closeInfo !== undefined;
  }

  send(bytes: Uint8Array, fds: readonly AnyFd[] = []): TransportError | undefined {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('send: bytes must be a Uint8Array');
    if (this.closed) return new TransportError('EBADF', `send on closed fd ${this.fd} (${this.id})`);
    return this.object.conn.send(this.object.side, bytes, fds);
  }

  onData(cb: DataCallback): void {
    this.assertOpen('onData');
    const end = this.object;
    end.dataCb = cb;
    end.dataOwner = this;
    end.conn.pipes[1 - end.side].schedule();
  }

  onClose(cb: CloseCallback): void {
    this.assertOpen('onClose');
    const end = this.object;
    const entry = { cb, owner: this };
    end.closeCbs.push(entry);
    const info = end.closeInfo;
    if (info !== undefined) {
      // Already closed by the peer: tell the late listener, still through the scheduler.
      this.registry.scheduler.after(
        0,
        () => {
          if (end.closeCbs.includes(entry)) cb(info);
        },
        `${this.id} late close notice`,
      );
    }
  }

  protected override clone(origin: string): this {
    return new SocketFd(this.object, origin) as this;
  }

  /** Callbacks registered through this handle go with it (the end may live on through other handles). */
  protected override closing(): void {
    const end = this.object;
    if (end.dataOwner === this) {
      end.dataCb = undefined;
      end.dataOwner = undefined;
    }
    end.closeCbs = end.closeCbs.filter((e) => e.owner !== this);
  }
}

/** Creates a connected pair of socket fds: [client end, server end]. */
export function createConnection(
  registry: FdRegistry,
  info: ConnectionInfo,
  label: string,
  faults: ChannelFaults,
  rng: TransportRng,
  origins: readonly [string, string] = ['created', 'created'],
): [SocketFd, SocketFd] {
  const conn = new Connection(registry, info, label, faults, rng);
  return [new SocketFd(conn.ends[0], origins[0]), new SocketFd(conn.ends[1], origins[1])];
}
