/**
 * One vring's IOTLB cache, as DPDK 22.11 keeps it (lib/vhost/iotlb.c): entries sorted by IOVA,
 * an UPDATE for an IOVA already present is ignored ("entries must be invalidated before being
 * updated"), INVALIDATE removes every entry overlapping the range, a lookup may span several
 * consecutive entries, and a miss is remembered as pending until an UPDATE covers it.
 *
 * DPDK stores the back-end's own virtual address; the model stores the front-end address
 * (`uaddr`, already checked against the memory table at insertion) and translates it to a
 * guest-physical address when a ring is mapped.
 */

/** Access bits of `struct vhost_iotlb_msg.perm`. */
export const IOTLB_RO = 1;
export const IOTLB_WO = 2;
export const IOTLB_RW = 3;
/** `struct vhost_iotlb_msg.type`. */
export const IOTLB_MISS = 1;
export const IOTLB_UPDATE = 2;
export const IOTLB_INVALIDATE = 3;
export const IOTLB_ACCESS_FAIL = 4;

export interface IotlbEntry {
  iova: bigint;
  uaddr: bigint;
  size: bigint;
  perm: number;
}

export class IotlbCache {
  private entries: IotlbEntry[] = [];
  private pending: { iova: bigint; perm: number }[] = [];

  get size(): number {
    return this.entries.length;
  }

  list(): readonly IotlbEntry[] {
    return this.entries;
  }

  insert(e: IotlbEntry): void {
    let i = 0;
    for (; i < this.entries.length; i++) {
      const n = this.entries[i]!;
      if (n.iova === e.iova) {
        this.removePending(e.iova, e.size, e.perm);
        return;
      }
      if (n.iova > e.iova) break;
    }
    this.entries.splice(i, 0, { ...e });
    this.removePending(e.iova, e.size, e.perm);
  }

  remove(iova: bigint, size: bigint): void {
    if (size === 0n) return;
    this.entries = this.entries.filter((n) => {
      if (iova + size < n.iova) return true;
      return !(iova < n.iova + n.size);
    });
  }

  flush(): void {
    this.entries = [];
    this.pending = [];
  }

  /**
   * `vhost_user_iotlb_cache_find`: the front-end address of `iova` and how many bytes from it
   * are mapped contiguously with at least `perm`, up to `size`.
   */
  find(iova: bigint, size: bigint, perm: number): { uaddr: bigint; mapped: bigint } {
    let uaddr = 0n;
    let found = false;
    let mapped = 0n;
    let cur = iova;
    if (size === 0n) return { uaddr: 0n, mapped: 0n };
    for (const n of this.entries) {
      if (cur < n.iova) break;
      if (cur >= n.iova + n.size) continue;
      if ((perm & n.perm) !== perm) {
        found = false;
        uaddr = 0n;
        break;
      }
      const offset = cur - n.iova;
      if (!found) {
        uaddr = n.uaddr + offset;
        found = true;
      }
      mapped += n.size - offset;
      cur = n.iova + n.size;
      if (mapped >= size) break;
    }
    return { uaddr: found ? uaddr : 0n, mapped: mapped < size ? mapped : size };
  }

  /** True if a miss for this IOVA was already requested (the model sends one MISS per address until updated). */
  pendingMiss(iova: bigint, perm: number): boolean {
    return this.pending.some((p) => p.iova === iova && (p.perm & perm) === perm);
  }

  addPending(iova: bigint, perm: number): void {
    this.pending.push({ iova, perm });
  }

  private removePending(iova: bigint, size: bigint, perm: number): void {
    this.pending = this.pending.filter((p) => !(p.iova >= iova && p.iova < iova + size && (p.perm & perm) === p.perm));
  }
}
