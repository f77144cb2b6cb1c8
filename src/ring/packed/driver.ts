import type { GuestMemory } from '../../memory/index.ts';
import { RingError, RingFullError } from '../errors.ts';
import type { RingFeatures, Segment, UsedBuffer } from '../types.ts';
import {
  PACKED_DESC_F_AVAIL,
  PACKED_DESC_F_INDIRECT,
  PACKED_DESC_F_NEXT,
  PACKED_DESC_F_USED,
  PACKED_DESC_F_WRITE,
  PACKED_DESC_SIZE,
  PACKED_EVENT_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  type PackedLayout,
} from './layout.ts';
import { translatePackedRing, type PackedViews } from './views.ts';

export interface PackedDriverOptions {
  /**
   * Where indirect tables live: one table of `perBuffer` descriptors per buffer id,
   * at gpa + id * perBuffer * 16. Needed for `add(..., { indirect: true })`.
   */
  indirectArea?: { gpa: number; perBuffer: number };
}

/** The driver's ring positions (for tests, traces and the demo). */
export interface PackedDriverPositions {
  /** Next slot the driver makes available, and the Driver Ring Wrap Counter. */
  nextAvail: number;
  availWrap: boolean;
  /** Next slot the driver polls for a used descriptor, and its used wrap counter. */
  nextUsed: number;
  usedWrap: boolean;
}

const TWO_32 = 0x1_0000_0000;

/**
 * The guest half of a packed virtqueue (virtio 1.2 §2.8): writes available
 * descriptors, decides whether to kick, and takes used descriptors back.
 *
 * Visibility: `add` makes the buffer visible at once (as Linux's
 * virtqueue_add_packed does): every descriptor but the first is written in full,
 * then the first descriptor's flags are written with a release store. `publish`
 * only runs the barrier and the kick decision ("Supplying Buffers" allows either).
 *
 * Buffer ids come from a LIFO free list (0, 1, 2, … when fresh; a reclaimed id is
 * reused first), like Linux's free_head list.
 */
export class PackedDriver<T = unknown> {
  readonly size: number;
  private readonly v: PackedViews;
  private readonly indirectGpa: number;
  private readonly indirectPer: number;

  private nextAvail = 0;
  private availWrap = true;
  private nextUsed = 0;
  private usedWrap = true;
  private free: number;
  private outstandingCount = 0;
  /** Descriptors made available since the last publish (Linux num_added). */
  private numAdded = 0;

  private readonly freeIds: Uint16Array;
  private freeTop: number;
  private readonly tokens: (T | undefined)[];
  /** Ring descriptors each outstanding id occupies; 0 when the id is free. */
  private readonly descCount: Uint16Array;
  private readonly writableLen: Float64Array;

  // IN_ORDER: ids in the order they were made available, and a pending batch.
  private readonly order: Uint16Array;
  private orderHead = 0;
  private orderCount = 0;
  private batchLast = -1;
  private batchLen = 0;

  constructor(
    private readonly mem: GuestMemory,
    readonly layout: PackedLayout,
    readonly features: RingFeatures,
    opts: PackedDriverOptions = {},
  ) {
    this.size = layout.size;
    this.v = translatePackedRing(mem, layout);
    const ia = opts.indirectArea;
    if (ia !== undefined) {
      if (!Number.isSafeInteger(ia.gpa) || ia.gpa < 0 || !Number.isInteger(ia.perBuffer) || ia.perBuffer < 1) {
        throw new RangeError('indirectArea needs a guest address and perBuffer >= 1');
      }
      // Refuse a table area that is not wholly mapped now rather than on some later add.
      mem.checkRange(ia.gpa, ia.perBuffer * PACKED_DESC_SIZE * this.size);
      this.indirectGpa = ia.gpa;
      this.indirectPer = ia.perBuffer;
    } else {
      this.indirectGpa = -1;
      this.indirectPer = 0;
    }
    const n = this.size;
    this.free = n;
    this.freeIds = new Uint16Array(n);
    for (let i = 0; i < n; i++) this.freeIds[i] = n - 1 - i;
    this.freeTop = n;
    this.tokens = new Array<T | undefined>(n).fill(undefined);
    this.descCount = new Uint16Array(n);
    this.writableLen = new Float64Array(n);
    this.order = new Uint16Array(n);
  }

  /** Zero-fills the ring and both event areas ("The descriptor ring is zero-initialized"). */
  static init(mem: GuestMemory, layout: PackedLayout): void {
    mem.fill(layout.desc, PACKED_DESC_SIZE * layout.size, 0);
    mem.fill(layout.driverEvent, PACKED_EVENT_SIZE, 0);
    mem.fill(layout.deviceEvent, PACKED_EVENT_SIZE, 0);
  }

  get freeDescriptors(): number {
    return this.free;
  }

  get inFlight(): number {
    return this.outstandingCount;
  }

  positions(): PackedDriverPositions {
    return { nextAvail: this.nextAvail, availWrap: this.availWrap, nextUsed: this.nextUsed, usedWrap: this.usedWrap };
  }

  /**
   * Makes one buffer available and returns its id. Readable segments must come
   * before writable ones. Throws TypeError/RangeError for a malformed request and
   * RingFullError when the ring has too few free descriptors; nothing is written then.
   */
  add(segments: readonly Segment[], token: T, opts?: { indirect?: boolean }): number {
    const n = segments.length;
    if (n === 0) throw new TypeError('a buffer needs at least one segment');
    let sawWritable = false;
    let total = 0;
    let writable = 0;
    for (let i = 0; i < n; i++) {
      const s = segments[i];
      if (!Number.isSafeInteger(s.addr) || s.addr < 0) throw new RangeError(`segment ${i}: address ${s.addr} is not a guest address`);
      if (s.len >>> 0 !== s.len) throw new RangeError(`segment ${i}: length ${s.len} is not a u32`);
      if (s.writable) {
        sawWritable = true;
        writable += s.len;
      } else if (sawWritable) {
        throw new TypeError(`segment ${i} is device-readable but follows a device-writable one`);
      }
      total += s.len;
    }
    if (total >= TWO_32) throw new RangeError(`buffer total length ${total} is not below 2^32`);
    const indirect = opts?.indirect === true;
    if (indirect) {
      if (!this.features.indirect) throw new TypeError('indirect descriptors need VIRTIO_F_INDIRECT_DESC');
      if (this.indirectPer === 0) throw new TypeError('indirect descriptors need PackedDriverOptions.indirectArea');
      if (n > this.indirectPer) throw new RangeError(`${n} segments do not fit an indirect table of ${this.indirectPer}`);
    }
    const needed = indirect ? 1 : n;
    // "A driver MUST NOT create a descriptor list longer than the Queue Size" (direct or indirect).
    if (n > this.size) throw new RangeError(`a list of ${n} descriptors is longer than the ring (${this.size})`);
    if (needed > this.free) throw new RingFullError(needed, this.free);

    const id = this.freeIds[--this.freeTop];
    const { d16, d32, desc16, desc32 } = this.v;
    const size = this.size;
    const head = this.nextAvail;
    const headWrap = this.availWrap;
    let headFlags: number;
    if (indirect) {
      const table = this.indirectGpa + id * this.indirectPer * PACKED_DESC_SIZE;
      // Only WRITE is meaningful inside an indirect table; ids there are reserved (spec "Indirect Flag").
      for (let i = 0; i < n; i++) {
        const s = segments[i];
        const at = table + i * PACKED_DESC_SIZE;
        this.mem.writeU64(at, s.addr);
        this.mem.writeU32(at + 8, s.len);
        this.mem.writeU16(at + 12, 0);
        this.mem.writeU16(at + 14, s.writable ? PACKED_DESC_F_WRITE : 0);
      }
      const w = desc32 + head * 4;
      d32[w] = table >>> 0;
      d32[w + 1] = Math.floor(table / TWO_32);
      d32[w + 2] = n * PACKED_DESC_SIZE;
      d16[desc16 + head * 8 + 6] = id;
      headFlags = PACKED_DESC_F_INDIRECT | (headWrap ? PACKED_DESC_F_AVAIL : PACKED_DESC_F_USED);
      this.advanceAvail(1);
    } else {
      let pos = head;
      let wrap = headWrap;
      headFlags = 0;
      for (let i = 0; i < n; i++) {
        const s = segments[i];
        const w = desc32 + pos * 4;
        d32[w] = s.addr >>> 0;
        d32[w + 1] = Math.floor(s.addr / TWO_32);
        d32[w + 2] = s.len;
        d16[desc16 + pos * 8 + 6] = id;
        // AVAIL = wrap, USED = !wrap in every element, not only the first (spec "Next Flag").
        const f =
          (s.writable ? PACKED_DESC_F_WRITE : 0) |
          (i < n - 1 ? PACKED_DESC_F_NEXT : 0) |
          (wrap ? PACKED_DESC_F_AVAIL : PACKED_DESC_F_USED);
        if (i === 0) headFlags = f;
        else d16[desc16 + pos * 8 + 7] = f; // ordered before the head's release store below
        if (++pos === size) {
          pos = 0;
          wrap = !wrap;
        }
      }
      this.advanceAvail(n);
    }
    // "Supplying Buffers": the first descriptor's flags are written last, after a
    // barrier, so the device never sees a partial chain. Atomics.store is that release.
    Atomics.store(d16, desc16 + head * 8 + 7, headFlags);

    this.free -= needed;
    this.numAdded += needed;
    this.outstandingCount++;
    this.tokens[id] = token;
    this.descCount[id] = needed;
    this.writableLen[id] = writable;
    if (this.features.inOrder) {
      let tail = this.orderHead + this.orderCount;
      if (tail >= size) tail -= size;
      this.order[tail] = id;
      this.orderCount++;
    }
    return id;
  }

  private advanceAvail(k: number): void {
    let p = this.nextAvail + k;
    if (p >= this.size) {
      p -= this.size;
      this.availWrap = !this.availWrap;
    }
    this.nextAvail = p;
  }

  /**
   * Barrier, then the kick decision from the DEVICE event area, as Linux's
   * virtqueue_kick_prepare_packed: flags != DESC → kick unless DISABLE; DESC → kick
   * iff the event offset (moved back a lap when its wrap bit is not the driver's
   * wrap counter) lies in the window of descriptors added since the last publish.
   * Like Linux, a publish with nothing added still kicks when events are enabled.
   */
  publish(): boolean {
    const newIdx = this.nextAvail;
    const oldIdx = (newIdx - this.numAdded) & 0xffff;
    this.numAdded = 0;
    const { dev16, devIdx } = this.v;
    // "Sending Available Buffer Notifications": memory barrier before reading the
    // Device Area. The head flags went out with SC Atomics.store, so these SC loads
    // cannot be reordered before them.
    const flags = Atomics.load(dev16, devIdx + 1);
    if (flags !== RING_EVENT_FLAGS_DESC) return flags !== RING_EVENT_FLAGS_DISABLE;
    const offWrap = Atomics.load(dev16, devIdx);
    let event = offWrap & 0x7fff;
    if (offWrap >>> 15 !== (this.availWrap ? 1 : 0)) event = (event - this.size) & 0xffff;
    return ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
  }

  /** True when `reclaim` would return a buffer. */
  hasUsed(): boolean {
    if (this.batchLast >= 0) return true;
    const { d16, desc16 } = this.v;
    // "Receiving Used Buffers": acquire load of the used flags (pairs with the device's release store)
    return isUsed(Atomics.load(d16, desc16 + this.nextUsed * 8 + 7), this.usedWrap);
  }

  /**
   * Takes the next used buffer ("Receiving Used Buffers"): the slot at the driver's
   * used position is used when AVAIL == USED == the driver's used wrap counter.
   * `len` is reported only when the used descriptor has WRITE (spec "Element Address
   * and Length"); otherwise 0. The position then skips the buffer's descriptor count.
   * IN_ORDER: a used id k also completes every earlier outstanding buffer, which is
   * returned first, one per call, with its full writable length (spec "In-order use
   * of descriptors": skipped buffers count as completely used).
   */
  reclaim(out: UsedBuffer<T>): boolean {
    if (this.batchLast >= 0) return this.takeInOrder(out);
    const { d16, d32, desc16, desc32 } = this.v;
    const pos = this.nextUsed;
    // "Receiving Used Buffers": acquire load of the flags before reading id/len (pairs with the device's release)
    const flags = Atomics.load(d16, desc16 + pos * 8 + 7);
    if (!isUsed(flags, this.usedWrap)) return false;
    const id = d16[desc16 + pos * 8 + 6];
    const len = (flags & PACKED_DESC_F_WRITE) !== 0 ? d32[desc32 + pos * 4 + 2] : 0;
    if (id >= this.size || this.descCount[id] === 0) {
      throw new RingError('bad-id', `device used id ${id} at slot ${pos}, which is not in flight`, pos);
    }
    if (this.features.inOrder) {
      this.batchLast = id;
      this.batchLen = len;
      return this.takeInOrder(out);
    }
    this.finish(id, len, out);
    return true;
  }

  private takeInOrder(out: UsedBuffer<T>): boolean {
    const id = this.order[this.orderHead];
    if (++this.orderHead === this.size) this.orderHead = 0;
    this.orderCount--;
    let len: number;
    if (id === this.batchLast) {
      len = this.batchLen;
      this.batchLast = -1;
    } else {
      len = this.writableLen[id];
    }
    this.finish(id, len, out);
    return true;
  }

  private finish(id: number, len: number, out: UsedBuffer<T>): void {
    const count = this.descCount[id];
    let p = this.nextUsed + count;
    if (p >= this.size) {
      p -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    this.nextUsed = p;
    this.free += count;
    this.descCount[id] = 0;
    this.outstandingCount--;
    this.freeIds[this.freeTop++] = id;
    out.token = this.tokens[id] as T;
    this.tokens[id] = undefined;
    out.len = len;
    out.id = id;
  }

  /** Driver event area flags = DISABLE: the device need not notify used buffers. */
  disableNotifications(): void {
    const { drv16, drvIdx } = this.v;
    // "Driver and Device Event Suppression": the driver area is written by the driver only; SC store.
    Atomics.store(drv16, drvIdx + 1, RING_EVENT_FLAGS_DISABLE);
  }

  /**
   * ENABLE, or under EVENT_IDX DESC at the driver's next used position (Linux
   * virtqueue_enable_cb_prepare_packed). Then a full barrier and a re-check, so a
   * buffer used while notifications were off is not missed; returns true if one is.
   */
  enableNotifications(): boolean {
    const { drv16, drvIdx } = this.v;
    if (this.features.eventIdx) {
      // "Event Suppression Structure Format": off_wrap before flags (the device reads flags, then off_wrap).
      Atomics.store(drv16, drvIdx, this.nextUsed | ((this.usedWrap ? 1 : 0) << 15));
      Atomics.store(drv16, drvIdx + 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(drv16, drvIdx + 1, RING_EVENT_FLAGS_ENABLE);
    }
    // The SC stores above and the SC load in hasUsed are not reordered: the full
    // barrier "beware the problem of missing notifications" asks for.
    return this.hasUsed();
  }

  /** EVENT_IDX: ask for a notification when the device writes the used descriptor at `offWrap`. */
  setUsedEvent(offWrap: number): void {
    if (!this.features.eventIdx) throw new TypeError('RING_EVENT_FLAGS_DESC needs VIRTIO_F_EVENT_IDX');
    if (!Number.isInteger(offWrap) || offWrap < 0 || offWrap > 0xffff) throw new RangeError(`off_wrap ${offWrap} is not a u16`);
    const { drv16, drvIdx } = this.v;
    Atomics.store(drv16, drvIdx, offWrap);
    Atomics.store(drv16, drvIdx + 1, RING_EVENT_FLAGS_DESC); // event suppression: flags last, after off_wrap
  }
}

/** A used descriptor has AVAIL == USED == the reader's used wrap counter. */
function isUsed(flags: number, wrap: boolean): boolean {
  const a = (flags & PACKED_DESC_F_AVAIL) !== 0;
  const u = (flags & PACKED_DESC_F_USED) !== 0;
  return a === u && u === wrap;
}
