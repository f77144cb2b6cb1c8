import { RingError, RingFullError } from '../src/ring/errors.ts';
import { needEvent } from '../src/ring/event.ts';
import type { RingFeatures, Segment } from '../src/ring/types.ts';

/**
 * Reference model of a split virtqueue (virtio 1.2 §2.7) with no bytes: the driver
 * owns a free list of descriptor slots and the buffers it has added; the avail ring
 * is a log of heads by position; the device owns the chains it has popped; the used
 * ring is a queue of elements, each covering one buffer (or, with IN_ORDER, a batch).
 * Indices are free-running u16 and every notification decision is the spec's rule,
 * written out plainly. The byte-level ring in src/ring/split must agree with it on
 * every observable: heads and segments popped, buffers reclaimed (token, len), kick
 * and notify decisions, free descriptors.
 *
 * It models well-formed use only: a hostile driver is the business of the byte-level
 * device's validation, not of this model.
 */

export interface ModelBuffer<T> {
  token: T;
  segments: Segment[];
  indirect: boolean;
  /** Descriptor-table slots the buffer occupies; slots[0] is the head. */
  slots: number[];
  /** Total device-writable bytes. */
  writable: number;
  /** Avail position the head was placed at. */
  pos: number;
}

export interface ModelChain {
  head: number;
  segments: Segment[];
  indirect: boolean;
  ringDescriptors: number;
  readableBytes: number;
  writableBytes: number;
}

export interface ModelUsed<T> {
  token: T;
  id: number;
  len: number;
}

/** One used-ring element: the buffers it covers (one, or an IN_ORDER batch ending at the last) and its len. */
interface UsedElement {
  heads: number[];
  len: number;
}

export interface SplitRingModelOptions {
  /** Driver's indirect table size (segments per indirect buffer); 0 = no indirect area. */
  indirectPerBuffer?: number;
  /** DPDK's "always notify on the first flush after (re)start" (default true). */
  notifyFirstFlush?: boolean;
  /** Initial value of both avail.idx and used.idx (a ring taken over with nothing in flight). */
  startIdx?: number;
}

export interface SplitModelDeviceState {
  lastAvailIdx: number;
  lastUsedIdx: number;
  signalledUsedValid: boolean;
  signalledUsed: number;
}

const inc = (i: number, n = 1): number => (i + n) & 0xffff;
const dist = (from: number, to: number): number => (to - from) & 0xffff;

type NotifyMode = 'off' | 'next' | 'explicit';

export class SplitRingModel<T = unknown> {
  readonly size: number;
  readonly features: RingFeatures;
  readonly indirectPerBuffer: number;
  readonly notifyFirstFlush: boolean;

  // ---- driver side ------------------------------------------------------------
  /** Free descriptor slots, in the order the driver hands them out. */
  free: number[];
  /** Buffers added and not yet reclaimed, by head. */
  buffers = new Map<number, ModelBuffer<T>>();
  /** The avail ring: head at each position (positions are u16; only the last `size` matter). */
  availRing = new Map<number, number>();
  /** Next avail position the driver fills. */
  availIdx: number;
  /** avail.idx as the device sees it. */
  publishedIdx: number;
  /** Used position of the next buffer the driver reclaims. */
  lastSeenUsed: number;
  /** avail.flags NO_INTERRUPT (only without EVENT_IDX). */
  noInterrupt = false;
  /** avail.used_event (only with EVENT_IDX). */
  usedEvent: number;
  notifyMode: NotifyMode = 'next';

  // ---- device side ------------------------------------------------------------
  lastAvail: number;
  lastUsed: number;
  signalledUsed = 0;
  signalledValid = false;
  /** Chains popped and not yet pushed: head → writable bytes (undefined when inherited). */
  popped = new Map<number, number>();
  /** IN_ORDER: popped heads in pop order. */
  popOrder: number[] = [];
  /** Chains a previous device instance popped; each may be pushed once. */
  inherited = 0;
  /** used.flags NO_NOTIFY (only without EVENT_IDX). */
  noNotify = false;
  /** used.avail_event (only with EVENT_IDX). */
  availEvent = 0;

  // ---- the used ring -------------------------------------------------------------
  /** Elements written since the last flush (not visible to the driver). */
  pending: UsedElement[] = [];
  /** IN_ORDER: the buffer last pushed was used completely, so the next push may join its element. */
  lastPushFull = false;
  /** Elements visible to the driver and not yet fully reclaimed. */
  used: UsedElement[] = [];
  /** used.idx as the driver sees it. */
  usedIdx: number;

  constructor(size: number, features: RingFeatures, opts: SplitRingModelOptions = {}) {
    this.size = size;
    this.features = { ...features };
    this.indirectPerBuffer = opts.indirectPerBuffer ?? 0;
    this.notifyFirstFlush = opts.notifyFirstFlush ?? true;
    const start = (opts.startIdx ?? 0) & 0xffff;
    this.free = Array.from({ length: size }, (_, i) => i);
    this.availIdx = this.publishedIdx = this.lastSeenUsed = this.usedIdx = start;
    this.lastAvail = this.lastUsed = start;
    this.usedEvent = start;
  }

  // ==== driver ====================================================================

  get freeDescriptors(): number {
    return this.free.length;
  }

  get inFlight(): number {
    return this.buffers.size;
  }

  add(segments: readonly Segment[], token: T, opts?: { indirect?: boolean }): number {
    const n = segments.length;
    const indirect = opts?.indirect === true;
    if (n === 0 || n > this.size) throw new TypeError(`bad segment count ${n}`);
    const firstWritable = segments.findIndex((s) => s.writable);
    if (firstWritable >= 0 && segments.slice(firstWritable).some((s) => !s.writable)) throw new TypeError('readable after writable');
    if (segments.some((s) => !(s.len >>> 0 === s.len) || !Number.isSafeInteger(s.addr) || s.addr < 0)) throw new TypeError('bad segment');
    if (segments.reduce((a, s) => a + s.len, 0) >= 2 ** 32) throw new TypeError('chain of 2^32 bytes or more');
    if (indirect && (!this.features.indirect || n > this.indirectPerBuffer)) throw new TypeError('indirect not possible');
    const needed = indirect ? 1 : n;
    if (needed > this.free.length) throw new RingFullError(needed, this.free.length);
    const slots = this.free.splice(0, needed);
    const head = slots[0];
    this.buffers.set(head, {
      token,
      segments: segments.map((s) => ({ addr: s.addr, len: s.len, writable: s.writable })),
      indirect,
      slots,
      writable: segments.filter((s) => s.writable).reduce((a, s) => a + s.len, 0),
      pos: this.availIdx,
    });
    this.availRing.set(this.availIdx, head);
    this.availIdx = inc(this.availIdx);
    return head;
  }

  /** Publishes avail.idx; kick when EVENT_IDX's avail_event lies in (old, new], else unless NO_NOTIFY. */
  publish(): boolean {
    const old = this.publishedIdx;
    const nw = this.availIdx;
    if (nw === old) return false;
    this.publishedIdx = nw;
    return this.features.eventIdx ? needEvent(this.availEvent, nw, old) : !this.noNotify;
  }

  hasUsed(): boolean {
    return this.usedIdx !== this.lastSeenUsed;
  }

  /**
   * Next used buffer. An IN_ORDER element covering several buffers yields them one
   * at a time; all but the last were used completely (len = their writable bytes).
   */
  reclaim(): ModelUsed<T> | null {
    if (this.usedIdx === this.lastSeenUsed) return null;
    const el = this.used[0];
    const head = el.heads.shift()!;
    const buf = this.buffers.get(head)!;
    let len: number;
    if (el.heads.length === 0) {
      this.used.shift();
      len = el.len;
    } else {
      len = buf.writable;
    }
    this.buffers.delete(head);
    // In ring order the slots go to the back (IN_ORDER keeps handing out x, x+1, ...);
    // otherwise to the front, in chain order.
    if (this.features.inOrder) this.free.push(...buf.slots);
    else this.free.unshift(...buf.slots);
    this.lastSeenUsed = inc(this.lastSeenUsed);
    if (this.notifyMode === 'next' && this.features.eventIdx) this.usedEvent = this.lastSeenUsed;
    return { token: buf.token, id: head, len };
  }

  disableNotifications(): void {
    this.notifyMode = 'off';
    if (!this.features.eventIdx) this.noInterrupt = true;
  }

  /** Notifications on for the next used buffer; true if used buffers are already waiting. */
  enableNotifications(): boolean {
    this.notifyMode = 'next';
    if (this.features.eventIdx) this.usedEvent = this.lastSeenUsed;
    else this.noInterrupt = false;
    return this.hasUsed();
  }

  setUsedEvent(idx: number): void {
    if (!this.features.eventIdx) return;
    this.notifyMode = 'explicit';
    this.usedEvent = idx & 0xffff;
  }

  // ==== device ====================================================================

  availableCount(): number {
    return dist(this.lastAvail, this.publishedIdx);
  }

  pop(): ModelChain | null {
    if (this.lastAvail === this.publishedIdx) return null;
    const head = this.availRing.get(this.lastAvail)!;
    const buf = this.buffers.get(head)!;
    this.lastAvail = inc(this.lastAvail);
    this.popped.set(head, buf.writable);
    this.popOrder.push(head);
    return {
      head,
      segments: buf.segments.map((s) => ({ ...s })),
      indirect: buf.indirect,
      ringDescriptors: buf.slots.length,
      readableBytes: buf.segments.filter((s) => !s.writable).reduce((a, s) => a + s.len, 0),
      writableBytes: buf.writable,
    };
  }

  /**
   * Marks `head` used with `len` bytes written. With IN_ORDER, pushes must follow pop
   * order, and a push joins the previous element of the same flush when that buffer
   * was used completely.
   */
  push(head: number, len: number): void {
    let writable: number | undefined;
    if (this.popped.has(head)) {
      if (this.features.inOrder && this.popOrder[0] !== head) throw new RingError('used-overflow', `IN_ORDER push of ${head} before ${this.popOrder[0]}`);
      writable = this.popped.get(head)!;
      if (len > writable) throw new RangeError('used length exceeds writable bytes');
      this.popped.delete(head);
      if (this.features.inOrder) this.popOrder.shift();
    } else if (this.inherited > 0) {
      this.inherited--;
    } else {
      throw new RingError('used-overflow', `push of ${head}, not popped`);
    }
    if (this.features.inOrder && this.pending.length > 0 && this.lastPushFull) {
      const el = this.pending[this.pending.length - 1];
      el.heads.push(head);
      el.len = len;
    } else {
      this.pending.push({ heads: [head], len });
    }
    this.lastPushFull = writable !== undefined && len === writable;
    this.lastUsed = inc(this.lastUsed);
  }

  /**
   * Publishes used.idx. Notify with EVENT_IDX when used_event lies in (signalled, new]
   * or on the first decision after (re)start (DPDK), then remember `new` as signalled;
   * without EVENT_IDX unless the driver set NO_INTERRUPT.
   */
  flush(): boolean {
    if (this.pending.length === 0) return false;
    this.used.push(...this.pending);
    this.pending = [];
    this.lastPushFull = false;
    this.usedIdx = this.lastUsed;
    if (!this.features.eventIdx) return !this.noInterrupt;
    const old = this.signalledUsed;
    const wasValid = this.signalledValid;
    this.signalledUsed = this.lastUsed;
    this.signalledValid = true;
    return needEvent(this.usedEvent, this.lastUsed, old) || (!wasValid && this.notifyFirstFlush);
  }

  disableKicks(): void {
    if (!this.features.eventIdx) this.noNotify = true;
  }

  enableKicks(): void {
    if (this.features.eventIdx) this.availEvent = this.lastAvail;
    else this.noNotify = false;
  }

  saveState(): SplitModelDeviceState {
    return { lastAvailIdx: this.lastAvail, lastUsedIdx: this.lastUsed, signalledUsedValid: this.signalledValid, signalledUsed: this.signalledUsed };
  }

  /**
   * A new device instance continuing from saveState() (taken after a flush): it
   * forgets which chains it popped; those become inherited, pushable once each.
   */
  restartDevice(): void {
    if (this.pending.length > 0) throw new Error('restart only after flush');
    this.inherited = Math.min(this.inherited + this.popped.size, this.size);
    this.popped.clear();
    this.popOrder = [];
    this.lastPushFull = false;
  }

  /**
   * Whether `rebaseFromUsed` would lose or duplicate nothing: exactly the published
   * buffers not yet marked used sit at avail positions from used.idx on. It fails
   * when buffers completed out of avail order (the resync assumes used.idx counts a
   * prefix of the avail ring; DPDK warns "some packets maybe resent for Tx and
   * dropped for Rx").
   */
  rebaseIsExact(): boolean {
    const published = dist(this.usedIdx, this.publishedIdx);
    const usedHeads = new Set(this.used.flatMap((e) => e.heads));
    for (const [head, b] of this.buffers) {
      if (dist(this.publishedIdx, b.pos) < dist(this.publishedIdx, this.availIdx)) continue; // added, not published
      const afterUsedIdx = dist(this.usedIdx, b.pos) < published;
      if (usedHeads.has(head) === afterUsedIdx) return false;
    }
    return true;
  }

  /**
   * Device resynchronised to the ring: both positions = used.idx. Chains popped and
   * not yet published as used (including pushes not flushed) will be popped again.
   */
  rebaseFromUsed(): void {
    this.pending = [];
    this.lastAvail = this.lastUsed = this.usedIdx;
    this.popped.clear();
    this.popOrder = [];
    this.inherited = 0;
    this.lastPushFull = false;
  }
}
