import { TransportError } from './errors.ts';
import type { MemFd } from './memfd.ts';
import type { EventFd } from './eventfd.ts';
import type { SocketFd } from './socket.ts';

/**
 * File descriptors of the in-process model.
 *
 * As in the kernel, an fd is a *handle* to a shared *object* (a memfd, an eventfd,
 * one end of a stream socket). `dup()` and receiving an fd over a socket make a new
 * handle to the same object; closing a handle never affects the others; the object is
 * released when its last handle closes (for a socket end, that is when the peer sees
 * the close). Every handle is recorded in its host's `FdRegistry` from creation to
 * close, so a test can assert that nothing leaked.
 */

export type FdKind = 'memfd' | 'eventfd' | 'socket';

/** What any transport's fd offers; the real AF_UNIX transport implements this over OS fds. */
export interface Fd {
  readonly kind: FdKind;
  /** Number of this handle (unique per registry; not reused). */
  readonly fd: number;
  readonly closed: boolean;
  dup(): Fd;
  close(): void;
}

/** Every fd handle of the model; narrow on `kind`. */
export type AnyFd = MemFd | EventFd | SocketFd;

/** The scheduling the model needs; `Scheduler` from src/sim satisfies it. */
export interface TransportScheduler {
  readonly now: number;
  at(t: number, fn: () => void, label?: string): { cancel(): boolean };
  after(dt: number, fn: () => void, label?: string): { cancel(): boolean };
  readonly rng: TransportRng;
}

/** The random draws the model makes; `Rng` from src/sim satisfies it. */
export interface TransportRng {
  nextU32(): number;
  float(): number;
  int(lo: number, hi: number): number;
  fork(label: string): TransportRng;
}

/** The shared thing behind one or more handles. */
export abstract class FdObject {
  abstract readonly kind: FdKind;
  private refs = 0;
  private isReleased = false;

  constructor(
    readonly registry: FdRegistry,
    readonly name: string,
  ) {}

  /** Open handles (including handles in flight inside a socket message). */
  get refCount(): number {
    return this.refs;
  }

  /** True once the last handle closed. */
  get released(): boolean {
    return this.isReleased;
  }

  /** @internal Called by a handle's constructor. */
  retain(): void {
    if (this.isReleased) throw new TransportError('EBADF', `${this.kind} '${this.name}' was already released`);
    this.refs++;
  }

  /** @internal Called by a handle's close. */
  drop(): void {
    this.refs--;
    if (this.refs === 0) {
      this.isReleased = true;
      this.onRelease();
    }
  }

  /** Runs once, when the last handle closes. */
  protected onRelease(): void {}
}

export abstract class FdHandle<O extends FdObject = FdObject> implements Fd {
  abstract readonly kind: FdKind;
  readonly fd: number;
  /** How this handle came to be: 'created', 'dup of fd 5', 'in flight on …', 'received on …'. */
  origin: string;
  private isClosed = false;

  constructor(
    readonly object: O,
    origin: string,
  ) {
    object.retain();
    this.origin = origin;
    this.fd = object.registry.register(this);
  }

  get registry(): FdRegistry {
    return this.object.registry;
  }

  get name(): string {
    return this.object.name;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** A new handle to the same object. */
  dup(origin?: string): this {
    this.assertOpen('dup');
    return this.clone(origin ?? `dup of fd ${this.fd}`);
  }

  /** Closes this handle (idempotent); the object is released when its last handle closes. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.registry.unregister(this);
    this.closing();
    this.object.drop();
  }

  describe(): string {
    return `fd ${this.fd} ${this.kind} '${this.name}' (${this.origin})`;
  }

  protected abstract clone(origin: string): this;

  /** Per-handle cleanup before the object's reference is dropped. */
  protected closing(): void {}

  protected assertOpen(op: string): void {
    if (this.isClosed) throw new TransportError('EBADF', `${op} on closed fd ${this.fd} (${this.kind} '${this.name}')`);
  }
}

/**
 * The fd bookkeeping of one simulated host. Holds the scheduler through which
 * in-process objects notify (eventfd signals, socket delivery).
 */
export class FdRegistry {
  private nextFd = 3;
  private readonly open = new Map<number, FdHandle>();

  constructor(
    readonly scheduler: TransportScheduler,
    readonly name = 'host',
  ) {}

  /** @internal */
  register(h: FdHandle): number {
    const fd = this.nextFd++;
    this.open.set(fd, h);
    return fd;
  }

  /** @internal */
  unregister(h: FdHandle): void {
    this.open.delete(h.fd);
  }

  /** Handles not yet closed, in creation order (in-flight ones included). */
  openHandles(): FdHandle[] {
    return [...this.open.values()];
  }

  /** One line per open handle, for leak reports. */
  describeOpen(): string[] {
    return this.openHandles().map((h) => h.describe());
  }
}
