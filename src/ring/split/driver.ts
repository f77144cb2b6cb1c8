import type { GuestMemory } from '../../memory/index.ts';
import { RingError, RingFullError } from '../errors.ts';
import { needEvent } from '../event.ts';
import type { RingFeatures, Segment, UsedBuffer } from '../types.ts';
import * as L from './layout.ts';
import { splitAreaSizes, type SplitLayout } from './layout.ts';
import { areaViews, SplitRingParts, type AreaViews } from './views.ts';

// Hot loops read module-local constants: under a CommonJS transform (tsx) an imported
// binding is a getter call on every use.
const AVAIL_F_NO_INTERRUPT = L.AVAIL_F_NO_INTERRUPT;
const SPLIT_DESC_F_INDIRECT = L.SPLIT_DESC_F_INDIRECT;
const SPLIT_DESC_F_NEXT = L.SPLIT_DESC_F_NEXT;
const SPLIT_DESC_F_WRITE = L.SPLIT_DESC_F_WRITE;
const SPLIT_DESC_SIZE = L.SPLIT_DESC_SIZE;
const USED_F_NO_NOTIFY = L.USED_F_NO_NOTIFY;

export interface SplitDriverOptions {
  /**
   * Where indirect tables live: one table of `perBuffer` descriptors reserved per
   * head slot, at `gpa + head * perBuffer * 16` (so tables of in-flight buffers
   * never collide). `gpa` must be 16-byte aligned.
   */
  indirectArea?: { gpa: number; perBuffer: number };
}

const U32_LIMIT = 0x1_0000_0000;

/** Used-buffer notification wishes of the driver (see `enableNotifications`). */
const NotifyMode = {
  Off: 0,
  /** Notify on the next used buffer: used_event follows the driver's used position. */
  Next: 1,
  /** EVENT_IDX only: used_event was set explicitly and stays put. */
  Explicit: 2,
} as const;
type NotifyMode = (typeof NotifyMode)[keyof typeof NotifyMode];

/**
 * The guest half of a split virtqueue (virtio 1.2 §2.7.13-14): posts buffers as
 * descriptor chains, publishes them through avail.idx, decides whether to kick, and
 * reclaims used buffers.
 *
 * Descriptor allocation: without IN_ORDER, a LIFO free list (a reclaimed chain goes
 * back on the front, in chain order); with IN_ORDER, descriptors are handed out in
 * ring order from 0 with `next = x + 1` wrapping to 0 (§2.7.5). The free list is kept
 * in driver-private memory, never re-read from the descriptor table.
 *
 * The driver starts from the indices it finds in the ring (avail.idx, which must
 * equal used.idx: nothing in flight); a ring zeroed by `SplitDriver.init` starts at 0.
 */
export class SplitDriver<T = unknown> extends SplitRingParts {
  private readonly ind: AreaViews | null;
  private readonly indPerBuffer: number;

  /** Next avail position to fill (includes buffers added but not yet published). */
  private availIdx: number;
  /** avail.idx as last stored: the `old` of the next kick decision. */
  private publishedIdx: number;
  /** Used position of the next buffer to reclaim. */
  private lastSeenUsed: number;
  /** used.idx as last loaded. */
  private shadowUsed: number;

  private freeHead = 0;
  private freeCount: number;
  private readonly nextFree: Uint16Array;
  /** Ring descriptors held by the buffer whose head is the index; 0 = not in flight. */
  private readonly chainCount: Uint16Array;
  private readonly chainTail: Uint16Array;
  private readonly availPos: Uint16Array;
  private readonly writableOf: Float64Array;
  private readonly tokens: (T | undefined)[];
  private outstanding = 0;

  /** IN_ORDER: head of the oldest buffer in flight (the next one the device completes). */
  private inOrderNext = 0;
  /** IN_ORDER: a used element covering several buffers is being expanded. */
  private batchActive = false;
  private batchId = 0;
  private batchLen = 0;

  private notifyMode: NotifyMode = NotifyMode.Next;

  /** Zero-fills the three ring areas (with room for the EVENT_IDX fields unless `eventIdx: false`). */
  static init(mem: GuestMemory, layout: SplitLayout, opts?: { eventIdx?: boolean }): void {
    const s = splitAreaSizes(layout.size, opts?.eventIdx ?? true);
    mem.fill(layout.desc, s.desc, 0);
    mem.fill(layout.avail, s.avail, 0);
    mem.fill(layout.used, s.used, 0);
  }

  constructor(
    mem: GuestMemory,
    layout: SplitLayout,
    features: RingFeatures,
    opts?: SplitDriverOptions,
  ) {
    super(mem, layout, features);
    const q = layout.size;

    if (opts?.indirectArea !== undefined) {
      const { gpa, perBuffer } = opts.indirectArea;
      if (!Number.isInteger(perBuffer) || perBuffer < 1) throw new RangeError(`indirect perBuffer ${perBuffer} is not a positive integer`);
      if (!Number.isSafeInteger(gpa) || gpa % 16 !== 0) throw new RangeError(`indirect area 0x${gpa.toString(16)} is not 16-byte aligned`);
      this.ind = areaViews(mem, gpa, q * perBuffer * SPLIT_DESC_SIZE, 4, 'indirect table area');
      this.indPerBuffer = perBuffer;
    } else {
      this.ind = null;
      this.indPerBuffer = 0;
    }

    this.nextFree = new Uint16Array(q);
    for (let i = 0; i < q; i++) this.nextFree[i] = (i + 1) & this.mask;
    this.freeCount = q;
    this.chainCount = new Uint16Array(q);
    this.chainTail = new Uint16Array(q);
    this.availPos = new Uint16Array(q);
    this.writableOf = new Float64Array(q);
    this.tokens = new Array<T | undefined>(q).fill(undefined);

    const start = Atomics.load(this.aU16, this.aIdx);
    const used = Atomics.load(this.uU16, this.uIdx);
    if (start !== used) {
      throw new RangeError(`avail.idx ${start} != used.idx ${used}: a driver can only take over a ring with nothing in flight`);
    }
    this.availIdx = this.publishedIdx = this.lastSeenUsed = this.shadowUsed = start;
    // What the driver must initialise (§2.7.10: used.flags = 0) and its own
    // suppression fields: notifications on, i.e. used_event at the next used entry.
    Atomics.store(this.aU16, this.aFlags, 0);
    if (this.eventIdx) Atomics.store(this.aU16, this.aUsedEvent, start);
    Atomics.store(this.uU16, this.uFlags, 0);
  }

  get freeDescriptors(): number {
    return this.freeCount;
  }

  /** Buffers added and not yet reclaimed. */
  get inFlight(): number {
    return this.outstanding;
  }

  /**
   * Places one buffer in the descriptor table (or in its indirect table) and its
   * head in the next avail slot. Nothing is visible to the device until `publish`.
   */
  add(segments: readonly Segment[], token: T, opts?: { indirect?: boolean }): number {
    const n = segments.length;
    if (n === 0) throw new TypeError('a buffer needs at least one segment (virtio 1.2 §2.7.13.1)');
    if (n > this.size) throw new TypeError(`a chain of ${n} descriptors is longer than the queue size ${this.size} (§2.7.5.3.1)`);
    let sawWritable = false;
    let total = 0;
    let writable = 0;
    for (let i = 0; i < n; i++) {
      const s = segments[i];
      const len = s.len;
      if (!(len >>> 0 === len)) throw new TypeError(`segment ${i}: length ${len} is not a u32`);
      if (!Number.isSafeInteger(s.addr) || s.addr < 0) throw new TypeError(`segment ${i}: address ${s.addr} is not a non-negative safe integer`);
      if (s.writable) {
        sawWritable = true;
        writable += len;
      } else if (sawWritable) {
        throw new TypeError(`segment ${i}: device-readable segment after a device-writable one (§2.7.4.2)`);
      }
      total += len;
    }
    if (total >= U32_LIMIT) throw new TypeError(`buffer of ${total} bytes: a chain must total less than 2^32 bytes (§2.7.5.2)`);
    const indirect = opts?.indirect === true;
    if (indirect) {
      if (!this.indirectOk) throw new TypeError('indirect buffer without VIRTIO_F_INDIRECT_DESC (§2.7.5.3.1)');
      if (this.ind === null) throw new TypeError('indirect buffer but the driver has no indirectArea');
      if (n > this.indPerBuffer) throw new TypeError(`${n} segments do not fit an indirect table of ${this.indPerBuffer}`);
    }
    const needed = indirect ? 1 : n;
    if (needed > this.freeCount) throw new RingFullError(needed, this.freeCount);

    const head = this.freeHead;
    const dU16 = this.dU16;
    const dU32 = this.dU32;
    let tail = head;
    if (indirect) {
      const ind = this.ind!;
      const tableGpa = ind.gpa + head * this.indPerBuffer * SPLIT_DESC_SIZE;
      const t32 = ind.base32 + head * this.indPerBuffer * 4;
      const t16 = ind.base16 + head * this.indPerBuffer * 8;
      for (let i = 0; i < n; i++) {
        const s = segments[i];
        const more = i + 1 < n;
        writeDesc(ind.u32, ind.u16, t32 + 4 * i, t16 + 8 * i, s.addr, s.len, (s.writable ? SPLIT_DESC_F_WRITE : 0) | (more ? SPLIT_DESC_F_NEXT : 0), more ? i + 1 : 0);
      }
      writeDesc(dU32, dU16, this.d32 + 4 * head, this.d16 + 8 * head, tableGpa, n * SPLIT_DESC_SIZE, SPLIT_DESC_F_INDIRECT, 0);
      this.freeHead = this.inOrder ? (head + 1) & this.mask : this.nextFree[head];
    } else {
      const inOrder = this.inOrder;
      const mask = this.mask;
      const nextFree = this.nextFree;
      let d = head;
      for (let i = 0; i < n; i++) {
        const s = segments[i];
        const more = i + 1 < n;
        const nxt = inOrder ? (d + 1) & mask : nextFree[d];
        writeDesc(dU32, dU16, this.d32 + 4 * d, this.d16 + 8 * d, s.addr, s.len, (s.writable ? SPLIT_DESC_F_WRITE : 0) | (more ? SPLIT_DESC_F_NEXT : 0), more ? nxt : 0);
        tail = d;
        d = nxt;
      }
      this.freeHead = d;
    }
    this.freeCount -= needed;
    this.chainCount[head] = needed;
    this.chainTail[head] = tail;
    this.writableOf[head] = writable;
    this.tokens[head] = token;
    this.outstanding++;
    const pos = this.availIdx;
    this.availPos[head] = pos;
    this.aU16[this.aRing + (pos & this.mask)] = head;
    this.availIdx = (pos + 1) & 0xffff;
    return head;
  }

  /**
   * Makes every added buffer visible and says whether the device wants a kick.
   * Returns false when nothing was added since the last publish.
   */
  publish(): boolean {
    const nw = this.availIdx;
    const old = this.publishedIdx;
    if (nw === old) return false;
    // §2.7.13 "Updating idx": descriptors and ring entries must be visible before the
    // index; a sequentially consistent store is at least a release.
    Atomics.store(this.aU16, this.aIdx, nw);
    this.publishedIdx = nw;
    // §2.7.13 "Notifying The Device": full barrier between storing idx and reading the
    // suppression field; SC store then SC load are not reordered.
    if (this.eventIdx) return needEvent(Atomics.load(this.uU16, this.uAvailEvent), nw, old);
    return (Atomics.load(this.uU16, this.uFlags) & USED_F_NO_NOTIFY) === 0;
  }

  /** True when the device has published used buffers not yet reclaimed. */
  hasUsed(): boolean {
    return Atomics.load(this.uU16, this.uIdx) !== this.lastSeenUsed;
  }

  /**
   * Takes the next used buffer into `out`; false when there is none.
   *
   * With IN_ORDER the device may write one used element for a batch, carrying the
   * id of the batch's last buffer and advancing used.idx by the batch size (§2.7.9).
   * The buffers before it are reported one by one, each with len = its whole
   * device-writable size: the spec says skipped buffers "are assumed to have been used
   * (read or written) by the device completely". The last gets the element's len.
   *
   * A device that reports an id not in flight, or moves used.idx past what was
   * published, gets a RingError ('bad-id' / 'used-overflow') and nothing is consumed.
   */
  reclaim(out: UsedBuffer<T>): boolean {
    const seen = this.lastSeenUsed;
    if (seen === this.shadowUsed) {
      // Acquire: the used elements are read after the index (§2.7.14).
      const idx = Atomics.load(this.uU16, this.uIdx);
      if (idx === seen) return false;
      if (((idx - seen) & 0xffff) > ((this.publishedIdx - seen) & 0xffff)) {
        throw new RingError('used-overflow', `used.idx ${idx} is more than the ${(this.publishedIdx - seen) & 0xffff} published buffers ahead of ${seen}`);
      }
      this.shadowUsed = idx;
    }
    let head: number;
    let len: number;
    const mask = this.mask;
    if (this.inOrder) {
      if (!this.batchActive) {
        const e = this.uRing + 2 * (seen & mask);
        const id = this.uU32[e];
        const elen = this.uU32[e + 1];
        // The batch must end at a buffer in flight, inside the used entries published.
        if (id >= this.size || this.chainCount[id] === 0 || ((this.availPos[id] - seen) & 0xffff) >= ((this.shadowUsed - seen) & 0xffff)) {
          throw new RingError('bad-id', `used element ${seen}: id ${id} does not end a batch of published in-flight buffers`, seen);
        }
        this.batchActive = true;
        this.batchId = id;
        this.batchLen = elen;
      }
      head = this.inOrderNext;
      if (head === this.batchId) {
        len = this.batchLen;
        this.batchActive = false;
      } else {
        len = this.writableOf[head];
      }
      this.inOrderNext = (head + this.chainCount[head]) & mask;
      this.freeCount += this.chainCount[head];
    } else {
      const e = this.uRing + 2 * (seen & mask);
      head = this.uU32[e];
      len = this.uU32[e + 1];
      if (
        head >= this.size ||
        this.chainCount[head] === 0 ||
        ((this.availPos[head] - this.publishedIdx) & 0xffff) < ((this.availIdx - this.publishedIdx) & 0xffff)
      ) {
        throw new RingError('bad-id', `used element ${seen}: id ${head} is not a published buffer in flight`, seen);
      }
      // The chain goes back on the front of the free list, in chain order.
      this.nextFree[this.chainTail[head]] = this.freeHead;
      this.freeHead = head;
      this.freeCount += this.chainCount[head];
    }
    this.chainCount[head] = 0;
    out.token = this.tokens[head] as T;
    this.tokens[head] = undefined;
    out.len = len;
    out.id = head;
    this.outstanding--;
    const next = (seen + 1) & 0xffff;
    this.lastSeenUsed = next;
    // Keep asking for a notification on the next used entry; the SC store orders it
    // before the next used.idx check (the virtio_store_mb of Linux's get_buf).
    if (this.notifyMode === NotifyMode.Next && this.eventIdx) Atomics.store(this.aU16, this.aUsedEvent, next);
    return true;
  }

  /** No used-buffer notifications wanted: avail.flags NO_INTERRUPT, or (EVENT_IDX) used_event is left where it is. */
  disableNotifications(): void {
    this.notifyMode = NotifyMode.Off;
    if (!this.eventIdx) Atomics.store(this.aU16, this.aFlags, AVAIL_F_NO_INTERRUPT);
  }

  /**
   * Asks for a notification on the next used buffer, then re-checks (after a full
   * barrier) whether used buffers are already pending: true means "poll again, the
   * notification for those may never come" (§2.7.14 note).
   */
  enableNotifications(): boolean {
    this.notifyMode = NotifyMode.Next;
    if (this.eventIdx) Atomics.store(this.aU16, this.aUsedEvent, this.lastSeenUsed);
    else Atomics.store(this.aU16, this.aFlags, 0);
    // SC store above then SC load below: the full barrier of the re-check pattern.
    return Atomics.load(this.uU16, this.uIdx) !== this.lastSeenUsed;
  }

  /**
   * EVENT_IDX: ask for a notification once the device writes used entry `idx`
   * (i.e. used.idx passes idx), e.g. three quarters into the buffers in flight.
   * Without EVENT_IDX there is no way to say this and the call does nothing.
   */
  setUsedEvent(idx: number): void {
    if (!this.eventIdx) return;
    this.notifyMode = NotifyMode.Explicit;
    Atomics.store(this.aU16, this.aUsedEvent, idx & 0xffff);
  }
}

function writeDesc(u32: Uint32Array, u16: Uint16Array, i32: number, i16: number, addr: number, len: number, flags: number, next: number): void {
  u32[i32] = addr >>> 0;
  u32[i32 + 1] = addr < U32_LIMIT ? 0 : Math.floor(addr / U32_LIMIT);
  u32[i32 + 2] = len;
  u16[i16 + 6] = flags;
  u16[i16 + 7] = next;
}
