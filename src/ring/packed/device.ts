import { GuestMemoryError, type GuestMemory, type MemoryRegion } from '../../memory/index.ts';
import { RingError } from '../errors.ts';
import { needEvent } from '../event.ts';
import type { DescriptorChain, RingFeatures } from '../types.ts';
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

/**
 * What a back-end keeps of a packed ring across a stop/start (DPDK's
 * last_avail_idx / avail_wrap_counter / last_used_idx / used_wrap_counter /
 * signalled_used(_valid)). Indices are ring slots, 0..size-1.
 */
export interface PackedDeviceState {
  lastAvailIdx: number;
  availWrap: boolean;
  lastUsedIdx: number;
  usedWrap: boolean;
  signalledUsedValid: boolean;
  signalledUsed: number;
}

export interface PackedDeviceOptions {
  /** Default true: DPDK always notifies the first time after (re)start (signalled_used_valid = false). */
  notifyFirstFlush?: boolean;
}

const TWO_32 = 0x1_0000_0000;

/**
 * The back-end half of a packed virtqueue: pops available chains in ring order,
 * validates them against guest memory, records used buffers and publishes them,
 * and makes DPDK's notification decisions.
 *
 * Malformed input from the driver is a RingError, raised before the device's
 * positions move and before anything outside guest memory is read.
 *
 * A chain whose later descriptors are not marked available for the current wrap is
 * refused ('partial-chain'). DPDK reads such a chain as if its flags were right; the
 * spec requires every element's AVAIL/USED bits to be correct and the head to be
 * published last, so a device can only see this from a broken driver.
 */
export class PackedDevice {
  readonly size: number;
  private readonly v: PackedViews;
  private readonly devEventGpa: number;
  private readonly descGpa: number;
  private readonly inOrder: boolean;
  private readonly indirectOk: boolean;
  private readonly eventIdx: boolean;

  private lastAvail = 0;
  private availWrap = true;
  private lastUsed = 0;
  private usedWrap = true;
  private signalledUsed = 0;
  private signalledUsedValid = false;

  /** Descriptor count of each id the device has popped and not pushed; 0 = not in flight. */
  private readonly popCount: Uint16Array;
  private readonly popWritable: Float64Array;
  // IN_ORDER: popped ids in ring order.
  private readonly fifo: Uint16Array;
  private fifoHead = 0;
  private fifoCount = 0;
  // Pushed, not yet flushed: where each used descriptor goes.
  private readonly pId: Uint16Array;
  private readonly pLen: Uint32Array;
  private readonly pPos: Uint16Array;
  private readonly pWrap: Uint8Array;
  private readonly pFull: Uint8Array;
  private nPending = 0;

  /** Region of the last buffer checked: most buffers sit in the same one. */
  private hit: MemoryRegion;
  private scratch: Uint8Array | null = null;
  private scratchView: DataView | null = null;

  constructor(
    private readonly mem: GuestMemory,
    readonly layout: PackedLayout,
    readonly features: RingFeatures,
    opts: PackedDeviceOptions = {},
    state: Partial<PackedDeviceState> = {},
  ) {
    this.size = layout.size;
    this.v = translatePackedRing(mem, layout);
    this.devEventGpa = layout.deviceEvent;
    this.descGpa = layout.desc;
    this.inOrder = features.inOrder;
    this.indirectOk = features.indirect;
    this.eventIdx = features.eventIdx;
    this.hit = this.v.descRegion;
    const n = this.size;
    this.popCount = new Uint16Array(n);
    this.popWritable = new Float64Array(n);
    this.fifo = new Uint16Array(n);
    this.pId = new Uint16Array(n);
    this.pLen = new Uint32Array(n);
    this.pPos = new Uint16Array(n);
    this.pWrap = new Uint8Array(n);
    this.pFull = new Uint8Array(n);
    if (opts.notifyFirstFlush === false) this.signalledUsedValid = true;
    this.restoreState(state);
    if (opts.notifyFirstFlush === false && state.signalledUsed === undefined) this.signalledUsed = this.lastUsed;
  }

  // ---- consuming available buffers -----------------------------------------

  /**
   * Walks the next available chain into `chain` and returns true, or returns false
   * when the slot at the device's position is not available. On a RingError nothing
   * about the device has changed (the container may hold partial segments).
   */
  pop(chain: DescriptorChain): boolean {
    const { d16, d32, desc16, desc32 } = this.v;
    const size = this.size;
    let pos = this.lastAvail;
    let wrap = this.availWrap;
    // DPDK desc_is_avail with a load-acquire of the flags, before reading the
    // descriptor's other fields (spec "Supplying Buffers": flags expose the contents).
    let flags = Atomics.load(d16, desc16 + pos * 8 + 7);
    if (!isAvail(flags, wrap)) return false;

    const cap = chain.capacity;
    let count = 0;
    let seg = 0;
    let readable = 0;
    let writable = 0;
    let sawWritable = false;
    let indirect = false;
    let id = 0;
    for (;;) {
      const w = desc32 + pos * 4;
      const addr = d32[w] + d32[w + 1] * TWO_32;
      const len = d32[w + 2];
      count++;
      if ((flags & PACKED_DESC_F_INDIRECT) !== 0) {
        if (!this.indirectOk) throw new RingError('indirect-not-negotiated', `slot ${pos}: INDIRECT without VIRTIO_F_INDIRECT_DESC`, pos);
        // "A driver MUST NOT write direct descriptors with DESC_F_INDIRECT set in a
        // scatter-gather list linked by VIRTQ_DESC_F_NEXT": alone or not at all.
        if (count !== 1 || (flags & PACKED_DESC_F_NEXT) !== 0) {
          throw new RingError('indirect-with-next', `slot ${pos}: INDIRECT inside a NEXT chain`, pos);
        }
        seg = this.walkIndirect(chain, addr, len, pos);
        indirect = true;
        id = d16[desc16 + pos * 8 + 6];
        // walkIndirect left its byte counts in the chain
        readable = chain.readableBytes;
        writable = chain.writableBytes;
        break;
      }
      if ((flags & PACKED_DESC_F_WRITE) !== 0) {
        sawWritable = true;
        writable += len;
      } else {
        if (sawWritable) throw new RingError('readable-after-writable', `slot ${pos}: device-readable descriptor after a writable one`, pos);
        readable += len;
      }
      if (seg >= cap) throw new RingError('chain-too-long', `chain has more than ${cap} segments (the chain container's capacity)`, pos);
      this.checkBuffer(addr, len, pos);
      chain.addr[seg] = addr;
      chain.len[seg] = len;
      chain.writable[seg] = (flags & PACKED_DESC_F_WRITE) !== 0 ? 1 : 0;
      seg++;
      if ((flags & PACKED_DESC_F_NEXT) === 0) {
        id = d16[desc16 + pos * 8 + 6]; // the buffer id sits in the last descriptor
        break;
      }
      if (count >= size) throw new RingError('chain-too-long', `chain is longer than the ring (${size})`, pos);
      if (++pos === size) {
        pos = 0;
        wrap = !wrap;
      }
      // Plain load: ordered after the head's acquire load, and the driver wrote these
      // flags before releasing the head.
      flags = d16[desc16 + pos * 8 + 7];
      if (!isAvail(flags, wrap)) {
        throw new RingError('partial-chain', `slot ${pos}: NEXT points at a descriptor not available for wrap ${+wrap}`, pos);
      }
    }
    if (readable + writable >= TWO_32) throw new RingError('too-long', `chain total length ${readable + writable} is not below 2^32`, this.lastAvail);
    if (id >= size) throw new RingError('bad-id', `buffer id ${id} is not below the queue size ${size}`, pos);
    if (this.popCount[id] !== 0) throw new RingError('bad-id', `buffer id ${id} is already in flight`, pos);

    // Accepted: commit.
    chain.id = id;
    chain.ringDescriptors = count;
    chain.count = seg;
    chain.readableBytes = readable;
    chain.writableBytes = writable;
    chain.indirect = indirect;
    if (++pos === size) {
      pos = 0;
      wrap = !wrap;
    }
    this.lastAvail = pos;
    this.availWrap = wrap;
    this.popCount[id] = count;
    this.popWritable[id] = writable;
    if (this.inOrder) {
      let tail = this.fifoHead + this.fifoCount;
      if (tail >= size) tail -= size;
      this.fifo[tail] = id;
      this.fifoCount++;
    }
    return true;
  }

  /** Reads an indirect table into `chain`; returns the segment count. */
  private walkIndirect(chain: DescriptorChain, tableAddr: number, tableLen: number, pos: number): number {
    if (tableLen === 0 || tableLen % PACKED_DESC_SIZE !== 0) {
      throw new RingError('bad-indirect-len', `slot ${pos}: indirect table length ${tableLen} is not a non-zero multiple of 16`, pos);
    }
    const n = tableLen / PACKED_DESC_SIZE;
    if (n > this.size) throw new RingError('chain-too-long', `slot ${pos}: indirect table of ${n} descriptors is longer than the ring`, pos);
    if (n > chain.capacity) throw new RingError('chain-too-long', `slot ${pos}: indirect table of ${n} exceeds the chain container's capacity`, pos);
    let view: DataView;
    let base: number;
    let r: MemoryRegion | null = null;
    const h = this.hit;
    if (tableAddr >= h.gpa && tableLen <= h.gpaEnd - tableAddr) r = h;
    else {
      try {
        r = this.mem.regionFor(tableAddr, tableLen);
      } catch (e) {
        if (!(e instanceof GuestMemoryError)) throw e;
      }
    }
    if (r !== null) {
      view = r.view;
      base = tableAddr - r.gpa;
    } else {
      // Not inside one region: it may still straddle adjacent regions; copy it (as
      // DPDK's vhost_alloc_copy_ind_table does) or refuse it if any byte is unmapped.
      try {
        this.mem.checkRange(tableAddr, tableLen);
      } catch (e) {
        if (e instanceof GuestMemoryError) throw new RingError('bad-address', `slot ${pos}: indirect table ${tableAddr}+${tableLen} is outside guest memory`, pos);
        throw e;
      }
      if (this.scratch === null || this.scratch.length < tableLen) {
        this.scratch = new Uint8Array(this.size * PACKED_DESC_SIZE);
        this.scratchView = new DataView(this.scratch.buffer);
      }
      this.mem.read(tableAddr, this.scratch.subarray(0, tableLen));
      view = this.scratchView!;
      base = 0;
    }
    let readable = 0;
    let writable = 0;
    let sawWritable = false;
    for (let i = 0; i < n; i++) {
      const o = base + i * PACKED_DESC_SIZE;
      const addr = view.getUint32(o, true) + view.getUint32(o + 4, true) * TWO_32;
      const len = view.getUint32(o + 8, true);
      const f = view.getUint16(o + 14, true);
      // Only WRITE is valid inside a table; NEXT is ignored there (the table length
      // bounds it), but an INDIRECT is refused rather than ignored: a nested table.
      if ((f & PACKED_DESC_F_INDIRECT) !== 0) throw new RingError('nested-indirect', `slot ${pos}: indirect table entry ${i} is INDIRECT`, pos);
      const isW = (f & PACKED_DESC_F_WRITE) !== 0;
      if (isW) {
        sawWritable = true;
        writable += len;
      } else {
        if (sawWritable) throw new RingError('readable-after-writable', `slot ${pos}: indirect entry ${i} is readable after a writable one`, pos);
        readable += len;
      }
      this.checkBuffer(addr, len, pos);
      chain.addr[i] = addr;
      chain.len[i] = len;
      chain.writable[i] = isW ? 1 : 0;
    }
    chain.readableBytes = readable;
    chain.writableBytes = writable;
    return n;
  }

  /** Every buffer must lie in guest memory (possibly across adjacent regions). */
  private checkBuffer(addr: number, len: number, pos: number): void {
    const h = this.hit;
    if (addr >= h.gpa && len <= h.gpaEnd - addr) return;
    try {
      this.hit = this.mem.regionFor(addr, len);
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) throw e;
      try {
        this.mem.checkRange(addr, len);
      } catch (e2) {
        if (e2 instanceof GuestMemoryError) throw new RingError('bad-address', `slot ${pos}: buffer ${addr}+${len} is outside guest memory`, pos);
        throw e2;
      }
    }
  }

  // ---- returning used buffers -------------------------------------------------

  /**
   * Records buffer `id` as used with `len` bytes written. Its used descriptor goes at
   * the device's used position, which then moves on by the number of ring
   * descriptors the buffer occupied. Nothing is visible to the driver until flush.
   * IN_ORDER: ids must be pushed in the order they were popped.
   */
  push(id: number, len: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.size || this.popCount[id] === 0) {
      throw new RingError('used-overflow', `push of id ${id}, which the device does not have in flight`);
    }
    if (len >>> 0 !== len) throw new RangeError(`used length ${len} is not a u32`);
    if (this.inOrder) {
      if (this.fifo[this.fifoHead] !== id) {
        throw new RingError('used-overflow', `IN_ORDER: push of id ${id} before id ${this.fifo[this.fifoHead]}`);
      }
      if (++this.fifoHead === this.size) this.fifoHead = 0;
      this.fifoCount--;
    }
    const k = this.nPending++;
    const count = this.popCount[id];
    this.pId[k] = id;
    this.pLen[k] = len;
    this.pPos[k] = this.lastUsed;
    this.pWrap[k] = this.usedWrap ? 1 : 0;
    this.pFull[k] = len === this.popWritable[id] ? 1 : 0;
    this.popCount[id] = 0;
    let p = this.lastUsed + count;
    if (p >= this.size) {
      p -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    this.lastUsed = p;
  }

  /**
   * Publishes the pushed used descriptors and returns whether to notify the driver.
   *
   * Writes id and len of every entry, then (release) the flags of entries 1..n-1 and
   * the first entry's flags last, so the driver, which polls the first slot, sees the
   * batch whole (DPDK vhost_flush_enqueue_shadow_packed; spec "Multi-buffer
   * requests"). Used flags: AVAIL = USED = the device wrap counter at that slot,
   * WRITE when len > 0 (as DPDK sets it).
   *
   * IN_ORDER: a run of buffers each completed with exactly its writable length is
   * written as one used descriptor carrying the id (and len) of the run's last
   * buffer, at the run's first slot — the driver reports the skipped buffers as fully
   * used, so this is indistinguishable from writing them one by one.
   *
   * Notification: DPDK vhost_vring_call_packed (see `mustNotify`).
   */
  flush(): boolean {
    const n = this.nPending;
    if (n === 0) return false;
    const { d16, d32, desc16, desc32 } = this.v;
    // Compact in place into the descriptors actually written.
    let m = 0;
    if (this.inOrder) {
      let start = -1;
      for (let i = 0; i < n; i++) {
        if (start < 0) start = i;
        if (i < n - 1 && this.pFull[i] === 1) continue;
        this.pPos[m] = this.pPos[start];
        this.pWrap[m] = this.pWrap[start];
        this.pId[m] = this.pId[i];
        this.pLen[m] = this.pLen[i];
        m++;
        start = -1;
      }
    } else {
      m = n;
    }
    for (let i = 0; i < m; i++) {
      const pos = this.pPos[i];
      d32[desc32 + pos * 4 + 2] = this.pLen[i];
      d16[desc16 + pos * 8 + 6] = this.pId[i];
    }
    // Spec "Updating flags" / device side of the barrier rules: id/len above are released by each flags
    // store below; the first entry's flags go last ("Multi-buffer requests": the batch appears whole).
    for (let i = 1; i < m; i++) Atomics.store(d16, desc16 + this.pPos[i] * 8 + 7, this.usedFlags(i));
    Atomics.store(d16, desc16 + this.pPos[0] * 8 + 7, this.usedFlags(0));
    for (let i = 0; i < m; i++) this.mem.markDirty(this.descGpa + this.pPos[i] * PACKED_DESC_SIZE, PACKED_DESC_SIZE);
    this.nPending = 0;
    return this.mustNotify();
  }

  private usedFlags(i: number): number {
    return (this.pWrap[i] === 1 ? PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED : 0) | (this.pLen[i] !== 0 ? PACKED_DESC_F_WRITE : 0);
  }

  /**
   * DPDK vhost_vring_call_packed. The used flags were stored with SC Atomics, so the
   * SC loads here cannot move before them (DPDK's seq_cst fence "flush used desc update").
   * No EVENT_IDX: notify unless the driver's flags are DISABLE. EVENT_IDX: remember the
   * new used position; flags != DESC → notify unless DISABLE; DESC → always the first
   * time after a (re)start, else iff the driver's event offset (moved back a lap when
   * its wrap bit is not the device's used wrap counter) lies in [old, new), where old is
   * moved back a lap when new <= old. All arithmetic is u16, as in DPDK.
   */
  private mustNotify(): boolean {
    const { drv16, drvIdx } = this.v;
    // Spec "Receiving Used Buffers" / DPDK: full barrier between the used flags and reading the
    // Driver Area; SC Atomics give it (the used-flag stores above are SC too).
    if (!this.eventIdx) return Atomics.load(drv16, drvIdx + 1) !== RING_EVENT_FLAGS_DISABLE;
    let oldIdx = this.signalledUsed;
    const newIdx = this.lastUsed;
    this.signalledUsed = newIdx;
    const valid = this.signalledUsedValid;
    this.signalledUsedValid = true;
    const flags = Atomics.load(drv16, drvIdx + 1);
    if (flags !== RING_EVENT_FLAGS_DESC) return flags !== RING_EVENT_FLAGS_DISABLE;
    if (!valid) return true;
    const offWrap = Atomics.load(drv16, drvIdx);
    let off = offWrap & 0x7fff;
    if (newIdx <= oldIdx) oldIdx = (oldIdx - this.size) & 0xffff;
    if (offWrap >>> 15 !== (this.usedWrap ? 1 : 0)) off = (off - this.size) & 0xffff;
    return needEvent(off, newIdx, oldIdx);
  }

  // ---- kicks from the driver ---------------------------------------------------

  /** Device event area flags = DISABLE: the driver need not kick. */
  disableKicks(): void {
    const { dev16, devIdx } = this.v;
    Atomics.store(dev16, devIdx + 1, RING_EVENT_FLAGS_DISABLE); // "Driver and Device Event Suppression": device area
    this.mem.markDirty(this.devEventGpa, PACKED_EVENT_SIZE);
  }

  /**
   * ENABLE, or under EVENT_IDX DESC with off_wrap = the device's next avail slot and
   * avail wrap counter: "kick me when you make that descriptor available" (DPDK
   * vhost_enable_notify_packed: off_wrap first, then release, then flags).
   */
  enableKicks(): void {
    const { dev16, devIdx } = this.v;
    if (this.eventIdx) {
      // "Event Suppression Structure Format": off_wrap first, then flags (DPDK: release fence between)
      Atomics.store(dev16, devIdx, this.lastAvail | ((this.availWrap ? 1 : 0) << 15));
      Atomics.store(dev16, devIdx + 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(dev16, devIdx + 1, RING_EVENT_FLAGS_ENABLE);
    }
    this.mem.markDirty(this.devEventGpa, PACKED_EVENT_SIZE);
  }

  // ---- state ----------------------------------------------------------------------

  /** Buffers popped and not yet pushed. */
  get inFlight(): number {
    let n = 0;
    for (let i = 0; i < this.size; i++) if (this.popCount[i] !== 0) n++;
    return n;
  }

  /**
   * The device's ring state. The used position is the published one: pushes not yet
   * flushed are not in the ring, and a back-end that stops now loses them.
   */
  saveState(): PackedDeviceState {
    const pending = this.nPending > 0;
    return {
      lastAvailIdx: this.lastAvail,
      availWrap: this.availWrap,
      lastUsedIdx: pending ? this.pPos[0] : this.lastUsed,
      usedWrap: pending ? this.pWrap[0] === 1 : this.usedWrap,
      signalledUsedValid: this.signalledUsedValid,
      signalledUsed: this.signalledUsed,
    };
  }

  /**
   * Sets the given fields (a vhost-user SET_VRING_BASE, a reconnect). The device
   * forgets what it had in flight and any unflushed pushes: those refer to the old
   * positions. Indices must be ring slots (0..size-1); RangeError otherwise.
   */
  restoreState(s: Partial<PackedDeviceState>): void {
    const cur = this.saveState();
    const lastAvail = s.lastAvailIdx ?? cur.lastAvailIdx;
    const lastUsed = s.lastUsedIdx ?? cur.lastUsedIdx;
    const signalled = s.signalledUsed ?? cur.signalledUsed;
    for (const [what, v] of [['lastAvailIdx', lastAvail], ['lastUsedIdx', lastUsed]] as const) {
      if (!Number.isInteger(v) || v < 0 || v >= this.size) throw new RangeError(`${what} ${v} is not a slot of a ${this.size}-entry ring`);
    }
    if (!Number.isInteger(signalled) || signalled < 0 || signalled > 0xffff) throw new RangeError(`signalledUsed ${signalled} is not a u16`);
    this.lastAvail = lastAvail;
    this.availWrap = s.availWrap ?? cur.availWrap;
    this.lastUsed = lastUsed;
    this.usedWrap = s.usedWrap ?? cur.usedWrap;
    this.signalledUsed = signalled;
    this.signalledUsedValid = s.signalledUsedValid ?? cur.signalledUsedValid;
    this.popCount.fill(0);
    this.fifoHead = 0;
    this.fifoCount = 0;
    this.nPending = 0;
  }
}

/** DPDK desc_is_avail: AVAIL == wrap and USED != wrap. */
function isAvail(flags: number, wrap: boolean): boolean {
  return ((flags & PACKED_DESC_F_AVAIL) !== 0) === wrap && ((flags & PACKED_DESC_F_USED) !== 0) !== wrap;
}

// ---- vring base encoding (vhost-user GET/SET_VRING_BASE for packed rings) -------------

function checkIdx(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0x7fff) throw new RangeError(`${what} ${v} does not fit 15 bits`);
}

/**
 * vhost-user spec (newer) and QEMU: bits 0-14 last avail idx, bit 15 avail wrap,
 * bits 16-30 last used idx, bit 31 used wrap. The used half defaults to the avail half
 * (nothing in flight). Returned as a non-negative number (a u32).
 */
export function encodePackedBase(lastAvailIdx: number, availWrap: boolean, lastUsedIdx = lastAvailIdx, usedWrap = availWrap): number {
  checkIdx('lastAvailIdx', lastAvailIdx);
  checkIdx('lastUsedIdx', lastUsedIdx);
  const lo = lastAvailIdx | ((availWrap ? 1 : 0) << 15);
  const hi = lastUsedIdx | ((usedWrap ? 1 : 0) << 15);
  return (lo + hi * 0x10000) >>> 0;
}

export function decodePackedBase(num: number): { lastAvailIdx: number; availWrap: boolean; lastUsedIdx: number; usedWrap: boolean } {
  if (!Number.isInteger(num) || num < 0 || num >= TWO_32) throw new RangeError(`vring base ${num} is not a u32`);
  return {
    lastAvailIdx: num & 0x7fff,
    availWrap: (num & 0x8000) !== 0,
    lastUsedIdx: (num >>> 16) & 0x7fff,
    usedWrap: (num & 0x8000_0000) !== 0,
  };
}

/** DPDK 22.11 GET_VRING_BASE for a packed ring: only the avail half; bits 16-31 are 0 (fact sheet §5.6). */
export function dpdkGetPackedBase(state: Pick<PackedDeviceState, 'lastAvailIdx' | 'availWrap'>): number {
  return (state.lastAvailIdx & 0x7fff) | ((state.availWrap ? 1 : 0) << 15);
}

/**
 * DPDK 22.11 SET_VRING_BASE for a packed ring: reads bits 0-15 only and sets the used
 * position to the avail position (in-flight buffers are forgotten; the used half that
 * QEMU sends is ignored) (fact sheet §5.6).
 */
export function dpdkSetPackedBase(num: number): Partial<PackedDeviceState> {
  if (!Number.isInteger(num) || num < 0 || num >= TWO_32) throw new RangeError(`vring base ${num} is not a u32`);
  const lastAvailIdx = num & 0x7fff;
  const availWrap = (num & 0x8000) !== 0;
  return { lastAvailIdx, availWrap, lastUsedIdx: lastAvailIdx, usedWrap: availWrap };
}
