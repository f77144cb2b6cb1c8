/**
 * Packed virtqueue layout (virtio 1.2 §2.8 "Packed Virtqueues", packed-ring.tex
 * "Structure Size and Alignment"): a descriptor ring of 16-byte descriptors
 * (align 16), then two 4-byte event suppression structures (align 4).
 *
 * Descriptor (struct pvirtq_desc): addr le64 @0, len le32 @8, id le16 @12, flags le16 @14.
 * Event suppression (struct pvirtq_event_suppress): off_wrap le16 @0 (bits 0-14 ring
 * offset, bit 15 wrap counter), flags le16 @2 (bits 0-1: ENABLE/DISABLE/DESC).
 *
 * vhost-user names these areas after the split ring: desc_user_addr is the ring,
 * avail_user_addr the DRIVER event area, used_user_addr the DEVICE event area.
 */

/** Guest-physical addresses of the three parts of one packed virtqueue. */
export interface PackedLayout {
  size: number;
  desc: number;
  /** Driver Event Suppression (written by the driver, read by the device). */
  driverEvent: number;
  /** Device Event Suppression (written by the device, read by the driver). */
  deviceEvent: number;
}

export const PACKED_DESC_SIZE = 16;
export const PACKED_EVENT_SIZE = 4;
/** Packed rings support up to 2^15 entries (the offset field of off_wrap is 15 bits). */
export const PACKED_MAX_SIZE = 32768;

// Descriptor field offsets.
export const PACKED_DESC_ADDR = 0;
export const PACKED_DESC_LEN = 8;
export const PACKED_DESC_ID = 12;
export const PACKED_DESC_FLAGS = 14;
// Event suppression field offsets.
export const PACKED_EVENT_OFF_WRAP = 0;
export const PACKED_EVENT_FLAGS = 2;

export const PACKED_DESC_F_NEXT = 1;
export const PACKED_DESC_F_WRITE = 2;
export const PACKED_DESC_F_INDIRECT = 4;
export const PACKED_DESC_F_AVAIL = 1 << 7;
export const PACKED_DESC_F_USED = 1 << 15;

export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

/** Bit 15 of off_wrap carries the wrap counter. */
export const PACKED_EVENT_WRAP_BIT = 15;

/** Throws a RangeError unless `size` is a usable packed queue size (any integer 1..32768). */
export function checkPackedSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > PACKED_MAX_SIZE) {
    throw new RangeError(`packed queue size ${size} is not an integer in 1..${PACKED_MAX_SIZE}`);
  }
}

/** Bytes from the ring's base to one past the device event area. */
export function packedRingFootprint(size: number): number {
  checkPackedSize(size);
  return PACKED_DESC_SIZE * size + 2 * PACKED_EVENT_SIZE;
}

/**
 * Places a ring of `size` entries at `base` (which must be 16-aligned), the driver
 * event area right after it and the device event area after that. Both event areas
 * land on 4-byte boundaries because the ring is a multiple of 16 bytes long.
 */
export function layoutPackedRing(base: number, size: number): PackedLayout {
  checkPackedSize(size);
  if (!Number.isSafeInteger(base) || base < 0 || base % 16 !== 0) {
    throw new RangeError(`packed ring base ${base} is not a 16-aligned guest address`);
  }
  const driverEvent = base + PACKED_DESC_SIZE * size;
  return { size, desc: base, driverEvent, deviceEvent: driverEvent + PACKED_EVENT_SIZE };
}

/** Checks a layout handed in from outside (vhost-user SET_VRING_ADDR): size and spec alignments. */
export function checkPackedLayout(layout: PackedLayout): void {
  checkPackedSize(layout.size);
  const ok = (a: number, align: number) => Number.isSafeInteger(a) && a >= 0 && a % align === 0;
  if (!ok(layout.desc, 16)) throw new RangeError(`packed descriptor ring at ${layout.desc} is not 16-aligned`);
  if (!ok(layout.driverEvent, 4)) throw new RangeError(`driver event area at ${layout.driverEvent} is not 4-aligned`);
  if (!ok(layout.deviceEvent, 4)) throw new RangeError(`device event area at ${layout.deviceEvent} is not 4-aligned`);
}
