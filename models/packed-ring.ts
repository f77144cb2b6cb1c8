/**
 * Reference model of a packed virtqueue (virtio 1.2 §2.8), with no bytes.
 *
 * The ring is an array of slots. Each slot carries the two flag bits the spec
 * defines (AVAIL, USED) and what the last writer put there: the driver's buffer
 * (at the head slot of an available chain) or the device's used id/len. Both sides
 * keep a position and a wrap counter, both starting at slot 0 with wrap 1:
 *
 *   available for the device  ⇔  AVAIL == device avail wrap  and  USED != it
 *   used for the driver       ⇔  AVAIL == USED == driver used wrap
 *
 * Event suppression is two records {offWrap, flags}; the kick and notify decisions
 * are the functions `driverMustKick` (Linux virtqueue_kick_prepare_packed) and
 * `deviceMustNotify` (DPDK vhost_vring_call_packed), stated as plainly as possible.
 *
 * It speaks the byte ring's vocabulary: add / publish / reclaim / hasUsed /
 * enableNotifications / disableNotifications / setUsedEvent for the driver, and
 * pop / push / flush / enableKicks / disableKicks / saveState / restoreState for
 * the device, with the same choices (immediate visibility on add, LIFO id reuse,
 * IN_ORDER batching of fully used buffers). It only models well-behaved peers:
 * hostile bytes are the byte ring's business.
 */
import { RingError, RingFullError } from '../src/ring/errors.ts';
import type { RingFeatures, Segment } from '../src/ring/types.ts';

export const ENABLE = 0;
export const DISABLE = 1;
export const DESC = 2;

export interface EventSuppression {
  /** Bits 0-14 ring offset, bit 15 wrap counter. */
  offWrap: number;
  flags: number;
}

/** A buffer as the driver posted it. */
export interface ModelBuffer {
  id: number;
  segments: Segment[];
  indirect: boolean;
  /** Ring slots it occupies: 1 when indirect, else one per segment. */
  descriptors: number;
  writableBytes: number;
}

export interface ModelSlot {
  avail: boolean;
  used: boolean;
  /** Head slot of an available chain: the buffer. */
  buffer: ModelBuffer | null;
  /** Used slot: what the device wrote. */
  usedId: number;
  usedLen: number;
  usedWrite: boolean;
}

export interface ModelPopped {
  id: number;
  segments: Segment[];
  ringDescriptors: number;
  indirect: boolean;
}

export interface ModelUsed<T> {
  token: T;
  len: number;
  id: number;
}

/** A pushed buffer not yet written: where its used descriptor goes, and whether it was used in full. */
interface PendingUsed {
  id: number;
  len: number;
  pos: number;
  wrap: boolean;
  full: boolean;
}

export interface ModelDeviceState {
  lastAvailIdx: number;
  availWrap: boolean;
  lastUsedIdx: number;
  usedWrap: boolean;
  signalledUsedValid: boolean;
  signalledUsed: number;
}

const u16 = (x: number) => ((x % 65536) + 65536) % 65536;

/** virtio need_event: is `event` one of the indices in [old, new) just passed? (u16 arithmetic) */
export function needEventU16(event: number, newIdx: number, oldIdx: number): boolean {
  return u16(newIdx - event - 1) < u16(newIdx - oldIdx);
}

/**
 * Should the driver kick after adding `added` descriptors, its next slot now being
 * `nextAvail` with wrap `availWrap`? (Linux virtqueue_kick_prepare_packed.)
 */
export function driverMustKick(device: EventSuppression, size: number, nextAvail: number, availWrap: boolean, added: number): boolean {
  if (device.flags !== DESC) return device.flags !== DISABLE;
  const offset = device.offWrap & 0x7fff;
  const wrap = device.offWrap >= 0x8000;
  // An event offset from the other lap is a slot one ring length earlier.
  const event = wrap === availWrap ? offset : offset - size;
  return needEventU16(event, nextAvail, nextAvail - added);
}

/**
 * Should the device notify after publishing up to `lastUsed` (wrap `usedWrap`)?
 * (DPDK vhost_vring_call_packed.) Returns the decision and the new signalled state.
 */
export function deviceMustNotify(
  driver: EventSuppression,
  eventIdx: boolean,
  size: number,
  lastUsed: number,
  usedWrap: boolean,
  signalled: { used: number; valid: boolean },
): { notify: boolean; used: number; valid: boolean } {
  if (!eventIdx) return { notify: driver.flags !== DISABLE, used: signalled.used, valid: signalled.valid };
  const after = { used: lastUsed, valid: true };
  if (driver.flags !== DESC) return { notify: driver.flags !== DISABLE, ...after };
  if (!signalled.valid) return { notify: true, ...after };
  const offset = driver.offWrap & 0x7fff;
  const wrap = driver.offWrap >= 0x8000;
  const event = wrap === usedWrap ? offset : offset - size;
  // Nothing in between, or a whole lap: the old position is a lap back.
  const old = lastUsed <= signalled.used ? signalled.used - size : signalled.used;
  return { notify: needEventU16(event, lastUsed, old), ...after };
}

export interface ModelOptions {
  notifyFirstFlush?: boolean;
  indirectPerBuffer?: number;
}

export class PackedRingModel<T> {
  readonly slots: ModelSlot[];
  readonly driverEvent: EventSuppression = { offWrap: 0, flags: ENABLE };
  readonly deviceEvent: EventSuppression = { offWrap: 0, flags: ENABLE };

  // driver side
  nextAvail = 0;
  availWrap = true;
  nextUsed = 0;
  usedWrap = true;
  private freeIds: number[];
  private added = 0;
  private readonly posted = new Map<number, { token: T; buffer: ModelBuffer }>();
  private readonly postOrder: number[] = [];
  private batch: { id: number; len: number } | null = null;

  // device side
  dev: ModelDeviceState;
  private readonly popped = new Map<number, ModelBuffer>();
  private readonly popOrder: number[] = [];
  private pending: PendingUsed[] = [];

  /** Slots written by the last operation (for comparing with bytes). */
  touched: number[] = [];

  constructor(
    readonly size: number,
    readonly features: RingFeatures,
    private readonly opts: ModelOptions = {},
  ) {
    this.slots = Array.from({ length: size }, () => ({ avail: false, used: false, buffer: null, usedId: 0, usedLen: 0, usedWrite: false }));
    this.freeIds = Array.from({ length: size }, (_, i) => size - 1 - i); // pop() yields 0 first
    const firstFlushKnown = opts.notifyFirstFlush === false;
    this.dev = { lastAvailIdx: 0, availWrap: true, lastUsedIdx: 0, usedWrap: true, signalledUsedValid: firstFlushKnown, signalledUsed: 0 };
  }

  private step(pos: number, wrap: boolean, by: number): [number, boolean] {
    pos += by;
    if (pos >= this.size) return [pos - this.size, !wrap];
    return [pos, wrap];
  }

  // ---- driver --------------------------------------------------------------------

  /** Ring slots held by posted buffers (the sum of their descriptor counts). */
  private inUse = 0;

  get freeDescriptors(): number {
    return this.size - this.inUse;
  }

  get inFlight(): number {
    return this.posted.size;
  }

  add(segments: readonly Segment[], token: T, opts?: { indirect?: boolean }): number {
    this.touched = [];
    if (segments.length === 0) throw new TypeError('no segments');
    const firstWritable = segments.findIndex((s) => s.writable);
    if (firstWritable >= 0 && segments.slice(firstWritable).some((s) => !s.writable)) throw new TypeError('readable after writable');
    const indirect = opts?.indirect === true;
    if (indirect && (!this.features.indirect || !this.opts.indirectPerBuffer)) throw new TypeError('indirect not available');
    if (indirect && segments.length > this.opts.indirectPerBuffer!) throw new RangeError('indirect table too small');
    const descriptors = indirect ? 1 : segments.length;
    if (segments.length > this.size) throw new RangeError('list longer than the ring');
    if (descriptors > this.freeDescriptors) throw new RingFullError(descriptors, this.freeDescriptors);

    const id = this.freeIds.pop()!;
    const buffer: ModelBuffer = {
      id,
      segments: segments.map((s) => ({ ...s })),
      indirect,
      descriptors,
      writableBytes: segments.filter((s) => s.writable).reduce((a, s) => a + s.len, 0),
    };
    let pos = this.nextAvail;
    let wrap = this.availWrap;
    for (let i = 0; i < descriptors; i++) {
      // available: AVAIL = driver wrap, USED = its inverse
      this.slots[pos] = { avail: wrap, used: !wrap, buffer: i === 0 ? buffer : null, usedId: 0, usedLen: 0, usedWrite: false };
      this.touched.push(pos);
      [pos, wrap] = this.step(pos, wrap, 1);
    }
    this.nextAvail = pos;
    this.availWrap = wrap;
    this.added += descriptors;
    this.inUse += descriptors;
    this.posted.set(id, { token, buffer });
    this.postOrder.push(id);
    return id;
  }

  publish(): boolean {
    this.touched = [];
    const kick = driverMustKick(this.deviceEvent, this.size, this.nextAvail, this.availWrap, this.added);
    this.added = 0;
    return kick;
  }

  private slotIsUsed(pos: number): boolean {
    const s = this.slots[pos];
    return s.avail === this.usedWrap && s.used === this.usedWrap;
  }

  hasUsed(): boolean {
    return this.batch !== null || this.slotIsUsed(this.nextUsed);
  }

  reclaim(): ModelUsed<T> | null {
    this.touched = [];
    if (this.batch === null) {
      if (!this.slotIsUsed(this.nextUsed)) return null;
      const s = this.slots[this.nextUsed];
      if (!this.posted.has(s.usedId)) throw new RingError('bad-id', `used id ${s.usedId} not in flight`);
      this.batch = { id: s.usedId, len: s.usedWrite ? s.usedLen : 0 };
    }
    // Which buffer completes now: the used id itself, or under IN_ORDER the oldest
    // posted buffer (all before the used id count as fully used).
    const id = this.features.inOrder ? this.postOrder[0] : this.batch.id;
    const { token, buffer } = this.posted.get(id)!;
    let len: number;
    if (id === this.batch.id) {
      len = this.batch.len;
      this.batch = null;
    } else {
      len = buffer.writableBytes;
    }
    this.posted.delete(id);
    this.postOrder.splice(this.postOrder.indexOf(id), 1);
    this.freeIds.push(id);
    this.inUse -= buffer.descriptors;
    [this.nextUsed, this.usedWrap] = this.step(this.nextUsed, this.usedWrap, buffer.descriptors);
    return { token, len, id };
  }

  disableNotifications(): void {
    this.driverEvent.flags = DISABLE;
  }

  enableNotifications(): boolean {
    if (this.features.eventIdx) {
      this.driverEvent.offWrap = this.nextUsed | (this.usedWrap ? 0x8000 : 0);
      this.driverEvent.flags = DESC;
    } else {
      this.driverEvent.flags = ENABLE;
    }
    return this.hasUsed();
  }

  setUsedEvent(offWrap: number): void {
    if (!this.features.eventIdx) throw new TypeError('DESC needs EVENT_IDX');
    this.driverEvent.offWrap = offWrap;
    this.driverEvent.flags = DESC;
  }

  // ---- device --------------------------------------------------------------------

  pop(): ModelPopped | null {
    this.touched = [];
    const d = this.dev;
    const head = this.slots[d.lastAvailIdx];
    if (!(head.avail === d.availWrap && head.used !== d.availWrap)) return null;
    const b = head.buffer!;
    this.popped.set(b.id, b);
    this.popOrder.push(b.id);
    [d.lastAvailIdx, d.availWrap] = this.step(d.lastAvailIdx, d.availWrap, b.descriptors);
    return { id: b.id, segments: b.segments.map((s) => ({ ...s })), ringDescriptors: b.descriptors, indirect: b.indirect };
  }

  push(id: number, len: number): void {
    this.touched = [];
    const b = this.popped.get(id);
    if (b === undefined) throw new RingError('used-overflow', `id ${id} not in flight`);
    if (this.features.inOrder && this.popOrder[0] !== id) throw new RingError('used-overflow', 'IN_ORDER push out of order');
    const d = this.dev;
    this.pending.push({ id, len, pos: d.lastUsedIdx, wrap: d.usedWrap, full: len === b.writableBytes });
    this.popped.delete(id);
    this.popOrder.splice(this.popOrder.indexOf(id), 1);
    [d.lastUsedIdx, d.usedWrap] = this.step(d.lastUsedIdx, d.usedWrap, b.descriptors);
  }

  flush(): boolean {
    this.touched = [];
    if (this.pending.length === 0) return false;
    // What gets written: one used descriptor per buffer, except under IN_ORDER where
    // a run of fully used buffers is folded into the used descriptor of the buffer
    // that ends the run, placed at the run's first slot.
    const writes: { pos: number; wrap: boolean; id: number; len: number }[] = [];
    let run: PendingUsed | null = null;
    for (let i = 0; i < this.pending.length; i++) {
      const e = this.pending[i];
      run ??= e;
      const foldIntoNext = this.features.inOrder && e.full && i < this.pending.length - 1;
      if (foldIntoNext) continue;
      writes.push({ pos: run.pos, wrap: run.wrap, id: e.id, len: e.len });
      run = null;
    }
    for (const w of writes) {
      // used: AVAIL = USED = device wrap; WRITE when something was written
      this.slots[w.pos] = { avail: w.wrap, used: w.wrap, buffer: null, usedId: w.id, usedLen: w.len, usedWrite: w.len > 0 };
      this.touched.push(w.pos);
    }
    this.pending = [];
    const d = this.dev;
    const r = deviceMustNotify(this.driverEvent, this.features.eventIdx, this.size, d.lastUsedIdx, d.usedWrap, {
      used: d.signalledUsed,
      valid: d.signalledUsedValid,
    });
    d.signalledUsed = r.used;
    d.signalledUsedValid = r.valid;
    return r.notify;
  }

  disableKicks(): void {
    this.deviceEvent.flags = DISABLE;
  }

  enableKicks(): void {
    if (this.features.eventIdx) {
      this.deviceEvent.offWrap = this.dev.lastAvailIdx | (this.dev.availWrap ? 0x8000 : 0);
      this.deviceEvent.flags = DESC;
    } else {
      this.deviceEvent.flags = ENABLE;
    }
  }

  /** The device's state; its used position is the published one (unflushed pushes excluded). */
  saveState(): ModelDeviceState {
    const s = { ...this.dev };
    if (this.pending.length > 0) {
      s.lastUsedIdx = this.pending[0].pos;
      s.usedWrap = this.pending[0].wrap;
    }
    return s;
  }

  /** Restart the device at the given state: what it had in flight and unflushed is forgotten. */
  restoreState(s: Partial<ModelDeviceState>): void {
    const cur = this.saveState();
    this.dev = {
      lastAvailIdx: s.lastAvailIdx ?? cur.lastAvailIdx,
      availWrap: s.availWrap ?? cur.availWrap,
      lastUsedIdx: s.lastUsedIdx ?? cur.lastUsedIdx,
      usedWrap: s.usedWrap ?? cur.usedWrap,
      signalledUsedValid: s.signalledUsedValid ?? cur.signalledUsedValid,
      signalledUsed: s.signalledUsed ?? cur.signalledUsed,
    };
    this.popped.clear();
    this.popOrder.length = 0;
    this.pending = [];
  }

  /** Pushed, not yet flushed. */
  get pendingUsed(): number {
    return this.pending.length;
  }

  /** Ids the device holds (popped, not pushed), oldest first. */
  deviceInFlight(): number[] {
    return [...this.popOrder];
  }

  /** Writable bytes of a buffer the device holds. */
  writableOf(id: number): number {
    return this.popped.get(id)?.writableBytes ?? 0;
  }
}
