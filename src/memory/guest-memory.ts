import { GuestMemoryError, hex } from './errors.ts';
import type { DirtyLog } from './dirty-log.ts';

/**
 * Guest memory as the back-end sees it: a table of regions, each a guest-physical
 * range [gpa, gpa+size) that the front-end also knows at a virtual address `uva`
 * (QEMU's userspace_addr in SET_MEM_TABLE, vhost-user spec "Memory access").
 *
 * Addresses are JavaScript numbers. Regions must lie below 2^53 so every mapped
 * address is exact; a 64-bit value read from a hostile descriptor that is 2^53 or
 * more rounds to a value that is still >= 2^53 and therefore still unmapped.
 *
 * Multi-byte values are little-endian (virtio 1.x rings, vhost-user on x86/arm64).
 * The typed-array views used for Atomics are host-endian, so the host must be
 * little-endian; that is checked once at load.
 */

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!HOST_IS_LITTLE_ENDIAN) throw new Error('vhostsim needs a little-endian host (ring Atomics use host-endian views)');

export interface RegionSpec {
  /** Guest-physical base address. */
  gpa: number;
  size: number;
  /** Front-end virtual base address; defaults to `gpa` (DPDK virtio-user maps GPA == VA). */
  uva?: number;
  /** Backing store; a fresh SharedArrayBuffer of `size` bytes when omitted. */
  buffer?: ArrayBufferLike;
  /** Byte offset of the region inside `buffer` (vhost-user mmap_offset). Multiple of 8. */
  offset?: number;
}

/** One mapped region with ready-made views starting at the region's first byte. */
export class MemoryRegion {
  readonly gpa: number;
  readonly size: number;
  readonly uva: number;
  /** One past the last guest-physical byte. */
  readonly gpaEnd: number;
  readonly uvaEnd: number;
  readonly buffer: ArrayBufferLike;
  readonly byteOffset: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** Host-endian views for Atomics; index = region offset / element size. */
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  /** 8-byte words: the fastest allocation-free way to copy packet bytes in and out. */
  readonly u64: BigUint64Array;

  constructor(spec: RegionSpec) {
    const offset = spec.offset ?? 0;
    const uva = spec.uva ?? spec.gpa;
    checkWhole('region gpa', spec.gpa);
    checkWhole('region uva', uva);
    checkWhole('region size', spec.size);
    checkWhole('region offset', offset);
    if (spec.size === 0) throw new GuestMemoryError('bad-region', 'region size is 0', spec.gpa);
    if (offset % 8 !== 0) throw new GuestMemoryError('bad-region', `region offset ${offset} is not a multiple of 8`, spec.gpa);
    if (spec.gpa + spec.size > Number.MAX_SAFE_INTEGER || uva + spec.size > Number.MAX_SAFE_INTEGER) {
      throw new GuestMemoryError('bad-region', `region ${hex(spec.gpa)}+${hex(spec.size)} reaches past 2^53`, spec.gpa);
    }
    const buffer = spec.buffer ?? new SharedArrayBuffer(spec.size);
    if (offset + spec.size > buffer.byteLength) {
      throw new GuestMemoryError(
        'bad-region',
        `region needs ${offset + spec.size} bytes of its buffer, which has ${buffer.byteLength}`,
        spec.gpa,
      );
    }
    this.gpa = spec.gpa;
    this.size = spec.size;
    this.uva = uva;
    this.gpaEnd = spec.gpa + spec.size;
    this.uvaEnd = uva + spec.size;
    this.buffer = buffer;
    this.byteOffset = offset;
    this.bytes = new Uint8Array(buffer, offset, spec.size);
    this.view = new DataView(buffer, offset, spec.size);
    this.u16 = new Uint16Array(buffer, offset, Math.floor(spec.size / 2));
    this.u32 = new Uint32Array(buffer, offset, Math.floor(spec.size / 4));
    this.u64 = new BigUint64Array(buffer, offset, Math.floor(spec.size / 8));
  }

  containsGpa(gpa: number, len: number): boolean {
    return gpa >= this.gpa && len <= this.gpaEnd - gpa;
  }
}

function checkWhole(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new GuestMemoryError('bad-argument', `${what} ${n} is not a non-negative safe integer`);
}

/**
 * A host-side packet buffer (an mbuf's data room): bytes plus a 64-bit word view of
 * the same memory, for allocation-free copies to and from guest memory.
 */
export class PacketBuffer {
  readonly bytes: Uint8Array;
  readonly words: BigUint64Array;
  /** 4-byte words, for copies to guest addresses aligned to 4 but not 8 (after a 12-byte header). */
  readonly u32: Uint32Array;
  constructor(size: number, buffer: ArrayBufferLike = new ArrayBuffer(Math.ceil(size / 8) * 8), offset = 0) {
    if (offset % 8 !== 0) throw new RangeError('packet buffer offset must be a multiple of 8');
    this.bytes = new Uint8Array(buffer, offset, size);
    this.words = new BigUint64Array(buffer, offset, Math.floor(size / 8));
    this.u32 = new Uint32Array(buffer, offset, Math.floor(size / 4));
  }
}

/**
 * A validated window into one region, used by ring code so that a ring's fixed
 * areas are translated once (as DPDK's vring translation does) and then accessed by
 * offset without a region lookup per field.
 */
export interface MemoryArea {
  readonly region: MemoryRegion;
  /** Offset of the area inside the region's views. */
  readonly offset: number;
  readonly gpa: number;
  readonly size: number;
}

export class GuestMemory {
  readonly regions: readonly MemoryRegion[];
  private lastHit: MemoryRegion;
  private log: DirtyLog | null = null;

  constructor(regions: readonly (RegionSpec | MemoryRegion)[]) {
    if (regions.length === 0) throw new GuestMemoryError('bad-region', 'guest memory needs at least one region');
    const built = regions.map((r) => (r instanceof MemoryRegion ? r : new MemoryRegion(r)));
    const byGpa = [...built].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < byGpa.length; i++) {
      if (byGpa[i].gpa < byGpa[i - 1].gpaEnd) {
        throw new GuestMemoryError('bad-region', `regions at ${hex(byGpa[i - 1].gpa)} and ${hex(byGpa[i].gpa)} overlap in GPA`, byGpa[i].gpa);
      }
    }
    const byUva = [...built].sort((a, b) => a.uva - b.uva);
    for (let i = 1; i < byUva.length; i++) {
      if (byUva[i].uva < byUva[i - 1].uvaEnd) {
        throw new GuestMemoryError('bad-region', `regions at uva ${hex(byUva[i - 1].uva)} and ${hex(byUva[i].uva)} overlap`, byUva[i].gpa);
      }
    }
    this.regions = byGpa;
    this.lastHit = byGpa[0];
  }

  /** Convenience: one SharedArrayBuffer-backed region at GPA `gpa` (default 0). */
  static create(size: number, gpa = 0, uva = gpa): GuestMemory {
    return new GuestMemory([{ gpa, size, uva }]);
  }

  // ---- translation -------------------------------------------------------

  /** The region holding all of [gpa, gpa+len), or a typed error. */
  regionFor(gpa: number, len: number): MemoryRegion {
    const hit = this.lastHit;
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa && len >= 0) return hit;
    return this.slowRegionFor(gpa, len);
  }

  private slowRegionFor(gpa: number, len: number): MemoryRegion {
    if (!(len >= 0) || !Number.isSafeInteger(len)) {
      throw new GuestMemoryError('bad-argument', `access length ${len} is not a non-negative integer`, gpa, len);
    }
    const r = this.findGpa(gpa);
    if (r === undefined) throw new GuestMemoryError('unmapped', `guest address ${hex(gpa)} is not mapped`, gpa, len);
    if (len > r.gpaEnd - gpa) {
      throw new GuestMemoryError(
        'out-of-range',
        `access ${hex(gpa)}+${len} runs past the end of region ${hex(r.gpa)}..${hex(r.gpaEnd)}`,
        gpa,
        len,
      );
    }
    this.lastHit = r;
    return r;
  }

  private findGpa(gpa: number): MemoryRegion | undefined {
    if (!Number.isSafeInteger(gpa)) return undefined;
    for (const r of this.regions) if (gpa >= r.gpa && gpa < r.gpaEnd) return r;
    return undefined;
  }

  /** True when [gpa, gpa+len) is mapped, possibly across adjacent regions. */
  isMapped(gpa: number, len: number): boolean {
    try {
      this.checkRange(gpa, len);
      return true;
    } catch {
      return false;
    }
  }

  /** Validated window for a fixed ring area; the whole area must sit in one region. */
  area(gpa: number, size: number): MemoryArea {
    const region = this.regionFor(gpa, size);
    return { region, offset: gpa - region.gpa, gpa, size };
  }

  /** Front-end virtual address → guest-physical address (DPDK `qva_to_vva` then back to GPA). */
  uvaToGpa(uva: number, len: number): number {
    for (const r of this.regions) {
      if (uva >= r.uva && uva < r.uvaEnd) {
        if (len > r.uvaEnd - uva || len < 0) {
          throw new GuestMemoryError('out-of-range', `front-end address ${hex(uva)}+${len} runs past its region`, uva, len, 'uva');
        }
        return r.gpa + (uva - r.uva);
      }
    }
    throw new GuestMemoryError('unmapped', `front-end address ${hex(uva)} is not mapped`, uva, len, 'uva');
  }

  gpaToUva(gpa: number, len = 1): number {
    const r = this.regionFor(gpa, len);
    return r.uva + (gpa - r.gpa);
  }

  // ---- scalar access (little-endian) ---------------------------------------

  readU8(gpa: number): number {
    const r = this.regionFor(gpa, 1);
    return r.bytes[gpa - r.gpa];
  }
  readU16(gpa: number): number {
    const r = this.regionFor(gpa, 2);
    return r.view.getUint16(gpa - r.gpa, true);
  }
  readU32(gpa: number): number {
    const r = this.regionFor(gpa, 4);
    return r.view.getUint32(gpa - r.gpa, true);
  }
  /** A u64 as a number; values of 2^53 and above come back rounded (and never map). */
  readU64(gpa: number): number {
    const r = this.regionFor(gpa, 8);
    const o = gpa - r.gpa;
    return r.view.getUint32(o, true) + r.view.getUint32(o + 4, true) * 0x1_0000_0000;
  }
  readU64Big(gpa: number): bigint {
    const r = this.regionFor(gpa, 8);
    return r.view.getBigUint64(gpa - r.gpa, true);
  }

  writeU8(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 1);
    r.bytes[gpa - r.gpa] = v;
    if (this.log !== null) this.log.mark(gpa, 1);
  }
  writeU16(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 2);
    r.view.setUint16(gpa - r.gpa, v, true);
    if (this.log !== null) this.log.mark(gpa, 2);
  }
  writeU32(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 4);
    r.view.setUint32(gpa - r.gpa, v, true);
    if (this.log !== null) this.log.mark(gpa, 4);
  }
  writeU64(gpa: number, v: number | bigint): void {
    const r = this.regionFor(gpa, 8);
    r.view.setBigUint64(gpa - r.gpa, BigInt(v), true);
    if (this.log !== null) this.log.mark(gpa, 8);
  }

  // ---- publishing stores and their loads --------------------------------------
  // JavaScript Atomics are sequentially consistent: an Atomics.store orders every
  // earlier plain write before it (release), an Atomics.load orders later reads
  // after it (acquire), and a store followed by a load of another location is not
  // reordered (the full barrier the virtio spec asks for between publishing an index
  // and reading the other side's event-suppression field).

  loadU16Acquire(gpa: number): number {
    const r = this.regionFor(gpa, 2);
    const o = gpa - r.gpa;
    if ((o & 1) !== 0) return r.view.getUint16(o, true); // unaligned: cannot be atomic; the rings never do this
    return Atomics.load(r.u16, o >>> 1);
  }
  storeU16Release(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 2);
    const o = gpa - r.gpa;
    if ((o & 1) !== 0) r.view.setUint16(o, v, true);
    else Atomics.store(r.u16, o >>> 1, v);
    if (this.log !== null) this.log.mark(gpa, 2);
  }

  // ---- byte ranges (may span adjacent regions) ----------------------------------

  /**
   * Checks that [gpa, gpa+len) is wholly mapped; a buffer may straddle regions when
   * they are adjacent in GPA (fact sheet §9). Throws before anything is touched.
   */
  checkRange(gpa: number, len: number): void {
    if (!Number.isSafeInteger(len) || len < 0) {
      throw new GuestMemoryError('bad-argument', `access length ${len} is not a non-negative integer`, gpa, len);
    }
    const first = this.findGpa(gpa);
    if (first === undefined) {
      if (len === 0 && Number.isSafeInteger(gpa)) return;
      throw new GuestMemoryError('unmapped', `guest address ${hex(gpa)} is not mapped`, gpa, len);
    }
    let r: MemoryRegion | undefined = first;
    let cur = gpa;
    const end = gpa + len;
    while (end > r.gpaEnd) {
      cur = r.gpaEnd;
      r = this.findGpa(cur);
      if (r === undefined) {
        throw new GuestMemoryError('out-of-range', `access ${hex(gpa)}+${len} reaches unmapped address ${hex(cur)}`, gpa, len);
      }
    }
  }

  /** Copies guest bytes [gpa, gpa+dst.length) into `dst`. */
  read(gpa: number, dst: Uint8Array): void {
    const len = dst.length;
    const hit = this.lastHit;
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa) {
      const o = gpa - hit.gpa;
      dst.set(hit.bytes.subarray(o, o + len));
      return;
    }
    this.checkRange(gpa, len);
    let done = 0;
    while (done < len) {
      const r = this.findGpa(gpa + done)!;
      const o = gpa + done - r.gpa;
      const n = Math.min(len - done, r.size - o);
      dst.set(r.bytes.subarray(o, o + n), done);
      done += n;
    }
  }

  /** Copies `src` into guest memory at `gpa`. */
  write(gpa: number, src: Uint8Array): void {
    const len = src.length;
    const hit = this.lastHit;
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa) {
      hit.bytes.set(src, gpa - hit.gpa);
    } else {
      this.checkRange(gpa, len);
      let done = 0;
      while (done < len) {
        const r = this.findGpa(gpa + done)!;
        const o = gpa + done - r.gpa;
        const n = Math.min(len - done, r.size - o);
        r.bytes.set(src.subarray(done, done + n), o);
        done += n;
      }
    }
    if (this.log !== null) this.log.mark(gpa, len);
  }

  /** Fills [gpa, gpa+len) with `value`. */
  fill(gpa: number, len: number, value = 0): void {
    const hit = this.lastHit;
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa && len > 0 && Number.isSafeInteger(gpa) && Number.isInteger(len)) {
      // Within the last region hit (a virtio-net header): no range walk.
      const o = gpa - hit.gpa;
      hit.bytes.fill(value, o, o + len);
      if (this.log !== null) this.log.mark(gpa, len);
      return;
    }
    this.checkRange(gpa, len);
    let done = 0;
    while (done < len) {
      const r = this.findGpa(gpa + done)!;
      const o = gpa + done - r.gpa;
      const n = Math.min(len - done, r.size - o);
      r.bytes.fill(value, o, o + n);
      done += n;
    }
    if (this.log !== null) this.log.mark(gpa, len);
  }

  /**
   * Copies `len` guest bytes at `gpa` into `dst` at `dstOffset` — the packet copy of a
   * vhost dequeue. When both sides are 8-byte aligned the bulk moves as 64-bit words
   * (V8 copies BigUint64Array elements without boxing), so the hot path allocates
   * nothing; anything else takes the general path.
   */
  copyOut(gpa: number, dst: PacketBuffer, dstOffset: number, len: number): void {
    const hit = this.lastHit;
    const o = gpa - hit.gpa;
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa && ((o | dstOffset) & 7) === 0 && len >= 0 && dstOffset + len <= dst.bytes.length) {
      const words = len >>> 3;
      const src = hit.u64;
      const out = dst.words;
      const s0 = o >>> 3;
      const d0 = dstOffset >>> 3;
      for (let i = 0; i < words; i++) out[d0 + i] = src[s0 + i];
      for (let i = words << 3; i < len; i++) dst.bytes[dstOffset + i] = hit.bytes[o + i];
      return;
    }
    this.read(gpa, dst.bytes.subarray(dstOffset, dstOffset + len));
  }

  /** Copies `len` bytes of `src` at `srcOffset` into guest memory at `gpa` — the packet copy of a vhost enqueue. */
  copyIn(gpa: number, src: PacketBuffer, srcOffset: number, len: number): void {
    const hit = this.lastHit;
    const o = gpa - hit.gpa;
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa && ((o | srcOffset) & 7) === 0 && len >= 0 && srcOffset + len <= src.bytes.length) {
      const words = len >>> 3;
      const dst = hit.u64;
      const from = src.words;
      const d0 = o >>> 3;
      const s0 = srcOffset >>> 3;
      for (let i = 0; i < words; i++) dst[d0 + i] = from[s0 + i];
      for (let i = words << 3; i < len; i++) hit.bytes[o + i] = src.bytes[srcOffset + i];
      if (this.log !== null) this.log.mark(gpa, len);
      return;
    }
    if (gpa >= hit.gpa && len <= hit.gpaEnd - gpa && len >= 0 && srcOffset >= 0 && srcOffset + len <= src.bytes.length && len <= 256) {
      // A short frame after a 12-byte header: 4-byte words (or bytes) beat allocating a
      // subarray; longer copies take `write` (one memcpy).
      const d = hit.bytes;
      const b = src.bytes;
      let i = 0;
      if (((o | srcOffset) & 3) === 0) {
        const d32 = hit.u32;
        const s32 = src.u32;
        const words = len >>> 2;
        const d0 = o >>> 2;
        const s0 = srcOffset >>> 2;
        for (let k = 0; k < words; k++) d32[d0 + k] = s32[s0 + k];
        i = words << 2;
      }
      for (; i < len; i++) d[o + i] = b[srcOffset + i];
      if (this.log !== null) this.log.mark(gpa, len);
      return;
    }
    this.write(gpa, src.bytes.subarray(srcOffset, srcOffset + len));
  }

  /** Copies `len` bytes inside guest memory (source and target may be in different regions). */
  copyWithin(dstGpa: number, srcGpa: number, len: number): void {
    const tmp = new Uint8Array(len);
    this.read(srcGpa, tmp);
    this.write(dstGpa, tmp);
  }

  // ---- dirty-page logging (VHOST_USER_SET_LOG_BASE / F_LOG_ALL) ----------------

  /** Starts (or, with null, stops) marking every write in a dirty-page bitmap. */
  setDirtyLog(log: DirtyLog | null): void {
    this.log = log;
  }
  get dirtyLog(): DirtyLog | null {
    return this.log;
  }
  /** Marks a range written by code that wrote through a MemoryArea view directly. */
  markDirty(gpa: number, len: number): void {
    if (this.log !== null) this.log.mark(gpa, len);
  }

  /** Total mapped bytes. */
  get size(): number {
    let n = 0;
    for (const r of this.regions) n += r.size;
    return n;
  }
}
