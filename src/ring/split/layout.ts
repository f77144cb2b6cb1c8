/**
 * Split virtqueue layout (virtio 1.2 §2.7, table "Virtqueue Part / Alignment / Size"):
 *
 *   descriptor table  align 16  16·Q        desc[i] = { addr le64 @0, len le32 @8, flags le16 @12, next le16 @14 }
 *   available ring    align 2   6 + 2·Q     { flags le16 @0, idx le16 @2, ring[Q] le16 @4, used_event le16 @4+2Q }
 *   used ring         align 4   6 + 8·Q     { flags le16 @0, idx le16 @2, ring[Q] {id le32, len le32} @4, avail_event le16 @4+8Q }
 *
 * The trailing event field of each ring exists only with VIRTIO_F_EVENT_IDX; the
 * layout always leaves room for it so one placement serves both feature sets.
 */

/** Guest-physical addresses of the three parts of one split ring. */
export interface SplitLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

export const SPLIT_DESC_F_NEXT = 1;
export const SPLIT_DESC_F_WRITE = 2;
export const SPLIT_DESC_F_INDIRECT = 4;
export const AVAIL_F_NO_INTERRUPT = 1;
export const USED_F_NO_NOTIFY = 1;

/** Bytes per descriptor (desc table and indirect tables). */
export const SPLIT_DESC_SIZE = 16;
/** Bytes per used-ring element. */
export const SPLIT_USED_ELEM_SIZE = 8;

/** Largest split queue: the largest power of two whose free-running u16 index still tells full from empty (§2.7). */
export const SPLIT_MAX_SIZE = 32768;

/** Field offsets inside each part, for code and tests that address bytes directly. */
export const SplitOffsets = {
  descAddr: 0,
  descLen: 8,
  descFlags: 12,
  descNext: 14,
  availFlags: 0,
  availIdx: 2,
  availRing: 4,
  usedFlags: 0,
  usedIdx: 2,
  usedRing: 4,
  /** used_event sits after the avail ring entries. */
  usedEvent: (size: number) => 4 + 2 * size,
  /** avail_event sits after the used ring elements. */
  availEvent: (size: number) => 4 + 8 * size,
} as const;

export function checkSplitSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > SPLIT_MAX_SIZE || (size & (size - 1)) !== 0) {
    throw new RangeError(`split queue size ${size} is not a power of two in 1..${SPLIT_MAX_SIZE}`);
  }
}

/**
 * Exact byte sizes of the three parts. Without EVENT_IDX these are the sizes DPDK
 * maps (`4 + 2Q`, `4 + 8Q`); with it, 2 more bytes each for used_event/avail_event.
 */
export function splitAreaSizes(size: number, eventIdx: boolean): { desc: number; avail: number; used: number } {
  checkSplitSize(size);
  const ev = eventIdx ? 2 : 0;
  return { desc: SPLIT_DESC_SIZE * size, avail: 4 + 2 * size + ev, used: 4 + SPLIT_USED_ELEM_SIZE * size + ev };
}

export interface SplitLayoutOptions {
  /**
   * Legacy (pre-1.0) layout: the used ring starts at the next multiple of this
   * "Queue Align" (usually 4096) after the avail ring (§2.7.2). A power of two >= 4.
   */
  legacyAlign?: number;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * Places a ring at `base`: descriptor table first, the avail ring right after it,
 * the used ring at the next 4-byte boundary after the avail ring's used_event field
 * (or at the next `legacyAlign` boundary).
 */
export function layoutSplitRing(base: number, size: number, opts?: SplitLayoutOptions): SplitLayout {
  checkSplitSize(size);
  if (!Number.isSafeInteger(base) || base < 0 || base % 16 !== 0) {
    throw new RangeError(`split ring base ${base} is not a non-negative multiple of 16 (descriptor table alignment)`);
  }
  let align = 4;
  if (opts?.legacyAlign !== undefined) {
    const a = opts.legacyAlign;
    if (!Number.isInteger(a) || a < 4 || (a & (a - 1)) !== 0) throw new RangeError(`legacy queue align ${a} is not a power of two >= 4`);
    align = a;
  }
  const desc = base;
  const avail = desc + SPLIT_DESC_SIZE * size;
  const used = alignUp(avail + 6 + 2 * size, align);
  return { size, desc, avail, used };
}

/**
 * Bytes from `base` to one past the used ring's avail_event field. (For a legacy
 * layout the spec's `virtq_size` also rounds the used part up to Queue Align; this is
 * the exact end, which is never larger.)
 */
export function splitRingFootprint(size: number, opts?: SplitLayoutOptions): number {
  const l = layoutSplitRing(0, size, opts);
  return l.used + 6 + SPLIT_USED_ELEM_SIZE * size;
}
