import { GuestMemoryError, type GuestMemory, type MemoryRegion } from '../../memory/index.ts';
import { RingError, type RingErrorCode } from '../errors.ts';
import { needEvent } from '../event.ts';
import type { DescriptorChain, RingFeatures } from '../types.ts';
import * as L from './layout.ts';
import type { SplitLayout } from './layout.ts';
import { SplitRingParts } from './views.ts';

// Hot loops read module-local constants: under a CommonJS transform (tsx) an imported
// binding is a getter call on every use.
const AVAIL_F_NO_INTERRUPT = L.AVAIL_F_NO_INTERRUPT;
const SPLIT_DESC_F_INDIRECT = L.SPLIT_DESC_F_INDIRECT;
const SPLIT_DESC_F_NEXT = L.SPLIT_DESC_F_NEXT;
const SPLIT_DESC_F_WRITE = L.SPLIT_DESC_F_WRITE;
const SPLIT_DESC_SIZE = L.SPLIT_DESC_SIZE;
const USED_F_NO_NOTIFY = L.USED_F_NO_NOTIFY;

/** The device's ring position, as GET/SET_VRING_BASE and a back-end restart see it. */
export interface SplitDeviceState {
  /** Avail position of the next chain to pop (free-running u16). */
  lastAvailIdx: number;
  /** Used position of the next element to write (free-running u16). */
  lastUsedIdx: number;
  /** False until the first EVENT_IDX notify decision after (re)start. */
  signalledUsedValid: boolean;
  /** used.idx at the last EVENT_IDX notify decision. */
  signalledUsed: number;
}

export interface SplitDeviceOptions {
  /**
   * Default true: with EVENT_IDX, the first flush after (re)start notifies whatever
   * used_event says, as DPDK does while `signalled_used_valid` is false.
   */
  notifyFirstFlush?: boolean;
  /** Most segments the device accepts in one chain (default: the queue size, §2.7.5.3.1). */
  maxChain?: number;
}

const U32_LIMIT = 0x1_0000_0000;

/**
 * The back-end half of a split virtqueue: pops available chains (walking and
 * validating every descriptor), pushes used elements, publishes them and decides
 * whether to notify the driver, the way DPDK 22.11's vhost library does.
 *
 * Malformed chains are reported as RingError before anything of the chain is
 * consumed: as in DPDK's virtio_dev_tx_split (which stops the burst at a chain
 * fill_vec_buf_split rejects and does not advance last_avail_idx), the bad chain
 * stays at the head of the avail ring, every later `pop` reports it again, and the
 * queue makes no progress until the driver rewrites it or the ring is reset. Chains
 * popped before it are unaffected. The chain container's contents are unspecified
 * after an error.
 */
export class SplitDevice extends SplitRingParts {
  private readonly notifyFirstFlush: boolean;
  private readonly maxChain: number;
  private readonly usedGpa: number;

  private lastAvail = 0;
  private lastUsed = 0;
  private signalledUsed = 0;
  private signalledValid = false;
  /** avail.idx as last loaded. */
  private shadowAvail = 0;
  private pushedSinceFlush = 0;

  /** Times each head was popped and not yet pushed (a driver may re-post a head; DPDK does not object). */
  private readonly popped: Uint16Array;
  private readonly poppedWritable: Float64Array;
  /** Chains in flight that a previous device instance popped (restoreState): pushable once each. */
  private inherited = 0;
  /** IN_ORDER: heads in pop order, for checking that pushes come in the same order. */
  private readonly popOrder: Uint16Array;
  private popRead = 0;
  private popWrite = 0;
  /**
   * A driver that re-posts heads still in flight can have more than Q chains popped
   * and not pushed; the pop order then no longer fits and is not checked (DPDK does
   * not check it at all).
   */
  private orderUnknown = false;
  /** IN_ORDER: used slot of the element the next push may fold into (this flush only), or -1. */
  private batchSlot = -1;
  /** IN_ORDER: the buffer last written at batchSlot was used completely (len = its writable size). */
  private batchFull = false;

  /** Loop detection: stamp[i] === walk means descriptor i was visited in this walk. */
  private readonly seenDesc: Uint32Array;
  private readonly seenInd: Uint32Array;
  private walk = 0;
  /** Copy of an indirect table that straddles two regions. */
  private scratch: DataView | null = null;
  private hotRegion: MemoryRegion;

  // per-walk accumulators
  private wCount = 0;
  private wReadable = 0;
  private wWritable = 0;
  private wSawWritable = false;

  constructor(
    private readonly mem: GuestMemory,
    layout: SplitLayout,
    features: RingFeatures,
    opts?: SplitDeviceOptions,
    state?: Partial<SplitDeviceState>,
  ) {
    super(mem, layout, features);
    const q = layout.size;
    this.notifyFirstFlush = opts?.notifyFirstFlush ?? true;
    const maxChain = opts?.maxChain ?? q;
    if (!Number.isInteger(maxChain) || maxChain < 1) throw new RangeError(`maxChain ${maxChain} is not a positive integer`);
    this.maxChain = maxChain;
    this.usedGpa = layout.used;
    this.hotRegion = mem.regions[0];

    this.popped = new Uint16Array(q);
    this.poppedWritable = new Float64Array(q);
    this.popOrder = new Uint16Array(q);
    this.seenDesc = new Uint32Array(q);
    this.seenInd = new Uint32Array(q);
    if (state !== undefined) this.restoreState(state);
  }

  /** Chains the driver has published and the device has not popped. */
  availableCount(): number {
    // Acquire: ring entries and descriptors are read after the index (DPDK loads it __ATOMIC_ACQUIRE).
    const idx = Atomics.load(this.aU16, this.aIdx);
    const n = (idx - this.lastAvail) & 0xffff;
    if (n > this.size) this.overrun(idx);
    this.shadowAvail = idx;
    return n;
  }

  private overrun(idx: number): never {
    throw new RingError('avail-overrun', `avail.idx ${idx} is ${(idx - this.lastAvail) & 0xffff} entries ahead of ${this.lastAvail}, more than the queue size ${this.size}`, this.lastAvail);
  }

  /**
   * Walks the next available chain into `chain` (segments after following an
   * indirect table, readable first). False when none is available. Throws RingError,
   * consuming nothing, when the chain is malformed.
   */
  pop(chain: DescriptorChain): boolean {
    const pos = this.lastAvail;
    if (pos === this.shadowAvail) {
      // Acquire (§2.7.13: the device may access the chains once it sees idx).
      const idx = Atomics.load(this.aU16, this.aIdx);
      if (idx === pos) return false;
      if (((idx - pos) & 0xffff) > this.size) this.overrun(idx);
      this.shadowAvail = idx;
    }
    const head = this.aU16[this.aRing + (pos & this.mask)];
    if (head >= this.size) throw new RingError('bad-head', `avail ring entry ${pos} holds head ${head}, outside a queue of ${this.size}`, pos);
    this.walkChain(head, chain);
    this.lastAvail = (pos + 1) & 0xffff;
    this.popped[head]++;
    this.poppedWritable[head] = chain.writableBytes;
    if (this.inOrder) {
      if (this.popWrite - this.popRead < this.size) {
        this.popOrder[this.popWrite & this.mask] = head;
        this.popWrite++;
      } else {
        this.orderUnknown = true;
      }
    }
    return true;
  }

  private fail(code: RingErrorCode, msg: string, where: number): never {
    throw new RingError(code, msg, where);
  }

  private walkChain(head: number, chain: DescriptorChain): void {
    let stamp = this.walk + 1;
    if (stamp > 0xffffffff) {
      this.seenDesc.fill(0);
      this.seenInd.fill(0);
      stamp = 1;
    }
    this.walk = stamp;
    const limit = this.maxChain < chain.capacity ? this.maxChain : chain.capacity;
    const dU16 = this.dU16;
    const dU32 = this.dU32;
    const seen = this.seenDesc;
    const cAddr = chain.addr;
    const cLen = chain.len;
    const cWritable = chain.writable;
    let n = 0;
    let readable = 0;
    let writable = 0;
    let sawWritable = false;
    let i = head;
    let ringDescs = 0;
    let indirect = false;
    for (;;) {
      if (seen[i] === stamp) this.fail('desc-loop', `descriptor ${i} is visited twice in the chain from head ${head}`, i);
      seen[i] = stamp;
      ringDescs++;
      const i32 = this.d32 + 4 * i;
      const i16 = this.d16 + 8 * i;
      const flags = dU16[i16 + 6];
      const len = dU32[i32 + 2];
      const addr = dU32[i32] + dU32[i32 + 1] * U32_LIMIT;
      if ((flags & SPLIT_DESC_F_INDIRECT) !== 0) {
        if (!this.indirectOk) this.fail('indirect-not-negotiated', `descriptor ${i}: INDIRECT without VIRTIO_F_INDIRECT_DESC`, i);
        // §2.7.5.3.1: INDIRECT and NEXT together are forbidden, so the table ends the chain.
        if ((flags & SPLIT_DESC_F_NEXT) !== 0) this.fail('indirect-with-next', `descriptor ${i}: INDIRECT and NEXT both set`, i);
        this.wCount = n;
        this.wReadable = readable;
        this.wWritable = writable;
        this.wSawWritable = sawWritable;
        this.walkIndirect(i, addr, len, chain, limit);
        n = this.wCount;
        readable = this.wReadable;
        writable = this.wWritable;
        indirect = true;
        break;
      }
      // The same checks as `segment`, inline for the common direct chain.
      if (n >= limit) this.tooMany(chain, limit, i);
      const w = (flags & SPLIT_DESC_F_WRITE) !== 0;
      if (w) sawWritable = true;
      else if (sawWritable) this.fail('readable-after-writable', `descriptor ${i}: device-readable after device-writable (§2.7.4.2)`, i);
      const r = this.hotRegion;
      if (!(addr >= r.gpa && len <= r.gpaEnd - addr)) this.checkSlow(addr, len, i, 'buffer');
      cAddr[n] = addr;
      cLen[n] = len;
      if (w) {
        cWritable[n] = 1;
        writable += len;
      } else {
        cWritable[n] = 0;
        readable += len;
      }
      n++;
      if ((flags & SPLIT_DESC_F_NEXT) === 0) break;
      const next = dU16[i16 + 7];
      if (next >= this.size) this.fail('bad-next', `descriptor ${i}: next ${next} is outside a table of ${this.size}`, i);
      i = next;
    }
    if (readable + writable >= U32_LIMIT) {
      this.fail('too-long', `chain from head ${head} totals ${readable + writable} bytes, 2^32 or more (§2.7.5.2)`, head);
    }
    chain.id = head;
    chain.ringDescriptors = ringDescs;
    chain.count = n;
    chain.readableBytes = readable;
    chain.writableBytes = writable;
    chain.indirect = indirect;
  }

  private tooMany(chain: DescriptorChain, limit: number, where: number): never {
    this.fail('chain-too-long', `chain has more than ${limit} segments (${limit === chain.capacity ? 'chain container capacity' : 'device limit'})`, where);
  }

  /** Validates one buffer descriptor and appends it to the chain. */
  private segment(chain: DescriptorChain, limit: number, addr: number, len: number, flags: number, where: number): void {
    const n = this.wCount;
    if (n >= limit) this.tooMany(chain, limit, where);
    const w = (flags & SPLIT_DESC_F_WRITE) !== 0;
    if (w) this.wSawWritable = true;
    else if (this.wSawWritable) this.fail('readable-after-writable', `descriptor ${where}: device-readable after device-writable (§2.7.4.2)`, where);
    const r = this.hotRegion;
    if (!(addr >= r.gpa && len <= r.gpaEnd - addr)) this.checkSlow(addr, len, where, 'buffer');
    chain.addr[n] = addr;
    chain.len[n] = len;
    chain.writable[n] = w ? 1 : 0;
    this.wCount = n + 1;
    if (w) this.wWritable += len;
    else this.wReadable += len;
  }

  /** Range check through the region table (a buffer may straddle adjacent regions, fact sheet §9). */
  private checkSlow(addr: number, len: number, where: number, what: string): void {
    try {
      this.mem.checkRange(addr, len);
    } catch (e) {
      if (e instanceof GuestMemoryError) this.fail('bad-address', `descriptor ${where}: ${what} 0x${addr.toString(16)}+${len} is outside guest memory`, where);
      throw e;
    }
    for (const reg of this.mem.regions) {
      if (reg.containsGpa(addr, len)) {
        this.hotRegion = reg;
        break;
      }
    }
  }

  private walkIndirect(where: number, addr: number, len: number, chain: DescriptorChain, limit: number): void {
    if (len === 0 || len % SPLIT_DESC_SIZE !== 0) this.fail('bad-indirect-len', `descriptor ${where}: indirect table length ${len} is not a positive multiple of 16`, where);
    const entries = len / SPLIT_DESC_SIZE;
    // DPDK refuses tables of more descriptors than the queue size (fill_vec_buf_split).
    if (entries > this.size) this.fail('chain-too-long', `descriptor ${where}: indirect table of ${entries} descriptors exceeds the queue size ${this.size}`, where);
    let view: DataView;
    let base: number;
    const r = this.hotRegion;
    if (addr >= r.gpa && len <= r.gpaEnd - addr) {
      view = r.view;
      base = addr - r.gpa;
    } else {
      this.checkSlow(addr, len, where, 'indirect table');
      const reg = this.hotRegion;
      if (reg.containsGpa(addr, len)) {
        view = reg.view;
        base = addr - reg.gpa;
      } else {
        // Straddles adjacent regions: read it through a private copy (DPDK's vhost_alloc_copy_ind_table).
        if (this.scratch === null || this.scratch.byteLength < len) this.scratch = new DataView(new ArrayBuffer(this.size * SPLIT_DESC_SIZE));
        const tmp = new Uint8Array(this.scratch.buffer, 0, len);
        this.mem.read(addr, tmp);
        view = this.scratch;
        base = 0;
      }
    }
    const seen = this.seenInd;
    const stamp = this.walk;
    let j = 0;
    for (;;) {
      if (seen[j] === stamp) this.fail('desc-loop', `indirect table of descriptor ${where}: entry ${j} is visited twice`, where);
      seen[j] = stamp;
      const o = base + SPLIT_DESC_SIZE * j;
      const flags = view.getUint16(o + 12, true);
      if ((flags & SPLIT_DESC_F_INDIRECT) !== 0) this.fail('nested-indirect', `indirect table of descriptor ${where}: entry ${j} is INDIRECT again (§2.7.5.3.1)`, where);
      const dlen = view.getUint32(o + 8, true);
      const daddr = view.getUint32(o, true) + view.getUint32(o + 4, true) * U32_LIMIT;
      this.segment(chain, limit, daddr, dlen, flags, where);
      if ((flags & SPLIT_DESC_F_NEXT) === 0) break;
      const next = view.getUint16(o + 14, true);
      if (next >= entries) this.fail('bad-next', `indirect table of descriptor ${where}: entry ${j} has next ${next}, outside a table of ${entries}`, where);
      j = next;
    }
  }

  /**
   * Writes a used element for `head` with `len` bytes written (visible at `flush`).
   * With IN_ORDER, a push folds into the element of the previous push of the same
   * flush when that buffer was used completely (its len was its whole writable
   * size), so one element carries the id of the batch's last buffer (§2.7.9); the
   * driver reports the folded buffers with their full writable size, so folding
   * only happens when that is the truth.
   */
  push(head: number, len: number): void {
    if (!(len >>> 0 === len)) throw new RangeError(`used length ${len} is not a u32`);
    let known = false;
    let writable = 0;
    if (head >>> 0 === head && head < this.size && this.popped[head] > 0) {
      if (this.inOrder && this.popRead !== this.popWrite && !this.orderUnknown) {
        const expected = this.popOrder[this.popRead & this.mask];
        if (expected !== head) throw new RingError('used-overflow', `IN_ORDER: push of head ${head} before head ${expected}, which was popped first`, head);
      }
      writable = this.poppedWritable[head];
      if (len > writable) throw new RangeError(`used length ${len} exceeds the ${writable} device-writable bytes of head ${head}`);
      if (this.inOrder && this.popRead !== this.popWrite) this.popRead++;
      this.popped[head]--;
      known = true;
    } else if (this.inherited > 0 && head >>> 0 === head && head < this.size) {
      this.inherited--;
    } else {
      throw new RingError('used-overflow', `push of head ${head}, which the device has not popped (or already pushed)`, head);
    }
    let slot: number;
    if (this.inOrder && this.batchSlot >= 0 && this.batchFull) {
      slot = this.batchSlot;
    } else {
      slot = this.lastUsed & this.mask;
      this.batchSlot = slot;
    }
    this.batchFull = known && len === writable;
    const e = this.uRing + 2 * slot;
    this.uU32[e] = head;
    this.uU32[e + 1] = len;
    this.mem.markDirty(this.usedGpa + 4 + 8 * slot, 8);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    this.pushedSinceFlush++;
  }

  /**
   * Publishes the pushed elements (used.idx) and decides whether to notify the
   * driver. False, touching nothing, when nothing was pushed since the last flush.
   */
  flush(): boolean {
    if (this.pushedSinceFlush === 0) return false;
    this.pushedSinceFlush = 0;
    this.batchSlot = -1;
    const nw = this.lastUsed;
    // §2.7.8: len (and the data) before used.idx; the SC store is at least a release.
    Atomics.store(this.uU16, this.uIdx, nw);
    this.mem.markDirty(this.usedGpa + 2, 2);
    // Full barrier between the used.idx store and reading the driver's suppression
    // field (§2.7.7; DPDK's rte_smp_mb in vhost_vring_call_split): SC store, SC load.
    if (this.eventIdx) {
      const event = Atomics.load(this.aU16, this.aUsedEvent);
      const old = this.signalledUsed;
      const valid = this.signalledValid;
      this.signalledUsed = nw;
      this.signalledValid = true;
      return needEvent(event, nw, old) || (!valid && this.notifyFirstFlush);
    }
    return (Atomics.load(this.aU16, this.aFlags) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Asks the driver not to kick: used.flags NO_NOTIFY; with EVENT_IDX nothing (DPDK leaves avail_event alone). */
  disableKicks(): void {
    if (this.eventIdx) return;
    Atomics.store(this.uU16, this.uFlags, USED_F_NO_NOTIFY);
    this.mem.markDirty(this.usedGpa, 2);
  }

  /** Asks for kicks again: clear NO_NOTIFY, or with EVENT_IDX set avail_event = last avail idx (DPDK vhost_enable_guest_notification). */
  enableKicks(): void {
    if (this.eventIdx) {
      Atomics.store(this.uU16, this.uAvailEvent, this.lastAvail);
      this.mem.markDirty(this.usedGpa + 4 + 8 * this.size, 2);
    } else {
      Atomics.store(this.uU16, this.uFlags, 0);
      this.mem.markDirty(this.usedGpa, 2);
    }
  }

  saveState(): SplitDeviceState {
    return {
      lastAvailIdx: this.lastAvail,
      lastUsedIdx: this.lastUsed,
      signalledUsedValid: this.signalledValid,
      signalledUsed: this.signalledUsed,
    };
  }

  /**
   * Sets the given fields. The record of chains popped and not yet pushed is
   * discarded: the (lastAvail - lastUsed) chains between the two positions count as
   * inherited from a previous device instance, and each may be pushed once, by any
   * head (their writable sizes are unknown, so IN_ORDER never folds after them).
   * Call it at a quiescent point (after `flush`), as GET_VRING_BASE stops a ring.
   */
  restoreState(s: Partial<SplitDeviceState>): void {
    if (s.lastAvailIdx !== undefined) this.lastAvail = u16(s.lastAvailIdx, 'lastAvailIdx');
    if (s.lastUsedIdx !== undefined) this.lastUsed = u16(s.lastUsedIdx, 'lastUsedIdx');
    if (s.signalledUsed !== undefined) this.signalledUsed = u16(s.signalledUsed, 'signalledUsed');
    if (s.signalledUsedValid !== undefined) this.signalledValid = s.signalledUsedValid;
    this.shadowAvail = this.lastAvail;
    this.popped.fill(0);
    this.popRead = this.popWrite = 0;
    this.orderUnknown = false;
    this.inherited = Math.min((this.lastAvail - this.lastUsed) & 0xffff, this.size);
    this.pushedSinceFlush = 0;
    this.batchSlot = -1;
    this.batchFull = false;
  }

  /**
   * Resynchronises to the ring: last avail = last used = used.idx, as DPDK does at
   * (re)start when its last_used_idx disagrees with the ring (vhost_user.c
   * translate_ring_addresses) and as QEMU restores last_avail_idx from used->idx.
   */
  rebaseFromUsed(): void {
    const u = Atomics.load(this.uU16, this.uIdx);
    this.restoreState({ lastAvailIdx: u, lastUsedIdx: u });
  }
}

function u16(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${what} ${v} is not a u16`);
  return v;
}
