import type { Fd, FdKind } from '../fd.ts';
import { TransportError } from '../errors.ts';
import { EVENTFD_MAX } from '../eventfd.ts';
import { GuestMemory, type RegionSpec } from '../../memory/guest-memory.ts';
import {
  OsError,
  PAGE_SIZE,
  errno,
  errnoName,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  fdTarget,
  fileSize,
  memfdCreate,
  mmapPlaceholder,
  mmapShared,
  munmap,
  pollNow,
  sysClose,
  sysDup,
  viewOf,
  watchFd,
  type FdWatch,
} from './libc.ts';

/**
 * OS file descriptors as `Fd` handles.
 *
 * One handle owns one OS fd number and closes it exactly once (`close()` is idempotent).
 * `dup()` makes a new OS fd for the same open file, as dup(2) does; received fds become
 * new handles owned by the receiver. Every open handle is in a `RealFdRegistry` from
 * creation to close, and every live mapping too, so a test can assert nothing leaked
 * (and cross-check with /proc/self/fd).
 *
 * Unlike the in-process model, `fd` is the kernel's number: unique among open fds, but
 * reused after a close.
 */
export class RealFdRegistry {
  private readonly open = new Map<number, RealFdBase>();
  private readonly maps = new Set<Mapping>();

  constructor(readonly name = 'process') {}

  /** @internal */
  register(h: RealFdBase): void {
    const prev = this.open.get(h.fd);
    // The kernel never hands out an open number twice: a clash means someone closed an fd behind our back.
    if (prev !== undefined && prev.osFdOpen) throw new Error(`fd ${h.fd} registered twice (${prev.describe()} and ${h.describe()})`);
    this.open.set(h.fd, h);
  }

  /** @internal */
  unregister(h: RealFdBase): void {
    if (this.open.get(h.fd) === h) this.open.delete(h.fd);
  }

  /** @internal */
  addMapping(m: Mapping): void {
    this.maps.add(m);
  }

  /** @internal */
  removeMapping(m: Mapping): void {
    this.maps.delete(m);
  }

  /** Handles not yet closed. */
  openHandles(): RealFdBase[] {
    return [...this.open.values()];
  }

  /** Mappings not yet released. */
  openMappings(): Mapping[] {
    return [...this.maps];
  }

  /** One line per open handle and live mapping, for leak reports. */
  describeOpen(): string[] {
    return [...this.openHandles().map((h) => h.describe()), ...this.openMappings().map((m) => m.describe())];
  }
}

/** The registry used when none is given. */
export const defaultRealRegistry = new RealFdRegistry();

export abstract class RealFdBase implements Fd {
  abstract readonly kind: FdKind;
  /** How this handle came to be: 'created', 'dup of fd 5', 'received on …'. */
  origin: string;
  private isClosed = false;
  private osOpen = true;

  constructor(
    readonly fd: number,
    readonly registry: RealFdRegistry,
    origin: string,
  ) {
    this.origin = origin;
    registry.register(this);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** A new handle on a new OS fd for the same open file. */
  dup(origin?: string): this {
    this.assertOpen('dup');
    return this.wrap(sysDup(this.fd), origin ?? `dup of fd ${this.fd}`);
  }

  /** Closes the OS fd once; later calls do nothing. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.closing() === 'defer') return;
    this.closeOsFd();
  }

  /** The OS fd is still open: not closed yet, or closed by its owner but still finishing (a socket flushing its queue). */
  get osFdOpen(): boolean {
    return this.osOpen;
  }

  /** Closes the OS fd and leaves the registry; runs once, at close or when a deferred close finishes. */
  protected closeOsFd(): void {
    if (!this.osOpen) return;
    this.osOpen = false;
    this.registry.unregister(this);
    const r = sysClose(this.fd);
    // EBADF means the number was closed elsewhere: an ownership bug that must not pass silently.
    if (r === -errno('EBADF')) throw new OsError('close', -r, 'EBADF', `fd ${this.fd} (${this.kind}) was already closed by someone else`);
  }

  describe(): string {
    return `fd ${this.fd} ${this.kind} ${this.label()} (${this.origin})${this.isClosed && this.osOpen ? ' closing' : ''}`;
  }

  /** The kernel's name for the open file, e.g. '/memfd:guest (deleted)'. */
  target(): string {
    return this.osOpen ? fdTarget(this.fd) : 'closed';
  }

  protected label(): string {
    return this.osOpen ? `'${this.target()}'` : '';
  }

  /** A handle of this class for a new OS fd. */
  protected abstract wrap(fd: number, origin: string): this;

  /**
   * Per-handle cleanup just before the OS fd is closed. Returning 'defer' keeps the OS fd
   * (and the registry entry) until the subclass calls `closeOsFd()` itself.
   */
  protected closing(): void | 'defer' {}

  protected assertOpen(op: string): void {
    if (this.isClosed) throw new TransportError('EBADF', `${op} on closed fd ${this.fd} (${this.kind})`);
  }
}

// ---- memfd and mappings -------------------------------------------------------------

/**
 * A memory file: a memfd we created, or any mappable file received from a peer (QEMU may
 * send a hugetlbfs or tmpfs file for guest memory). Fds of unknown type received from a
 * peer are also delivered as this class (FdKind has no other name for them); mapping
 * those fails with a typed error.
 */
export class RealMemFd extends RealFdBase {
  readonly kind = 'memfd' as const;

  /** memfd_create + ftruncate to `size` bytes (zeroed), sealed against shrinking. */
  static create(name: string, size: number, registry: RealFdRegistry = defaultRealRegistry): RealMemFd {
    if (!Number.isSafeInteger(size) || size <= 0) throw new TransportError('EINVAL', `memfd size ${size}`);
    return new RealMemFd(memfdCreate(name, size), registry, 'created');
  }

  /** Current file size (fstat). */
  get size(): number {
    this.assertOpen('size');
    return fileSize(this.fd);
  }

  /**
   * Maps [offset, offset+length) shared, read-write. The range must lie inside the file:
   * a page past the end would raise SIGBUS on access. The mapping outlives this handle,
   * as in the kernel; release it exactly once with `Mapping.release()`.
   */
  map(offset = 0, length?: number, label?: string): Mapping {
    this.assertOpen('map');
    const size = fileSize(this.fd);
    const len = length ?? size - offset;
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(len) || len <= 0 || offset + len > size) {
      throw new TransportError('EINVAL', `map [${offset}, +${len}) of fd ${this.fd}: file has ${size} bytes`);
    }
    // mmap offsets must be page-aligned; vhost-user mmap_offset need not be.
    const base = offset - (offset % PAGE_SIZE);
    const delta = offset - base;
    const addr = mmapShared(this.fd, delta + len, base);
    return new Mapping(addr, delta + len, delta, len, this.registry, label ?? `fd ${this.fd} [${offset}, +${len})`);
  }

  protected override wrap(fd: number, origin: string): this {
    return new RealMemFd(fd, this.registry, origin) as this;
  }
}

/** Returns the address range of a released mapping once no JS object can reach its buffer. */
const placeholders = new FinalizationRegistry<{ addr: bigint; length: number }>(({ addr, length }) => {
  try {
    munmap(addr, length);
  } catch {
    // Nothing useful to do in a finalizer; the range stays reserved.
  }
});

/**
 * One mmap of a memory file. Access goes through `buffer` / `bytes()`, which throw
 * `TransportError('EBADF')` once the mapping is released, so code that asks for memory
 * after release gets a typed error instead of touching freed pages.
 *
 * Views taken before `release()` must not be used after it. As a second line of defence
 * they cannot crash the process either: release replaces the shared pages with private
 * zero pages in one step (MAP_FIXED), so a stale view reads zeros and its writes reach
 * no one; that placeholder range is unmapped when the buffer is garbage-collected.
 *
 * `buffer` is a plain ArrayBuffer (koffi cannot make a SharedArrayBuffer over foreign
 * memory): Atomics load/store/compareExchange work on it, Atomics.wait does not, and a
 * worker thread cannot receive it (a worker maps the fd itself).
 */
export class Mapping {
  private ab: ArrayBuffer | undefined;
  private isReleased = false;

  /** @internal Use RealMemFd.map. */
  constructor(
    private readonly addr: bigint,
    private readonly mappedLength: number,
    /** Offset of the requested range inside `buffer` (the page-alignment slack). */
    readonly byteOffset: number,
    /** Length of the requested range. */
    readonly size: number,
    private readonly registry: RealFdRegistry,
    readonly label: string,
  ) {
    this.ab = viewOf(addr, mappedLength);
    registry.addMapping(this);
  }

  get released(): boolean {
    return this.isReleased;
  }

  /** The whole mapped range (page-aligned start); the requested range starts at `byteOffset`. */
  get buffer(): ArrayBuffer {
    if (this.ab === undefined) throw new TransportError('EBADF', `mapping ${this.label} was released`);
    return this.ab;
  }

  /** A byte view of [offset, offset+length) of the requested range. */
  bytes(offset = 0, length = this.size - offset): Uint8Array {
    const buf = this.buffer;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new TransportError('EINVAL', `bytes [${offset}, +${length}) of a ${this.size}-byte mapping`);
    }
    return new Uint8Array(buf, this.byteOffset + offset, length);
  }

  /** A GuestMemory region over this mapping (the region must not outlive the mapping: see MappedGuestMemory). */
  regionSpec(gpa: number, uva = gpa): RegionSpec {
    return { gpa, uva, size: this.size, buffer: this.buffer, offset: this.byteOffset };
  }

  /** Unmaps the shared memory, once; later calls do nothing. */
  release(): void {
    if (this.isReleased) return;
    this.isReleased = true;
    const ab = this.ab;
    this.ab = undefined;
    this.registry.removeMapping(this);
    mmapPlaceholder(this.addr, this.mappedLength);
    if (ab !== undefined) placeholders.register(ab, { addr: this.addr, length: this.mappedLength });
  }

  describe(): string {
    return `mapping ${this.label} (${this.size} bytes${this.isReleased ? ', released' : ''})`;
  }
}

export interface MappedRegion {
  gpa: number;
  /** Front-end virtual address; defaults to gpa. */
  uva?: number;
  mapping: Mapping;
}

/**
 * GuestMemory over real mappings, owning them: `memory` is handed out until `release()`,
 * which releases every mapping once and makes `memory` throw. Holders of the GuestMemory
 * must drop it at release (ring code keeps no copy of its own), which is what makes the
 * memory droppable as a whole.
 */
export class MappedGuestMemory {
  private mem: GuestMemory | undefined;
  private readonly mappings: Mapping[];

  constructor(regions: readonly MappedRegion[]) {
    this.mappings = regions.map((r) => r.mapping);
    try {
      this.mem = new GuestMemory(regions.map((r) => r.mapping.regionSpec(r.gpa, r.uva ?? r.gpa)));
    } catch (e) {
      this.release();
      throw e;
    }
  }

  get released(): boolean {
    return this.mem === undefined;
  }

  get memory(): GuestMemory {
    if (this.mem === undefined) throw new TransportError('EBADF', 'guest memory was released');
    return this.mem;
  }

  release(): void {
    this.mem = undefined;
    for (const m of this.mappings) m.release();
  }
}

// ---- eventfd ------------------------------------------------------------------------

/**
 * An eventfd (non-blocking, close-on-exec): writes add to a 64-bit counter, a read takes
 * it (or 1 in semaphore mode). The same file shared with a peer over SCM_RIGHTS is the
 * vhost-user kick/call channel.
 */
export class RealEventFd extends RealFdBase {
  readonly kind = 'eventfd' as const;
  private watch: FdWatch | undefined;
  private readonly listeners = new Set<() => void>();

  static create(initial: number = 0, opts: { semaphore?: boolean; registry?: RealFdRegistry } = {}): RealEventFd {
    if (!Number.isInteger(initial) || initial < 0 || initial > 0xffffffff) throw new TransportError('EINVAL', `eventfd initial value ${initial}`);
    return new RealEventFd(eventfdCreate(initial, opts.semaphore ?? false), opts.registry ?? defaultRealRegistry, 'created');
  }

  /** Adds n. Throws EAGAIN if the count would pass EVENTFD_MAX, EINVAL for n outside [0, EVENTFD_MAX]; 0 does nothing. */
  write(n: bigint | number = 1n): void {
    this.assertOpen('write');
    const v = BigInt(n);
    if (v < 0n || v > EVENTFD_MAX) throw new TransportError('EINVAL', `eventfd value ${v} outside [0, 2^64-2]`);
    if (v === 0n) return;
    const r = eventfdWrite(this.fd, v);
    if (r === -errno('EAGAIN')) throw new TransportError('EAGAIN', `eventfd fd ${this.fd} counter would overflow`);
    if (r < 0) throw new OsError('write(eventfd)', -r, errnoName(-r));
  }

  /** Takes the count; 0n when nothing is pending (where a blocking read would wait). */
  read(): bigint {
    this.assertOpen('read');
    const r = eventfdRead(this.fd);
    if (typeof r === 'number') throw new OsError('read(eventfd)', -r, errnoName(-r));
    return r;
  }

  /** True when a read would return non-zero (POLLIN). */
  poll(): boolean {
    this.assertOpen('poll');
    return pollNow(this.fd, { readable: true }).readable;
  }

  /**
   * Calls `cb` from the event loop while the counter is non-zero (writes from this
   * process, another process, or the kernel). The watch is level-triggered, so a
   * callback must `read()` (drain) the count or it is called again on every loop turn.
   * The listener goes away when this handle closes or the returned function is called.
   */
  onSignal(cb: () => void): () => void {
    this.assertOpen('onSignal');
    this.listeners.add(cb);
    if (!this.watch) {
      this.watch = watchFd(this.fd, () => {
        for (const l of [...this.listeners]) {
          if (this.closed) return;
          if (this.listeners.has(l)) callSafely(l);
        }
      });
    }
    this.watch.set({ readable: true });
    return () => {
      this.listeners.delete(cb);
      if (this.listeners.size === 0) this.watch?.set({});
    };
  }

  protected override wrap(fd: number, origin: string): this {
    return new RealEventFd(fd, this.registry, origin) as this;
  }

  protected override closing(): void {
    this.listeners.clear();
    this.watch?.close();
    this.watch = undefined;
  }
}

/**
 * Runs a user callback from an event-loop callback. A throw is re-raised on its own
 * (as an uncaught exception) so the transport's state, updated before the call, stays
 * consistent.
 */
export function callSafely(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}
