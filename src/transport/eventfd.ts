import { FdHandle, FdObject, type FdRegistry } from './fd.ts';
import { TransportError } from './errors.ts';

/**
 * An eventfd: a 64-bit counter. Writes add to it, a read returns the count and resets
 * it to zero (non-semaphore mode); the value means nothing to vhost-user, only "was
 * it signalled". The counter lives in an 8-byte SharedArrayBuffer and is updated
 * with Atomics, so a driver or device running in a worker thread can kick or call
 * through the same object (`eventfdAdd` / `eventfdTake` on the `shared` buffer).
 *
 * Layout, for code on other threads: `new BigInt64Array(shared, 0, 1)[0]` is the
 * counter, read as unsigned; writers add with a compare-and-swap loop that refuses
 * to pass EVENTFD_MAX and then `Atomics.notify` index 0; readers `Atomics.exchange`
 * it with 0.
 */

export const EVENTFD_BYTES = 8;
/** Largest count an eventfd holds (2^64 - 2, as in the kernel). */
export const EVENTFD_MAX = 0xfffffffffffffffen;

/** The counter view over an eventfd's shared buffer. */
export function eventfdCounter(shared: SharedArrayBuffer): BigInt64Array {
  return new BigInt64Array(shared, 0, 1);
}

/** Adds n (0 < n ≤ EVENTFD_MAX); false, with nothing changed, if the count would pass EVENTFD_MAX. */
export function eventfdAdd(counter: BigInt64Array, n: bigint): boolean {
  for (;;) {
    const cur = Atomics.load(counter, 0);
    const next = BigInt.asUintN(64, cur) + n;
    if (next > EVENTFD_MAX) return false;
    if (Atomics.compareExchange(counter, 0, cur, BigInt.asIntN(64, next)) === cur) {
      Atomics.notify(counter, 0);
      return true;
    }
  }
}

/** Returns the count and resets it to zero. */
export function eventfdTake(counter: BigInt64Array): bigint {
  return BigInt.asUintN(64, Atomics.exchange(counter, 0, 0n));
}

/** The count, unchanged. */
export function eventfdPeek(counter: BigInt64Array): bigint {
  return BigInt.asUintN(64, Atomics.load(counter, 0));
}

export class EventFdObject extends FdObject {
  readonly kind = 'eventfd' as const;
  readonly shared: SharedArrayBuffer;
  readonly counter: BigInt64Array;
  /** In-process listeners, each registered through one handle. */
  readonly listeners = new Set<SignalListener>();

  constructor(registry: FdRegistry, name: string, shared?: SharedArrayBuffer) {
    super(registry, name);
    this.shared = shared ?? new SharedArrayBuffer(EVENTFD_BYTES);
    if (this.shared.byteLength < EVENTFD_BYTES) throw new TransportError('EINVAL', `eventfd buffer of ${this.shared.byteLength} bytes`);
    this.counter = eventfdCounter(this.shared);
  }

  /** Schedules each listener once per burst of writes: a listener with a signal pending is not scheduled again. */
  signal(): void {
    const sched = this.registry.scheduler;
    for (const l of this.listeners) {
      if (l.pending) continue;
      l.pending = true;
      sched.after(
        0,
        () => {
          l.pending = false;
          if (this.listeners.has(l)) l.cb();
        },
        l.label,
      );
    }
  }

  protected override onRelease(): void {
    this.listeners.clear();
  }
}

interface SignalListener {
  readonly handle: EventFd;
  readonly cb: () => void;
  readonly label: string;
  pending: boolean;
}

export class EventFd extends FdHandle<EventFdObject> {
  readonly kind = 'eventfd' as const;

  /** A new eventfd; `shared` adopts an existing 8-byte buffer (e.g. one a worker already holds). */
  static create(registry: FdRegistry, name = 'eventfd', initial: bigint = 0n, shared?: SharedArrayBuffer): EventFd {
    const obj = new EventFdObject(registry, name, shared);
    if (initial !== 0n) {
      checkCount(initial);
      Atomics.store(obj.counter, 0, BigInt.asIntN(64, initial));
    }
    return new EventFd(obj, 'created');
  }

  /** The counter's buffer, to hand to a worker thread. */
  get shared(): SharedArrayBuffer {
    this.assertOpen('share');
    return this.object.shared;
  }

  /**
   * Adds n to the counter and schedules this object's `onSignal` listeners. Throws
   * EAGAIN if the count would pass EVENTFD_MAX (a non-blocking eventfd's write) and
   * EINVAL for n outside [0, EVENTFD_MAX]. Writing 0 changes nothing and signals nobody.
   */
  write(n: bigint | number = 1n): void {
    this.assertOpen('write');
    const v = BigInt(n);
    checkCount(v);
    if (v === 0n) return;
    if (!eventfdAdd(this.object.counter, v)) throw new TransportError('EAGAIN', `eventfd '${this.name}' counter would overflow`);
    this.object.signal();
  }

  /** Returns the count and resets it; 0n where a non-blocking read would fail with EAGAIN. */
  read(): bigint {
    this.assertOpen('read');
    return eventfdTake(this.object.counter);
  }

  /** True when a read would return non-zero (POLLIN). */
  poll(): boolean {
    this.assertOpen('poll');
    return Atomics.load(this.object.counter, 0) !== 0n;
  }

  /**
   * Calls `cb` as a scheduler event after in-process writes to this eventfd (through
   * any handle). Writes made before the event runs are coalesced into one call, as a
   * level-triggered poll would report them; the callback reads the count itself.
   * Writes from other threads do not signal: poll or read from an event instead.
   * The listener goes away when this handle closes or the returned function is called.
   */
  onSignal(cb: () => void, label = `eventfd ${this.name} signal`): () => void {
    this.assertOpen('onSignal');
    const l: SignalListener = { handle: this, cb, label, pending: false };
    this.object.listeners.add(l);
    return () => {
      this.object.listeners.delete(l);
    };
  }

  protected override clone(origin: string): this {
    return new EventFd(this.object, origin) as this;
  }

  protected override closing(): void {
    for (const l of this.object.listeners) if (l.handle === this) this.object.listeners.delete(l);
  }
}

function checkCount(v: bigint): void {
  if (v < 0n || v > EVENTFD_MAX) throw new TransportError('EINVAL', `eventfd value ${v} outside [0, 2^64-2]`);
}
