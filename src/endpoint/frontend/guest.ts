/**
 * The guest side both front-end profiles share: RAM as one memfd mapped as vhost-user
 * memory regions, a fixed place in that RAM for every vring, the driver half of each ring,
 * the kick and call eventfds, and the features and status the guest driver negotiated.
 *
 * The rings belong to the guest, not to the connection: a back-end going away leaves them
 * (and their indices in guest memory) untouched; only a guest reset or an explicit ring
 * reset (virtio-user's packed-ring reconnect) rebuilds them.
 */
import { GuestMemory } from '../../memory/index.ts';
import type { VhostUserRegion } from '../../protocol/index.ts';
import { SplitDriver, layoutSplitRing, type SplitLayout } from '../../ring/split/index.ts';
import { PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED, PACKED_DESC_FLAGS, PACKED_DESC_ID, PACKED_DESC_SIZE, PackedDriver, type PackedLayout } from '../../ring/packed/index.ts';
import type { RingFeatures } from '../../ring/types.ts';
import type { EventFd, MemFd, SocketNamespace } from '../../transport/index.ts';
import type { RingKind } from './profiles.ts';

const PAGE = 4096;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * - `flat`: one region with GPA == front-end VA, as DPDK virtio-user describes its memsegs
 *   (`update_memory_region`: guest_phys_addr = userspace_addr).
 * - `pc`: QEMU's x86 PC layout of one memory backend: [0, 0xa0000) and [0xc0000, ramSize),
 *   both from the same memfd (mmap offsets 0 and 0xc0000), the VGA/ROM hole left out
 *   [OBS vh2: regions 0/0xa0000 and 0xc0000/0x7f40000 for 128 MiB].
 */
export type MemoryLayoutKind = 'flat' | 'pc';

export const PC_LOW_END = 0xa0000;
export const PC_HIGH_START = 0xc0000;

export interface GuestOptions {
  /** Host the memfd and eventfds are created on. */
  readonly ns: SocketNamespace;
  readonly name?: string;
  readonly layout: MemoryLayoutKind;
  /** Bytes of RAM (a multiple of 4096). */
  readonly ramSize: number;
  /** `flat`: GPA (= VA) of the RAM; `pc`: the front-end VA RAM is mapped at. */
  readonly base?: number;
  readonly queuePairs: number;
  readonly queueSize: number;
}

/** Default `flat` base: where the reference capture's memseg list starts (gpa = uva 0x100c3e000). */
export const FLAT_DEFAULT_BASE = 0x100c3e000;
/** Default `pc` VA base: where QEMU 7.2 mapped guest RAM in the reference run [OBS vh2]. */
export const PC_DEFAULT_BASE = 0x7fd24ffff000;

export type RingDriverHalf = SplitDriver<unknown> | PackedDriver<unknown>;

export type VringLayout = ({ readonly kind: 'split' } & SplitLayout) | ({ readonly kind: 'packed' } & PackedLayout);

export interface GuestVring {
  readonly index: number;
  /** The front-end writes it when `publish()` asks for a kick; the back-end polls it. */
  readonly kick: EventFd;
  /** The back-end writes it to interrupt the guest. */
  readonly call: EventFd;
  /** Present once the guest driver has set the ring up. */
  readonly layout: VringLayout | undefined;
  readonly driver: RingDriverHalf | undefined;
  /** Bumped every time the ring is (re)built: a data path holding the old driver must drop it. */
  readonly generation: number;
}

interface MutableVring {
  index: number;
  kick: EventFd;
  call: EventFd;
  layout: VringLayout | undefined;
  driver: RingDriverHalf | undefined;
  generation: number;
}

export class Guest {
  readonly name: string;
  readonly memory: GuestMemory;
  readonly memfd: MemFd;
  readonly layoutKind: MemoryLayoutKind;
  readonly ramSize: number;
  readonly queueSize: number;
  /** Negotiated virtio features, as the guest driver sees them (0 after a reset). */
  features = 0n;
  /** Device status the guest driver wrote last (0 after a reset). */
  status = 0;
  private ringKind: RingKind | undefined;
  private ringFeatures: RingFeatures | undefined;
  private readonly rings: MutableVring[];
  private readonly regionList: { region: VhostUserRegion; gpa: number; size: number; uva: number }[];
  private readonly top: number;
  private disposed = false;

  constructor(opts: GuestOptions) {
    this.name = opts.name ?? 'guest';
    this.layoutKind = opts.layout;
    this.ramSize = opts.ramSize;
    this.queueSize = opts.queueSize;
    if (!Number.isSafeInteger(opts.ramSize) || opts.ramSize <= 0 || opts.ramSize % PAGE !== 0) {
      throw new RangeError(`guest RAM of ${opts.ramSize} bytes is not a positive multiple of 4096`);
    }
    const nv = 2 * opts.queuePairs;
    if (opts.layout === 'pc') {
      const base = opts.base ?? PC_DEFAULT_BASE;
      if (opts.ramSize <= PC_HIGH_START + nv * PAGE * 4) throw new RangeError(`pc guest RAM of ${opts.ramSize} bytes is too small`);
      this.regionList = [
        { gpa: 0, size: PC_LOW_END, uva: base, region: region(0, PC_LOW_END, base, 0) },
        {
          gpa: PC_HIGH_START,
          size: opts.ramSize - PC_HIGH_START,
          uva: base + PC_HIGH_START,
          region: region(PC_HIGH_START, opts.ramSize - PC_HIGH_START, base + PC_HIGH_START, PC_HIGH_START),
        },
      ];
      this.top = opts.ramSize;
    } else {
      const base = opts.base ?? FLAT_DEFAULT_BASE;
      if (base % PAGE !== 0) throw new RangeError(`flat guest base 0x${base.toString(16)} is not page aligned`);
      this.regionList = [{ gpa: base, size: opts.ramSize, uva: base, region: region(base, opts.ramSize, base, 0) }];
      this.top = base + opts.ramSize;
    }
    this.memfd = opts.ns.memfd(`${this.name}:ram`, opts.ramSize);
    const buffer = this.memfd.buffer;
    this.memory = new GuestMemory(
      this.regionList.map((r) => ({ gpa: r.gpa, size: r.size, uva: r.uva, buffer, offset: Number(r.region.mmapOffset) })),
    );
    this.rings = [];
    for (let i = 0; i < nv; i++) {
      this.rings.push({
        index: i,
        kick: opts.ns.eventfd(`${this.name}:kick${i}`),
        call: opts.ns.eventfd(`${this.name}:call${i}`),
        layout: undefined,
        driver: undefined,
        generation: 0,
      });
    }
  }

  get vringCount(): number {
    return this.rings.length;
  }

  vring(i: number): GuestVring {
    const r = this.rings[i];
    if (r === undefined) throw new RangeError(`no vring ${i} (the guest has ${this.rings.length})`);
    return r;
  }

  get vrings(): readonly GuestVring[] {
    return this.rings;
  }

  /** The ring kind the driver set up, if it did. */
  get kind(): RingKind | undefined {
    return this.ringKind;
  }

  /** The regions of SET_MEM_TABLE, in table order. */
  get memoryRegions(): readonly VhostUserRegion[] {
    return this.regionList.map((r) => r.region);
  }

  /** One fd per region (the same memfd for every region, as QEMU sends it). */
  get memoryRegionFds(): MemFd[] {
    return this.regionList.map(() => this.memfd);
  }

  /** Bytes of each vring's slot: the ring rounded up to pages (DPDK's "rounded_vring_size"). */
  ringStride(kind: RingKind): number {
    return alignUp(kind === 'split' ? splitEnd(this.queueSize) : packedLayoutAt(0, this.queueSize).deviceEvent + 4, PAGE);
  }

  /** Guest-physical address where vring `i` lives: slots from the top of RAM downwards, vring 0 highest. */
  ringBase(i: number, kind: RingKind): number {
    return this.top - (i + 1) * this.ringStride(kind);
  }

  /** RAM the rings leave free, for packet buffers. */
  bufferArea(kind: RingKind = this.ringKind ?? 'split'): { gpa: number; size: number } {
    const low = this.layoutKind === 'pc' ? 0x100000 : this.regionList[0].gpa;
    const high = this.top - this.rings.length * this.ringStride(kind);
    return { gpa: low, size: Math.max(0, high - low) };
  }

  /**
   * The driver places and initialises every ring (zeroed, indices 0, packed wrap counters 1)
   * and takes its driver half. Any previous ring state is lost.
   */
  setupRings(kind: RingKind, features: RingFeatures): void {
    this.ringKind = kind;
    this.ringFeatures = features;
    for (const r of this.rings) this.buildRing(r);
  }

  /**
   * Rebuilds one ring in place (zeroed, indices back to 0): what virtio-user does to packed
   * rings on reconnect. Returns the buffers that were in flight, now dropped.
   */
  resetRing(i: number): number {
    const r = this.rings[i];
    if (r === undefined || this.ringKind === undefined) throw new RangeError(`vring ${i} is not set up`);
    const dropped = r.driver?.inFlight ?? 0;
    this.buildRing(r);
    return dropped;
  }

  /** Device reset as the guest sees it: rings gone, features and status cleared. */
  reset(): void {
    for (const r of this.rings) {
      r.layout = undefined;
      r.driver = undefined;
      r.generation++;
    }
    this.ringKind = undefined;
    this.ringFeatures = undefined;
    this.features = 0n;
    this.status = 0;
  }

  /** used->idx of a split ring, read from guest memory (QEMU's restore after a lost back-end). */
  usedIdx(i: number): number {
    const l = this.vring(i).layout;
    if (l === undefined || l.kind !== 'split') throw new RangeError(`vring ${i} is not a split ring`);
    return this.memory.loadU16Acquire(l.used + 2);
  }

  /** avail->idx of a split ring. */
  availIdx(i: number): number {
    const l = this.vring(i).layout;
    if (l === undefined || l.kind !== 'split') throw new RangeError(`vring ${i} is not a split ring`);
    return this.memory.loadU16Acquire(l.avail + 2);
  }

  /**
   * Where a packed ring's device stopped using buffers, read from guest memory: the driver's
   * used position, then past every used element it has not taken back yet (each with the
   * driver-written rest of its chain, same id, as an in-order device leaves it). Only the
   * `qemuRestoresPackedBase` test hook asks: QEMU 7.2 has no such restore.
   */
  packedUsedPosition(i: number): { idx: number; wrap: boolean } | undefined {
    const r = this.vring(i);
    const l = r.layout;
    if (l === undefined || l.kind !== 'packed' || r.driver === undefined || !('positions' in r.driver)) return undefined;
    const pos = r.driver.positions();
    if (!('nextUsed' in pos)) return undefined;
    let p = pos.nextUsed;
    let w = pos.usedWrap;
    const flagsAt = (k: number): number => this.memory.loadU16Acquire(l.desc + k * PACKED_DESC_SIZE + PACKED_DESC_FLAGS);
    const idAt = (k: number): number => this.memory.readU16(l.desc + k * PACKED_DESC_SIZE + PACKED_DESC_ID);
    const avail = (f: number): boolean => (f & PACKED_DESC_F_AVAIL) !== 0;
    const used = (f: number): boolean => (f & PACKED_DESC_F_USED) !== 0;
    const step = (): void => {
      if (++p === l.size) {
        p = 0;
        w = !w;
      }
    };
    for (let n = 0; n < l.size; ) {
      const f = flagsAt(p);
      if (avail(f) !== w || used(f) !== w) break; // not used in this lap
      const id = idAt(p);
      step();
      n++;
      // The chain's other descriptors: still available in this lap, same id.
      while (n < l.size && idAt(p) === id && avail(flagsAt(p)) === w && used(flagsAt(p)) !== w) {
        step();
        n++;
      }
    }
    return { idx: p, wrap: w };
  }

  /**
   * SET_VRING_ADDR fields in front-end virtual addresses (vhost-user names the packed areas
   * after the split ones: avail = driver event area, used = device event area), plus the
   * used area's GPA (what QEMU puts in log_guest_addr).
   */
  vringAddr(i: number): { desc: bigint; avail: bigint; used: bigint; usedGpa: bigint } {
    const l = this.vring(i).layout;
    if (l === undefined) throw new RangeError(`vring ${i} is not set up`);
    const [avail, used] = l.kind === 'split' ? [l.avail, l.used] : [l.driverEvent, l.deviceEvent];
    const va = (gpa: number) => BigInt(this.memory.gpaToUva(gpa));
    return { desc: va(l.desc), avail: va(avail), used: va(used), usedGpa: BigInt(used) };
  }

  /** Tells the back-end vring `i` has new buffers. */
  notify(i: number): void {
    this.vring(i).kick.write(1n);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const r of this.rings) {
      r.kick.close();
      r.call.close();
    }
    this.memfd.close();
  }

  private buildRing(r: MutableVring): void {
    const kind = this.ringKind!;
    const features = this.ringFeatures!;
    const base = this.ringBase(r.index, kind);
    if (kind === 'split') {
      const l = layoutSplitRing(base, this.queueSize, { legacyAlign: PAGE });
      SplitDriver.init(this.memory, l);
      r.layout = { kind, ...l };
      r.driver = new SplitDriver<unknown>(this.memory, l, features);
    } else {
      const l = packedLayoutAt(base, this.queueSize);
      PackedDriver.init(this.memory, l);
      r.layout = { kind, ...l };
      r.driver = new PackedDriver<unknown>(this.memory, l, features);
    }
    r.generation++;
  }
}

function region(gpa: number, size: number, uva: number, offset: number): VhostUserRegion {
  return { guestPhysAddr: BigInt(gpa), memorySize: BigInt(size), userspaceAddr: BigInt(uva), mmapOffset: BigInt(offset) };
}

/** End of a split ring placed with DPDK's 4096 vring alignment (used ring on the next page). */
function splitEnd(size: number): number {
  const l = layoutSplitRing(0, size, { legacyAlign: PAGE });
  return l.used + 6 + 8 * size;
}

/**
 * DPDK's `vring_init_packed`: the driver event area right after the descriptors, the device
 * event area at the next 4096 boundary after it.
 */
export function packedLayoutAt(base: number, size: number): PackedLayout {
  const driverEvent = base + 16 * size;
  return { size, desc: base, driverEvent, deviceEvent: alignUp(driverEvent + 4, PAGE) };
}
