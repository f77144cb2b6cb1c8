/**
 * Packets as the forwarding engines see them. Two kinds exist: host mbufs (`Mbuf`, bytes in
 * host memory: the back-end's testpmd, the NIC, the generator) and guest mbufs (bytes in
 * guest memory: the guest's virtio PMD). Engines only need the MAC addresses, the length
 * and a way to give the packet back, so both implement `NetPacket`.
 */
import { PacketBuffer } from '../memory/index.ts';
import { readMac, writeMac } from './packet.ts';

export interface NetPacket {
  /** Packet length in bytes (no virtio-net header, no FCS). */
  readonly pktLen: number;
  /** Port the packet was received on. */
  port: number;
  /** MAC at byte offset 0 (destination) or 6 (source). */
  readMac(off: 0 | 6): number;
  writeMac(off: 0 | 6, mac: number): void;
  /** Copies the whole packet to the start of `dst` (which must be large enough); returns pktLen. */
  copyTo(dst: PacketBuffer): number;
  /** Returns the packet (and any segments) to its pool. */
  free(): void;
}

/** Where a port's packets come from (testpmd's per-socket mbuf pool). */
export interface PacketSource<P extends NetPacket> {
  /** A packet holding the first `len` bytes of `src`, or null when the pool is exhausted. */
  allocFrame(src: PacketBuffer, len: number): P | null;
}

/** A host packet buffer: RTE_MBUF_DEFAULT_DATAROOM (2048) bytes unless the pool says otherwise. */
export class Mbuf implements NetPacket {
  buf: PacketBuffer;
  /** Data length (one segment: the packet length). */
  len = 0;
  port = 0;
  /** True while the mbuf is out of its pool (catches double frees). */
  inUse = false;

  constructor(
    readonly pool: MbufPool,
    size: number,
  ) {
    this.buf = new PacketBuffer(size);
  }

  get pktLen(): number {
    return this.len;
  }

  get bytes(): Uint8Array {
    return this.buf.bytes;
  }

  /**
   * Makes room for `len` bytes. A frame bigger than the data room would be an mbuf chain
   * (or an external buffer) in DPDK; here the one buffer grows, once, and keeps its size.
   */
  reserve(len: number): void {
    if (len > this.buf.bytes.length) this.buf = new PacketBuffer(Math.ceil(len / 1024) * 1024);
  }

  readMac(off: 0 | 6): number {
    return readMac(this.buf.bytes, off);
  }

  writeMac(off: 0 | 6, mac: number): void {
    writeMac(this.buf.bytes, off, mac);
  }

  copyTo(dst: PacketBuffer): number {
    dst.bytes.set(this.buf.bytes.subarray(0, this.len));
    return this.len;
  }

  free(): void {
    this.pool.free(this);
  }
}

export interface MbufPoolOptions {
  /** Data room per mbuf (default 2048, testpmd's default mbuf data size). */
  dataRoom?: number;
  /** Most mbufs the pool hands out at once (default: unbounded; allocation grows the pool). */
  capacity?: number;
}

/** A free list of host mbufs: allocation happens only while the pool grows. */
export class MbufPool implements PacketSource<Mbuf> {
  readonly dataRoom: number;
  readonly capacity: number;
  private readonly freeList: Mbuf[] = [];
  private created = 0;
  private used = 0;
  /** Allocations refused because the pool was exhausted. */
  failures = 0;

  constructor(
    readonly name = 'mbuf_pool',
    opts: MbufPoolOptions = {},
  ) {
    this.dataRoom = opts.dataRoom ?? 2048;
    this.capacity = opts.capacity ?? Infinity;
  }

  /** Mbufs currently handed out. */
  get inUse(): number {
    return this.used;
  }

  get available(): number {
    return this.capacity - this.used;
  }

  alloc(): Mbuf | null {
    if (this.used >= this.capacity) {
      this.failures++;
      return null;
    }
    let m = this.freeList.pop();
    if (m === undefined) {
      m = new Mbuf(this, this.dataRoom);
      this.created++;
    }
    m.inUse = true;
    m.len = 0;
    m.port = 0;
    this.used++;
    return m;
  }

  free(m: Mbuf): void {
    if (m.pool !== this) throw new Error(`mbuf of pool '${m.pool.name}' freed into '${this.name}'`);
    if (!m.inUse) throw new Error(`mbuf freed twice into '${this.name}'`);
    m.inUse = false;
    this.used--;
    this.freeList.push(m);
  }

  allocFrame(src: PacketBuffer, len: number): Mbuf | null {
    const m = this.alloc();
    if (m === null) return null;
    m.reserve(len);
    m.buf.bytes.set(src.bytes.subarray(0, len));
    m.len = len;
    return m;
  }
}
