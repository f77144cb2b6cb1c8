/**
 * Dirty-page bitmap for live migration (vhost-user spec "Migration"): one bit per
 * 4096-byte page of guest-physical memory, `log[page / 8] |= 1 << (page % 8)`, set
 * with an atomic OR because the front-end may read and clear it concurrently.
 */
export const LOG_PAGE_SIZE = 4096;

export class DirtyLog {
  readonly bitmap: Uint8Array;

  /** `buffer` is the shared log area (from SET_LOG_BASE); its size bounds the GPAs it can log. */
  constructor(buffer: ArrayBufferLike = new SharedArrayBuffer(4096), offset = 0, size = buffer.byteLength - offset) {
    this.bitmap = new Uint8Array(buffer, offset, size);
  }

  /** Marks every page touched by [gpa, gpa+len). Pages beyond the bitmap are ignored, as DPDK does. */
  mark(gpa: number, len: number): void {
    if (len <= 0) return;
    const first = Math.floor(gpa / LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    const limit = this.bitmap.length * 8;
    for (let page = first; page <= last && page < limit; page++) {
      Atomics.or(this.bitmap, page >>> 3, 1 << (page & 7));
    }
  }

  isDirty(gpa: number): boolean {
    const page = Math.floor(gpa / LOG_PAGE_SIZE);
    if (page >= this.bitmap.length * 8) return false;
    return (Atomics.load(this.bitmap, page >>> 3) & (1 << (page & 7))) !== 0;
  }

  /** Page numbers currently marked. */
  dirtyPages(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.bitmap.length; i++) {
      const b = Atomics.load(this.bitmap, i);
      if (b === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) out.push(i * 8 + bit);
    }
    return out;
  }

  clear(): void {
    for (let i = 0; i < this.bitmap.length; i++) Atomics.store(this.bitmap, i, 0);
  }
}
