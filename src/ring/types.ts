/** Negotiated features that change ring behaviour. */
export interface RingFeatures {
  /** VIRTIO_F_INDIRECT_DESC (28). */
  indirect: boolean;
  /** VIRTIO_F_EVENT_IDX (29). */
  eventIdx: boolean;
  /** VIRTIO_F_IN_ORDER (35). */
  inOrder: boolean;
}

export const NO_FEATURES: RingFeatures = Object.freeze({ indirect: false, eventIdx: false, inOrder: false });

/** One guest buffer segment as the driver posts it. */
export interface Segment {
  /** Guest-physical address. */
  addr: number;
  len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE). */
  writable: boolean;
}

/**
 * A walked descriptor chain, as the device sees it: a reusable container so the hot
 * path allocates nothing (pass the same one to every `pop`). Segment i is
 * (addr[i], len[i], writable[i]); readable segments come first.
 */
export class DescriptorChain {
  /** Split: head descriptor index. Packed: buffer id (from the chain's last descriptor). */
  id = 0;
  /** Number of ring descriptors the chain occupies (an indirect table counts as 1). */
  ringDescriptors = 0;
  /** Segments after following indirect tables. */
  count = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** True when the chain went through an indirect table. */
  indirect = false;
  readonly addr: Float64Array;
  readonly len: Uint32Array;
  readonly writable: Uint8Array;

  constructor(readonly capacity = 32768) {
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  reset(): void {
    this.id = 0;
    this.ringDescriptors = 0;
    this.count = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.indirect = false;
  }

  /** Copies the segments out as plain objects (tests, tracing; not the hot path). */
  segments(): Segment[] {
    const out: Segment[] = [];
    for (let i = 0; i < this.count; i++) out.push({ addr: this.addr[i], len: this.len[i], writable: this.writable[i] === 1 });
    return out;
  }
}

/** A buffer the driver got back from the device. */
export interface UsedBuffer<T> {
  token: T;
  /** Bytes the device says it wrote into the writable part. */
  len: number;
  /** Split: head index. Packed: buffer id. */
  id: number;
}

