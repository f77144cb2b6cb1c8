/**
 * Real OS fds as the model's fd handles, so the sans-IO `VhostUserDevice` — which narrows
 * what it receives with `instanceof MemFd` / `instanceof EventFd` — runs unchanged on fds
 * that arrived over a real AF_UNIX socket.
 *
 * - `RealBackedEventFd` is an `EventFd` whose write/read/poll/onSignal go to a `RealEventFd`.
 * - `RealBackedMemFd` is a `MemFd` whose `buffer` is an mmap of the real file (`RealMemFd.map`),
 *   made on first use, so fds the device refuses or never maps are never mapped. Any other
 *   received file (a socket, say) is wrapped the same way, as the real transport itself
 *   delivers unknown kinds as memory files; the device then refuses to map it (its size is
 *   the file's, 0 for a socket), and never writes to it.
 *
 * Each adapter owns exactly one real fd and closes it when it is closed. Its number in the
 * adapter registry is the kernel's, so the device's log lines ("vring kick idx:0 file:57")
 * name real fds, as DPDK's do.
 *
 * Mappings: the in-process MemFd promises that a buffer taken from it stays usable after the
 * handle is closed, as a real mapping outlives its fd (the device relies on it for the dirty
 * log, whose fd DPDK closes right after mmap). So closing an adapter does not unmap: the
 * mapping is *retired*, and `sweep(inUse)` releases every retired mapping whose buffer the
 * device no longer references. The glue sweeps after each message and after tearing a
 * connection down, so each mapping is released exactly once, never while referenced.
 *
 * The one liberty taken: a mapping is a plain `ArrayBuffer` (koffi cannot wrap foreign memory
 * in a SharedArrayBuffer), handed out through MemFd's `SharedArrayBuffer`-typed `buffer`. The
 * device only gives it to GuestMemory, DirtyLog and the inflight views, which use typed arrays
 * and Atomics load/store/exchange — all valid on a non-shared buffer; nothing on this path
 * posts it to a worker or waits on it.
 */
import { performance } from 'node:perf_hooks';
import {
  EventFd,
  EventFdObject,
  FdRegistry,
  MemFd,
  MemFdObject,
  TransportError,
  type AnyFd,
  type FdHandle,
  type TransportRng,
  type TransportScheduler,
} from '../../transport/index.ts';
import { RealEventFd, RealMemFd, RealSocketFd, type Mapping, type RealFd, type RealFdRegistry } from '../../transport/real/index.ts';

/** Seconds since the Unix epoch (sub-millisecond), comparable with testpmd's line stamps (ms). */
export function epochSeconds(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}

/** A `TransportRng` from Math.random: nothing on the real path draws from it for decisions that must replay. */
const mathRng: TransportRng = {
  nextU32: () => Math.floor(Math.random() * 0x1_0000_0000) >>> 0,
  float: () => Math.random(),
  int: (lo, hi) => lo + Math.floor(Math.random() * (hi - lo + 1)),
  fork: () => mathRng,
};

/** The model's scheduler interface in real time (Node timers); `now` in epoch seconds. */
export class RealTimeScheduler implements TransportScheduler {
  readonly rng: TransportRng = mathRng;

  get now(): number {
    return epochSeconds();
  }

  after(dt: number, fn: () => void): { cancel(): boolean } {
    let pending = true;
    const t = setTimeout(
      () => {
        pending = false;
        fn();
      },
      Math.max(0, dt * 1000),
    );
    return {
      cancel: () => {
        if (!pending) return false;
        pending = false;
        clearTimeout(t);
        return true;
      },
    };
  }

  at(t: number, fn: () => void): { cancel(): boolean } {
    return this.after(t - this.now, fn);
  }
}

/** The real fd behind each adapter's shared object. */
const realOf = new WeakMap<object, RealFd>();

/** The real fd an adapter wraps, or undefined for a model-only handle. */
export function realFdOf(fd: AnyFd): RealFd | undefined {
  return realOf.get(fd.object);
}

/** An empty placeholder for MemFdObject's buffer: adapters never read it. */
const NO_BUFFER = new SharedArrayBuffer(0);

/**
 * The registry of adapters for one owner (a back-end): numbers are the real fds' numbers,
 * and it holds the retired mappings until they can be released.
 */
export class RealFdAdapters extends FdRegistry {
  private readonly byFd = new Map<number, FdHandle>();
  private retired: Mapping[] = [];
  private live = new Set<Mapping>();

  constructor(name = 'real-adapters', scheduler: TransportScheduler = new RealTimeScheduler()) {
    super(scheduler, name);
  }

  /** A model handle owning `fd`: an EventFd for an eventfd, a MemFd for anything else. */
  adopt(fd: RealFd): AnyFd {
    if (fd.closed) throw new TransportError('EBADF', `adopt of closed fd ${fd.fd}`);
    if (fd instanceof RealEventFd) {
      const obj = new EventFdObject(this, `real eventfd ${fd.fd}`, new SharedArrayBuffer(8));
      realOf.set(obj, fd);
      return new RealBackedEventFd(obj, fd.origin);
    }
    const obj = new MemFdObject(this, `real ${fd instanceof RealSocketFd ? 'socket' : 'file'} ${fd.fd}`, NO_BUFFER);
    realOf.set(obj, fd);
    return new RealBackedMemFd(obj, fd.origin);
  }

  /** A new memfd (for GET_INFLIGHT_FD), owned through an adapter. */
  createMemFd(name: string, size: number, registry: RealFdRegistry): MemFd {
    return this.adopt(RealMemFd.create(name, size, registry)) as MemFd;
  }

  /** @internal */
  override register(h: FdHandle): number {
    const real = realOf.get(h.object);
    // Only adapters live here: their number must be the kernel's for the log lines to mean anything.
    if (real === undefined) throw new Error(`${this.name}: only real-backed handles can be registered`);
    this.byFd.set(real.fd, h);
    return real.fd;
  }

  /** @internal */
  override unregister(h: FdHandle): void {
    if (this.byFd.get(h.fd) === h) this.byFd.delete(h.fd);
  }

  override openHandles(): FdHandle[] {
    return [...this.byFd.values()];
  }

  /** @internal A mapping made through an adapter. */
  mapped(m: Mapping): void {
    this.live.add(m);
  }

  /** @internal An adapter with a mapping was closed: the mapping waits for `sweep`. */
  retire(m: Mapping): void {
    this.retired.push(m);
  }

  /** Mappings made through adapters and not yet released. */
  get liveMappings(): number {
    for (const m of this.live) if (m.released) this.live.delete(m);
    return this.live.size;
  }

  /**
   * Releases every retired mapping whose buffer is not in `inUse` (the buffers the device
   * still references). Returns how many were released.
   */
  sweep(inUse: ReadonlySet<ArrayBufferLike>): number {
    const keep: Mapping[] = [];
    let n = 0;
    for (const m of this.retired) {
      if (m.released) continue;
      if (inUse.has(m.buffer)) {
        keep.push(m);
        continue;
      }
      m.release();
      this.live.delete(m);
      n++;
    }
    this.retired = keep;
    return n;
  }
}

/** A model EventFd over a real eventfd. */
export class RealBackedEventFd extends EventFd {
  get real(): RealEventFd {
    return realOf.get(this.object) as RealEventFd;
  }

  override write(n: bigint | number = 1n): void {
    this.assertOpen('write');
    this.real.write(n);
  }

  override read(): bigint {
    this.assertOpen('read');
    return this.real.read();
  }

  override poll(): boolean {
    this.assertOpen('poll');
    return this.real.poll();
  }

  /** Level-triggered, from the event loop (see RealEventFd.onSignal): the callback must read. */
  override onSignal(cb: () => void): () => void {
    this.assertOpen('onSignal');
    return this.real.onSignal(cb);
  }

  /** A real eventfd has no counter in shared memory: a worker must be given the fd instead. */
  override get shared(): SharedArrayBuffer {
    throw new TransportError('EINVAL', `fd ${this.fd} is a real eventfd: it has no shared counter`);
  }

  protected override clone(origin: string): this {
    return (this.registry as RealFdAdapters).adopt(this.real.dup(origin)) as this;
  }

  protected override closing(): void {
    super.closing();
    this.real.close();
  }
}

/** A model MemFd over a real memory file (or any other received file): mapped on first use. */
export class RealBackedMemFd extends MemFd {
  private mapping: Mapping | undefined;

  get real(): RealFd {
    return realOf.get(this.object)!;
  }

  /** The whole file, mapped shared on first use (see the module note on its type). */
  override get buffer(): SharedArrayBuffer {
    this.assertOpen('map');
    if (this.mapping === undefined) {
      const r = this.real;
      if (!(r instanceof RealMemFd)) throw new TransportError('EINVAL', `fd ${this.fd} is a ${r.kind}, not a memory file`);
      const m = r.map(0, undefined, `fd ${r.fd} (${r.origin})`);
      (this.registry as RealFdAdapters).mapped(m);
      this.mapping = m;
    }
    return this.mapping.buffer as unknown as SharedArrayBuffer;
  }

  /** The file's size (fstat); 0 for a socket or a closed handle. */
  override get size(): number {
    const r = this.real;
    if (this.closed || !(r instanceof RealMemFd)) return 0;
    return r.size;
  }

  /** True once `buffer` has mapped the file. */
  get isMapped(): boolean {
    return this.mapping !== undefined && !this.mapping.released;
  }

  protected override clone(origin: string): this {
    return (this.registry as RealFdAdapters).adopt(this.real.dup(origin)) as this;
  }

  protected override closing(): void {
    if (this.mapping !== undefined) (this.registry as RealFdAdapters).retire(this.mapping);
    this.mapping = undefined;
    this.real.close();
  }
}
