/**
 * Packet buffers inside guest memory, as a guest driver's mempool lays them out: fixed
 * slots of headroom + data room (DPDK's RTE_PKTMBUF_HEADROOM 128 + 2048). The guest's
 * virtio drivers post these slots as RX buffers, forward them, and transmit them with the
 * virtio-net header written into the headroom, so frames never leave guest memory.
 */
import type { GuestMemory, PacketBuffer } from '../memory/index.ts';
import type { NetPacket, PacketSource } from './mbuf.ts';

export const GUEST_MBUF_HEADROOM = 128;
export const GUEST_MBUF_DATAROOM = 2048;

export interface GuestMbufPoolOptions {
  count: number;
  dataRoom?: number;
  headroom?: number;
}

/** One slot; `next` links the segments of a multi-buffer packet (mergeable RX, large TX). */
export class GuestMbuf implements NetPacket {
  /** Guest address of the first byte of data. */
  dataGpa = 0;
  /** Bytes of data in this segment. */
  dataLen = 0;
  /** Whole packet length (first segment only). */
  pktLen = 0;
  nbSegs = 1;
  next: GuestMbuf | null = null;
  port = 0;
  inUse = false;

  constructor(
    readonly pool: GuestMbufPool,
    readonly index: number,
    /** Guest address of the slot (start of headroom). */
    readonly bufGpa: number,
  ) {}

  // MACs move as a u16 and a u32 (little-endian accessors, so the bytes are swapped): two
  // guest-memory accesses per address instead of six.
  readMac(off: 0 | 6): number {
    const mem = this.pool.mem;
    const gpa = this.dataGpa + off;
    const a = mem.readU16(gpa);
    const b = mem.readU32(gpa + 2);
    const hi = ((a & 0xff) << 8) | (a >>> 8);
    return hi * 0x1_0000_0000 + bswap32(b);
  }

  writeMac(off: 0 | 6, mac: number): void {
    const mem = this.pool.mem;
    const gpa = this.dataGpa + off;
    const hi = Math.floor(mac / 0x1_0000_0000) & 0xffff;
    mem.writeU16(gpa, ((hi & 0xff) << 8) | (hi >>> 8));
    mem.writeU32(gpa + 2, bswap32(mac >>> 0));
  }

  copyTo(dst: PacketBuffer): number {
    const mem = this.pool.mem;
    let off = 0;
    for (let s: GuestMbuf | null = this; s !== null; s = s.next) {
      mem.copyOut(s.dataGpa, dst, off, s.dataLen);
      off += s.dataLen;
    }
    return off;
  }

  free(): void {
    this.pool.free(this);
  }
}

export class GuestMbufPool implements PacketSource<GuestMbuf> {
  readonly dataRoom: number;
  readonly headroom: number;
  readonly slotSize: number;
  readonly count: number;
  private readonly all: GuestMbuf[] = [];
  private readonly freeList: GuestMbuf[] = [];
  /** Allocations refused because every slot was in use. */
  failures = 0;

  /** Bytes of guest memory a pool of `count` slots occupies. */
  static footprint(opts: GuestMbufPoolOptions): number {
    return opts.count * slotSize(opts);
  }

  constructor(
    readonly mem: GuestMemory,
    readonly base: number,
    opts: GuestMbufPoolOptions,
  ) {
    this.dataRoom = opts.dataRoom ?? GUEST_MBUF_DATAROOM;
    this.headroom = opts.headroom ?? GUEST_MBUF_HEADROOM;
    if (this.headroom < 16) throw new RangeError('guest mbuf headroom must hold a virtio-net header (≥ 16 bytes)');
    this.slotSize = slotSize(opts);
    this.count = opts.count;
    if (base % 64 !== 0) throw new RangeError(`guest mbuf pool base 0x${base.toString(16)} is not 64-byte aligned`);
    mem.checkRange(base, this.count * this.slotSize);
    for (let i = 0; i < this.count; i++) this.all.push(new GuestMbuf(this, i, base + i * this.slotSize));
    for (let i = this.count - 1; i >= 0; i--) this.freeList.push(this.all[i]);
  }

  get available(): number {
    return this.freeList.length;
  }

  get inUse(): number {
    return this.count - this.freeList.length;
  }

  /** A one-segment mbuf with its data at the end of the headroom, or null when the pool is empty. */
  alloc(): GuestMbuf | null {
    const m = this.freeList.pop();
    if (m === undefined) {
      this.failures++;
      return null;
    }
    m.inUse = true;
    m.dataGpa = m.bufGpa + this.headroom;
    m.dataLen = 0;
    m.pktLen = 0;
    m.nbSegs = 1;
    m.next = null;
    m.port = 0;
    return m;
  }

  /** Frees every segment of the packet. */
  free(m: GuestMbuf): void {
    for (let s: GuestMbuf | null = m; s !== null; ) {
      if (s.pool !== this) throw new Error('guest mbuf freed into another pool');
      if (!s.inUse) throw new Error(`guest mbuf ${s.index} freed twice`);
      const next: GuestMbuf | null = s.next;
      s.inUse = false;
      s.next = null;
      this.freeList.push(s);
      s = next;
    }
  }

  /** Every slot back in the pool (device reset: what the rings held is abandoned). */
  reset(): void {
    this.freeList.length = 0;
    for (let i = this.count - 1; i >= 0; i--) {
      const m = this.all[i];
      m.inUse = false;
      m.next = null;
      this.freeList.push(m);
    }
  }

  /** A packet holding `len` bytes of `src`, chained over as many slots as it needs. */
  allocFrame(src: PacketBuffer, len: number): GuestMbuf | null {
    const need = Math.max(1, Math.ceil(len / this.dataRoom));
    if (this.freeList.length < need) {
      this.failures++;
      return null;
    }
    const head = this.alloc()!;
    let tail = head;
    let off = 0;
    for (let i = 0; i < need; i++) {
      const seg = i === 0 ? head : this.alloc()!;
      const k = Math.min(this.dataRoom, len - off);
      this.mem.copyIn(seg.dataGpa, src, off, k);
      seg.dataLen = k;
      off += k;
      if (i > 0) {
        tail.next = seg;
        tail = seg;
      }
    }
    head.pktLen = len;
    head.nbSegs = need;
    return head;
  }
}

function bswap32(v: number): number {
  return ((v >>> 24) | ((v >>> 8) & 0xff00) | ((v & 0xff00) << 8) | ((v & 0xff) << 24)) >>> 0;
}

function slotSize(opts: GuestMbufPoolOptions): number {
  const raw = (opts.headroom ?? GUEST_MBUF_HEADROOM) + (opts.dataRoom ?? GUEST_MBUF_DATAROOM);
  return Math.ceil(raw / 64) * 64;
}
