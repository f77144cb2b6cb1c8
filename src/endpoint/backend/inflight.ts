/**
 * Inflight I/O tracking regions (GET/SET_INFLIGHT_FD, protocol feature INFLIGHT_SHMFD):
 * byte layouts of DPDK 22.11's `rte_vhost_inflight_info_split/packed` and the check DPDK runs
 * on SET_VRING_KICK (`vhost_check_queue_inflights_split/packed`, lib/vhost/vhost_user.c).
 *
 * A region holds `num_queues` consecutive per-queue areas, each rounded up to 64 bytes
 * (`INFLIGHT_ALIGNMENT`). Version 0 means "never used": the first kick stamps version 1 and
 * resubmits nothing.
 *
 * Split per-queue area:  features u64 @0, version u16 @8, desc_num u16 @10,
 *   last_inflight_io u16 @12, used_idx u16 @14, desc[i] @16 + 16i = { inflight u8 @0,
 *   padding[5], next u16 @6, counter u64 @8 }.
 * Packed per-queue area: features u64 @0, version u16 @8, desc_num u16 @10, free_head u16 @12,
 *   old_free_head u16 @14, used_idx u16 @16, old_used_idx u16 @18, used_wrap_counter u8 @20,
 *   old_used_wrap_counter u8 @21, padding[7]; desc[i] @32 + 32i = { inflight u8 @0, padding u8,
 *   next u16 @2, last u16 @4, num u16 @6, counter u64 @8, id u16 @16, flags u16 @18,
 *   len u32 @20, addr u64 @24 }.
 *
 * Every access here is bounds-checked against the mapped window: the front-end shares the
 * memory and may write any `desc_num`, which DPDK would follow past the end of its mapping.
 */

export const INFLIGHT_ALIGNMENT = 64;
export const INFLIGHT_VERSION = 1;
export const INFLIGHT_SPLIT_HEADER = 16;
export const INFLIGHT_SPLIT_DESC = 16;
export const INFLIGHT_PACKED_HEADER = 32;
export const INFLIGHT_PACKED_DESC = 32;

function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** `get_pervq_shm_size_split`: roundup64(16·Q + 8 + 2·4). */
export function inflightSizeSplit(queueSize: number): number {
  return roundUp(INFLIGHT_SPLIT_DESC * queueSize + 8 + 2 * 4, INFLIGHT_ALIGNMENT);
}

/** `get_pervq_shm_size_packed`: roundup64(32·Q + 8 + 2·6 + 9) (DPDK counts a 29-byte header; the rounding covers the real 32). */
export function inflightSizePacked(queueSize: number): number {
  return roundUp(INFLIGHT_PACKED_DESC * queueSize + 8 + 2 * 6 + 9, INFLIGHT_ALIGNMENT);
}

export function inflightSizePerQueue(queueSize: number, packed: boolean): number {
  return packed ? inflightSizePacked(queueSize) : inflightSizeSplit(queueSize);
}

/** A window [offset, offset+length) of a shared buffer; reads and writes outside it throw RangeError. */
abstract class Window {
  protected readonly dv: DataView;
  constructor(
    readonly buffer: ArrayBufferLike,
    readonly offset: number,
    readonly length: number,
  ) {
    this.dv = new DataView(buffer, offset, length);
  }
  protected u8(o: number): number {
    return this.dv.getUint8(o);
  }
  protected setU8(o: number, v: number): void {
    this.dv.setUint8(o, v);
  }
  protected u16(o: number): number {
    return this.dv.getUint16(o, true);
  }
  protected setU16(o: number, v: number): void {
    this.dv.setUint16(o, v & 0xffff, true);
  }
  protected u64(o: number): bigint {
    return this.dv.getBigUint64(o, true);
  }
  protected setU64(o: number, v: bigint): void {
    this.dv.setBigUint64(o, v, true);
  }
}

/**
 * What both per-queue areas share: features, version and desc_num at the same offsets, and a
 * descriptor array of `{ inflight u8 @0, next u16, counter u64 @8 }` after a header; the
 * header size, descriptor size and `next` offset are the layout's.
 */
abstract class InflightArea extends Window {
  protected abstract readonly header: number;
  protected abstract readonly descSize: number;
  protected abstract readonly nextAt: number;

  get features(): bigint {
    return this.u64(0);
  }
  get version(): number {
    return this.u16(8);
  }
  set version(v: number) {
    this.setU16(8, v);
  }
  get descNum(): number {
    return this.u16(10);
  }
  set descNum(v: number) {
    this.setU16(10, v);
  }
  /** Descriptors the mapped window really holds (desc_num may claim more). */
  get capacity(): number {
    return Math.max(0, Math.floor((this.length - this.header) / this.descSize));
  }
  private d(i: number): number {
    return this.header + this.descSize * i;
  }
  inflight(i: number): number {
    return this.u8(this.d(i));
  }
  setInflight(i: number, v: number): void {
    this.setU8(this.d(i), v);
  }
  next(i: number): number {
    return this.u16(this.d(i) + this.nextAt);
  }
  setNext(i: number, v: number): void {
    this.setU16(this.d(i) + this.nextAt, v);
  }
  counter(i: number): bigint {
    return this.u64(this.d(i) + 8);
  }
  setCounter(i: number, v: bigint): void {
    this.setU64(this.d(i) + 8, v);
  }
}

export class InflightSplitView extends InflightArea {
  protected readonly header = INFLIGHT_SPLIT_HEADER;
  protected readonly descSize = INFLIGHT_SPLIT_DESC;
  protected readonly nextAt = 6;

  get lastInflightIo(): number {
    return this.u16(12);
  }
  set lastInflightIo(v: number) {
    this.setU16(12, v);
  }
  get usedIdx(): number {
    return this.u16(14);
  }
  set usedIdx(v: number) {
    this.setU16(14, v);
  }
}

export class InflightPackedView extends InflightArea {
  protected readonly header = INFLIGHT_PACKED_HEADER;
  protected readonly descSize = INFLIGHT_PACKED_DESC;
  protected readonly nextAt = 2;

  get freeHead(): number {
    return this.u16(12);
  }
  set freeHead(v: number) {
    this.setU16(12, v);
  }
  get oldFreeHead(): number {
    return this.u16(14);
  }
  set oldFreeHead(v: number) {
    this.setU16(14, v);
  }
  get usedIdx(): number {
    return this.u16(16);
  }
  set usedIdx(v: number) {
    this.setU16(16, v);
  }
  get oldUsedIdx(): number {
    return this.u16(18);
  }
  set oldUsedIdx(v: number) {
    this.setU16(18, v);
  }
  get usedWrapCounter(): number {
    return this.u8(20);
  }
  set usedWrapCounter(v: number) {
    this.setU8(20, v);
  }
  get oldUsedWrapCounter(): number {
    return this.u8(21);
  }
  set oldUsedWrapCounter(v: number) {
    this.setU8(21, v);
  }
}

export type InflightView = InflightSplitView | InflightPackedView;

/**
 * What GET_INFLIGHT_FD does to a fresh region: all zero; for packed rings each queue's
 * `used_wrap_counter = old_used_wrap_counter = 1` and `desc[j].next = j + 1`.
 */
export function initInflightRegion(buffer: ArrayBufferLike, numQueues: number, queueSize: number, packed: boolean): void {
  new Uint8Array(buffer).fill(0);
  if (!packed) return;
  const per = inflightSizePacked(queueSize);
  for (let q = 0; q < numQueues; q++) {
    const v = new InflightPackedView(buffer, q * per, per);
    v.usedWrapCounter = 1;
    v.oldUsedWrapCounter = 1;
    for (let j = 0; j < queueSize; j++) v.setNext(j, j + 1);
  }
}

/** One descriptor to resubmit (`struct rte_vhost_resubmit_desc`). */
export interface ResubmitDesc {
  index: number;
  counter: bigint;
}

export interface InflightCheck {
  /** The region was fresh (version 0): now stamped version 1, nothing to resubmit. */
  fresh: boolean;
  /** Descriptors still marked inflight, highest counter first (DPDK's qsort order). */
  resubmit: ResubmitDesc[];
  /** Split: how far DPDK advances last_avail_idx (the resubmit count). Packed: 0. */
  advanceAvail: number;
  /** `global_counter` after the check (max counter + 1, or 0). */
  globalCounter: bigint;
  /** desc_num claimed more descriptors than the mapping holds; the scan stopped at the mapping's end. */
  clipped: boolean;
}

function collect(v: InflightView): { list: ResubmitDesc[]; clipped: boolean } {
  const n = Math.min(v.descNum, v.capacity);
  const list: ResubmitDesc[] = [];
  for (let i = 0; i < n; i++) if (v.inflight(i) === 1) list.push({ index: i, counter: v.counter(i) });
  // DPDK's comparator puts higher counters first; ties keep index order here.
  list.sort((a, b) => (a.counter === b.counter ? a.index - b.index : a.counter > b.counter ? -1 : 1));
  return { list, clipped: v.descNum > v.capacity };
}

/**
 * `vhost_check_queue_inflights_split` for a ring whose used->idx is `ringUsedIdx`: if the
 * region's used_idx lags the ring, the last batch did complete (its head's inflight flag is
 * cleared and used_idx caught up); every descriptor still inflight is to be resubmitted and
 * last_avail_idx moves past them.
 */
export function checkInflightsSplit(v: InflightSplitView, ringUsedIdx: number): InflightCheck {
  if (v.version === 0) {
    v.version = INFLIGHT_VERSION;
    return { fresh: true, resubmit: [], advanceAvail: 0, globalCounter: 0n, clipped: false };
  }
  if (v.usedIdx !== ringUsedIdx) {
    const last = v.lastInflightIo;
    if (last < v.capacity) v.setInflight(last, 0);
    v.usedIdx = ringUsedIdx;
  }
  const { list, clipped } = collect(v);
  return {
    fresh: false,
    resubmit: list,
    advanceAvail: list.length,
    globalCounter: list.length > 0 ? list[0]!.counter + 1n : 0n,
    clipped,
  };
}

/**
 * `vhost_check_queue_inflights_packed`: if used_idx moved since the last snapshot, commit it
 * (the descriptor at old_used_idx is no longer inflight) or roll back to the snapshot; then
 * collect what is still inflight.
 */
export function checkInflightsPacked(v: InflightPackedView): InflightCheck {
  if (v.version === 0) {
    v.version = INFLIGHT_VERSION;
    return { fresh: true, resubmit: [], advanceAvail: 0, globalCounter: 0n, clipped: false };
  }
  const old = v.oldUsedIdx;
  if (v.usedIdx !== old) {
    const oldInflight = old < v.capacity ? v.inflight(old) : 0;
    if (oldInflight === 0) {
      v.oldUsedIdx = v.usedIdx;
      v.oldUsedWrapCounter = v.usedWrapCounter;
      v.oldFreeHead = v.freeHead;
    } else {
      v.usedIdx = v.oldUsedIdx;
      v.usedWrapCounter = v.oldUsedWrapCounter;
      v.freeHead = v.oldFreeHead;
    }
  }
  const { list, clipped } = collect(v);
  return { fresh: false, resubmit: list, advanceAvail: 0, globalCounter: list.length > 0 ? list[0]!.counter + 1n : 0n, clipped };
}
