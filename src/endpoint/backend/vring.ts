/**
 * Per-vring state of the DPDK 22.11 back-end (`struct vhost_virtqueue`) and the ring address
 * translation of lib/vhost/vhost_user.c `translate_ring_addresses`.
 *
 * The ring position lives here while the ring is not mapped and in the device half
 * (SplitDevice / PackedDevice) while it is: `invalidate()` pulls it back, `translate()` hands
 * it over. DPDK's three ring pointers are kept as guest-physical addresses (`mapped`), set
 * even when the area turned out too short, exactly as DPDK leaves a too-short pointer
 * non-NULL (readiness only tests the pointers); `accessOk` says whether translation completed,
 * and only then is there a device half for the data path.
 */
import type { GuestMemory } from '../../memory/index.ts';
import { hasFeature, VirtioFeature } from '../../virtio/index.ts';
import type { AnyFd } from '../../transport/index.ts';
import { SplitDevice, type SplitDeviceState } from '../../ring/split/index.ts';
import { PackedDevice, type PackedDeviceState } from '../../ring/packed/index.ts';
import type { RingError } from '../../ring/errors.ts';
import type { RingFeatures } from '../../ring/types.ts';
import { IotlbCache, IOTLB_RW } from './iotlb.ts';
import { configEvent, hex64, modelEvent, type VhostLogEvent } from './log.ts';
import type { InflightCheck, InflightView } from './inflight.ts';

/** DPDK's fd slots: `VIRTIO_UNINITIALIZED_EVENTFD` (-2), `VIRTIO_INVALID_EVENTFD` (-1, NOFD), or an fd. */
export type FdSlot = 'uninit' | 'nofd' | AnyFd;

export function fdNumber(slot: FdSlot): number {
  if (slot === 'uninit') return -2;
  if (slot === 'nofd') return -1;
  return slot.fd;
}

export function closeSlot(slot: FdSlot): void {
  if (slot !== 'uninit' && slot !== 'nofd' && !slot.closed) slot.close();
}

/** `struct vhost_vring_addr` as last received (u64 fields as bigint). */
export interface RingAddrs {
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export const ZERO_RING_ADDRS: Readonly<RingAddrs> = Object.freeze({ flags: 0, desc: 0n, used: 0n, avail: 0n, log: 0n });

/** `VHOST_VRING_F_LOG` is bit 0 of the addr flags. */
const VRING_F_LOG = 1;

export function ringFeatures(features: bigint): RingFeatures {
  return {
    indirect: hasFeature(features, VirtioFeature.RING_INDIRECT_DESC),
    eventIdx: hasFeature(features, VirtioFeature.RING_EVENT_IDX),
    inOrder: hasFeature(features, VirtioFeature.IN_ORDER),
  };
}

export class Vring {
  /** Queue size (SET_VRING_NUM); 0 until set. DPDK keeps a refused non-power-of-two size too. */
  size = 0;
  // Ring position while unmapped (u16 free-running for split; slot + wrap for packed).
  lastAvailIdx = 0;
  lastUsedIdx = 0;
  availWrap = true;
  usedWrap = true;
  signalledUsedValid = false;
  signalledUsed = 0;

  ringAddrs: RingAddrs = { ...ZERO_RING_ADDRS };
  kick: FdSlot = 'uninit';
  call: FdSlot = 'uninit';
  enabled = false;
  /** vq->ready: the state last reported through vring_state_changed. */
  ready = false;
  /** vq->notif_enable: what the application asked for guest notifications (applied when ready). */
  notifEnable: 'uninit' | boolean = 'uninit';

  /** Translated ring parts as guest-physical addresses (DPDK's desc/avail/used pointers). */
  mapped: { desc?: number; avail?: number; used?: number } = {};
  accessOk = false;
  logGuestAddr = 0n;

  device: SplitDevice | PackedDevice | undefined;
  /** Why the device half could not be built although translation succeeded. */
  deviceError: string | undefined;
  /** The malformed chain the data path is stuck at, if any (the queue makes no progress past it). */
  broken: RingError | undefined;

  inflight: InflightView | undefined;
  /** `vq->resubmit_inflight`, set by the first kick that found inflight descriptors. */
  resubmit: InflightCheck | undefined;
  globalCounter = 0n;

  readonly iotlb = new IotlbCache();

  constructor(readonly index: number) {}

  /** vq_is_ready's ring test: the three pointers are set (even if too short). */
  ringsSet(): boolean {
    return this.mapped.desc !== undefined && this.mapped.avail !== undefined && this.mapped.used !== undefined;
  }

  anyRingSet(): boolean {
    return this.mapped.desc !== undefined || this.mapped.avail !== undefined || this.mapped.used !== undefined;
  }

  /** `vq_is_ready`. */
  isReady(): boolean {
    return this.ringsSet() && this.kick !== 'uninit' && this.call !== 'uninit' && this.enabled;
  }

  /** Copies the device half's position back into this record. */
  syncFromDevice(): void {
    const d = this.device;
    if (d === undefined) return;
    if (d instanceof SplitDevice) {
      const s = d.saveState();
      this.lastAvailIdx = s.lastAvailIdx;
      this.lastUsedIdx = s.lastUsedIdx;
      this.signalledUsedValid = s.signalledUsedValid;
      this.signalledUsed = s.signalledUsed;
    } else {
      const s = d.saveState();
      this.lastAvailIdx = s.lastAvailIdx;
      this.availWrap = s.availWrap;
      this.lastUsedIdx = s.lastUsedIdx;
      this.usedWrap = s.usedWrap;
      this.signalledUsedValid = s.signalledUsedValid;
      this.signalledUsed = s.signalledUsed;
    }
  }

  /** Pushes this record's position into the device half (SET_VRING_BASE on a mapped ring). */
  pushToDevice(events: VhostLogEvent[]): void {
    const d = this.device;
    if (d === undefined) return;
    try {
      if (d instanceof SplitDevice) d.restoreState(this.splitState());
      else d.restoreState(this.packedState());
    } catch (e) {
      this.dropDevice(events, e);
    }
  }

  /** `vring_invalidate`: forget the mapping (the position stays). */
  invalidate(): void {
    this.syncFromDevice();
    this.device = undefined;
    this.deviceError = undefined;
    this.broken = undefined;
    this.accessOk = false;
    this.mapped = {};
    this.logGuestAddr = 0n;
  }

  /** Rebuilds the device half with new features (position kept). */
  rebuildDevice(ctx: TranslateContext): void {
    if (!this.accessOk) return;
    this.syncFromDevice();
    this.device = undefined;
    this.buildDevice(ctx);
  }

  splitState(): SplitDeviceState {
    return {
      lastAvailIdx: this.lastAvailIdx & 0xffff,
      lastUsedIdx: this.lastUsedIdx & 0xffff,
      signalledUsedValid: this.signalledUsedValid,
      signalledUsed: this.signalledUsed & 0xffff,
    };
  }

  packedState(): PackedDeviceState {
    return {
      lastAvailIdx: this.lastAvailIdx,
      availWrap: this.availWrap,
      lastUsedIdx: this.lastUsedIdx,
      usedWrap: this.usedWrap,
      signalledUsedValid: this.signalledUsedValid,
      signalledUsed: this.signalledUsed & 0xffff,
    };
  }

  private dropDevice(events: VhostLogEvent[], e: unknown): void {
    this.device = undefined;
    this.deviceError = e instanceof Error ? e.message : String(e);
    events.push(modelEvent('ring-device-unavailable', `vring ${this.index}: mapped, but no device half: ${this.deviceError}`));
  }

  buildDevice(ctx: TranslateContext): void {
    const mem = ctx.mem;
    const { desc, avail, used } = this.mapped;
    if (mem === undefined || desc === undefined || avail === undefined || used === undefined) return;
    const rf = ringFeatures(ctx.features);
    try {
      if (hasFeature(ctx.features, VirtioFeature.RING_PACKED)) {
        this.device = new PackedDevice(mem, { size: this.size, desc, driverEvent: avail, deviceEvent: used }, rf, {}, this.packedState());
      } else {
        this.device = new SplitDevice(mem, { size: this.size, desc, avail, used }, rf, {}, this.splitState());
      }
      this.deviceError = undefined;
    } catch (e) {
      this.dropDevice(ctx.events, e);
    }
  }
}

/** What translation needs from the device. */
export interface TranslateContext {
  /** Guest memory, undefined without a memory table (or with an empty one). */
  readonly mem: GuestMemory | undefined;
  readonly features: bigint;
  readonly events: VhostLogEvent[];
  /** An IOTLB miss to report on the back-end channel (IOMMU_PLATFORM only). */
  iotlbMiss(vq: Vring, iova: bigint, perm: number): void;
  /** Broken-profile switch (DpdkBackendOptions.skipUsedIdxResync): no re-base to used->idx. */
  readonly skipUsedIdxResync?: boolean;
}

/**
 * `qva_to_vva`: the region holding front-end address `qva`; the length is cut at the region's
 * end. Returns the guest-physical address and the mapped length, or undefined.
 */
export function qvaToGpa(mem: GuestMemory | undefined, qva: bigint, len: number): { gpa: number; len: number } | undefined {
  if (mem === undefined || qva > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  const a = Number(qva);
  for (const r of mem.regions) {
    if (a >= r.uva && a < r.uvaEnd) {
      const room = r.uvaEnd - a;
      return { gpa: r.gpa + (a - r.uva), len: len > room ? room : len };
    }
  }
  return undefined;
}

/** `ring_addr_to_vva`: a front-end VA, or with IOMMU_PLATFORM an IOVA looked up in the IOTLB. */
function ringAddrToGpa(ctx: TranslateContext, vq: Vring, ra: bigint, size: number): { gpa: number; len: number } | undefined {
  if (!hasFeature(ctx.features, VirtioFeature.ACCESS_PLATFORM)) return qvaToGpa(ctx.mem, ra, size);
  if (size === 0) return undefined;
  const f = vq.iotlb.find(ra, BigInt(size), IOTLB_RW);
  if (f.mapped === BigInt(size)) {
    const t = qvaToGpa(ctx.mem, f.uaddr, size);
    return t;
  }
  const missAt = ra + f.mapped;
  if (!vq.iotlb.pendingMiss(missAt, IOTLB_RW)) {
    vq.iotlb.addPending(missAt, IOTLB_RW);
    ctx.iotlbMiss(vq, missAt, IOTLB_RW);
  }
  return undefined;
}

/**
 * `translate_ring_addresses` (DPDK 22.11 vhost_user.c). Split rings already mapped are left
 * alone; after mapping a split ring, a `last_used_idx` that disagrees with the ring's used->idx
 * is replaced, with last_avail_idx, by used->idx (WARNING "…mismatches;"): DPDK trusts guest
 * memory over SET_VRING_BASE.
 */
export function translateRingAddresses(ctx: TranslateContext, vq: Vring): void {
  const ev = ctx.events;
  const debug = (ring: 'desc' | 'avail' | 'used' | 'log', text: string): void => {
    ev.push(configEvent('DEBUG', text, { kind: 'ring-map-failed', ring }));
  };
  const packed = hasFeature(ctx.features, VirtioFeature.RING_PACKED);
  const iommu = hasFeature(ctx.features, VirtioFeature.ACCESS_PLATFORM);
  if ((vq.ringAddrs.flags & VRING_F_LOG) !== 0) {
    let logGpa = vq.ringAddrs.log;
    if (iommu) {
      // translate_log_addr: IOVA → VA → GPA; 0 when unmapped.
      const t = ringAddrToGpa(ctx, vq, vq.ringAddrs.log, 8);
      logGpa = t !== undefined && t.len === 8 ? BigInt(t.gpa) : 0n;
    }
    vq.logGuestAddr = logGpa;
    if (logGpa === 0n) {
      debug('log', 'failed to map log_guest_addr.');
      return;
    }
  }
  const eventIdx = hasFeature(ctx.features, VirtioFeature.RING_EVENT_IDX);
  if (packed) {
    const dlen = 16 * vq.size;
    const d = ringAddrToGpa(ctx, vq, vq.ringAddrs.desc, dlen);
    vq.mapped.desc = d?.gpa;
    if (d === undefined || d.len !== dlen) return debug('desc', 'failed to map desc_packed ring.');
    const a = ringAddrToGpa(ctx, vq, vq.ringAddrs.avail, 4);
    vq.mapped.avail = a?.gpa;
    if (a === undefined || a.len !== 4) return debug('avail', 'failed to find driver area address.');
    const u = ringAddrToGpa(ctx, vq, vq.ringAddrs.used, 4);
    vq.mapped.used = u?.gpa;
    if (u === undefined || u.len !== 4) return debug('used', 'failed to find device area address.');
    vq.accessOk = true;
    vq.buildDevice(ctx);
    return;
  }
  if (vq.ringsSet()) return;
  const dlen = 16 * vq.size;
  const d = ringAddrToGpa(ctx, vq, vq.ringAddrs.desc, dlen);
  vq.mapped.desc = d?.gpa;
  if (d === undefined || d.len !== dlen) return debug('desc', 'failed to map desc ring.');
  const alen = 4 + 2 * vq.size + (eventIdx ? 2 : 0);
  const a = ringAddrToGpa(ctx, vq, vq.ringAddrs.avail, alen);
  vq.mapped.avail = a?.gpa;
  if (a === undefined || a.len !== alen) return debug('avail', 'failed to map avail ring.');
  const ulen = 4 + 8 * vq.size + (eventIdx ? 2 : 0);
  const u = ringAddrToGpa(ctx, vq, vq.ringAddrs.used, ulen);
  vq.mapped.used = u?.gpa;
  if (u === undefined || u.len !== ulen) return debug('used', 'failed to map used ring.');
  // The used area is at least 4 bytes inside one region, so used->idx is readable.
  const usedIdx = ctx.mem!.readU16(u.gpa + 2);
  if ((vq.lastUsedIdx & 0xffff) !== usedIdx && ctx.skipUsedIdxResync !== true) {
    ev.push(
      configEvent(
        'WARNING',
        `last_used_idx (${vq.lastUsedIdx & 0xffff}) and vq->used->idx (${usedIdx}) mismatches;`,
        { kind: 'used-idx-mismatch', index: vq.index, lastUsedIdx: vq.lastUsedIdx & 0xffff, usedIdx },
        // DPDK prints this as a second WARNING line.
        ['some packets maybe resent for Tx and dropped for Rx'],
      ),
    );
    vq.lastUsedIdx = usedIdx;
    vq.lastAvailIdx = usedIdx;
  }
  vq.accessOk = true;
  // Host addresses are not modelled; the debug lines show guest-physical ones.
  ev.push(configEvent('DEBUG', `mapped address desc: ${hex64(d.gpa)}`, { kind: 'ring-mapped', ring: 'desc', addr: BigInt(d.gpa) }));
  ev.push(configEvent('DEBUG', `mapped address avail: ${hex64(a.gpa)}`, { kind: 'ring-mapped', ring: 'avail', addr: BigInt(a.gpa) }));
  ev.push(configEvent('DEBUG', `mapped address used: ${hex64(u.gpa)}`, { kind: 'ring-mapped', ring: 'used', addr: BigInt(u.gpa) }));
  ev.push(configEvent('DEBUG', `log_guest_addr: ${vq.logGuestAddr.toString(16)}`, { kind: 'log-guest-addr', addr: vq.logGuestAddr }));
  vq.buildDevice(ctx);
}
