/**
 * The guest's side of one queue pair in real mapped memory, shared by the real front-ends
 * (virtio-user and QEMU profiles): the driver halves of vring 0 (RX) and vring 1 (TX),
 * one packet buffer per descriptor slot, kick when the ring asks. What differs between the
 * profiles (where RAM sits, when rings are built or reset, whether vhost runs) is the
 * owner's, passed in.
 */
import type { GuestMemory } from '../../../memory/index.ts';
import { SplitDriver, layoutSplitRing } from '../../../ring/split/index.ts';
import { PackedDriver } from '../../../ring/packed/index.ts';
import type { RingFeatures, UsedBuffer } from '../../../ring/types.ts';
import { packedLayoutAt } from '../../frontend/guest.ts';

const PAGE = 4096;
/** Bytes per packet buffer: a 1514-byte frame with its 12-byte header fits in one. */
export const BUF_SIZE = 2048;

export type RingDriver = SplitDriver<number> | PackedDriver<number>;

/** What `exchange` (traffic.ts) drives. */
export interface GuestTrafficPort {
  readonly cfg: { readonly queueSize: number };
  postRx(n: number): number;
  send(packets: readonly Uint8Array[]): number;
  reclaimTx(): number;
  receive(): Uint8Array[];
}

/** A page-rounded slot big enough for either ring kind of `q` entries (DPDK's rounded_vring_size). */
export function ringStride(q: number): number {
  return Math.ceil(Math.max(layoutSplitRing(0, q, { legacyAlign: PAGE }).used + 6 + 8 * q, packedLayoutAt(0, q).deviceEvent + 4) / PAGE) * PAGE;
}

export interface GuestPortOptions {
  readonly memory: () => GuestMemory;
  readonly queueSize: number;
  /** GPA of the ring slots: vring i at ringBase[i]. */
  readonly ringBase: readonly number[];
  /** GPA of 2·queueSize packet buffers (RX slots first, then TX). */
  readonly bufBase: number;
  readonly kick: (vring: number) => void;
  /** The rings are handed to a back-end: only then is anything posted. */
  readonly running: () => boolean;
  /**
   * Ask for used-buffer notifications (true by default: a kernel driver takes interrupts).
   * false: a polling driver, as DPDK's virtio PMD: every ring is built with split
   * avail->flags VRING_AVAIL_F_NO_INTERRUPT / packed driver event flags DISABLE, so the
   * back-end does not write the call eventfd.
   */
  readonly usedNotifications?: boolean;
}

export class GuestPort {
  readonly drivers: (RingDriver | undefined)[] = [undefined, undefined];
  private txSlot = 0;
  private rxSlot = 0;
  private readonly out: UsedBuffer<number> = { token: 0, len: 0, id: 0 };

  constructor(private readonly o: GuestPortOptions) {}

  get packed(): boolean {
    return this.drivers[0] instanceof PackedDriver;
  }

  /** Lays out vring `i` afresh (zeroed, indices 0, packed wrap counters 1); returns the buffers it dropped. */
  build(i: number, packed: boolean, features: RingFeatures): number {
    const dropped = this.drivers[i]?.inFlight ?? 0;
    const mem = this.o.memory();
    const b = this.o.ringBase[i]!;
    if (packed) {
      const l = packedLayoutAt(b, this.o.queueSize);
      PackedDriver.init(mem, l);
      this.drivers[i] = new PackedDriver<number>(mem, l, features);
    } else {
      const l = layoutSplitRing(b, this.o.queueSize, { legacyAlign: PAGE });
      SplitDriver.init(mem, l);
      this.drivers[i] = new SplitDriver<number>(mem, l, features);
    }
    if (this.o.usedNotifications === false) this.drivers[i]!.disableNotifications();
    return dropped;
  }

  /** GPAs of vring `i`'s areas in vhost-user's naming (packed: avail = driver event, used = device event). */
  areas(i: number): { desc: number; avail: number; used: number } {
    const d = this.drivers[i];
    if (d === undefined) throw new RangeError(`vring ${i} is not set up`);
    const b = this.o.ringBase[i]!;
    if (d instanceof SplitDriver) {
      const l = layoutSplitRing(b, this.o.queueSize, { legacyAlign: PAGE });
      return { desc: l.desc, avail: l.avail, used: l.used };
    }
    const l = packedLayoutAt(b, this.o.queueSize);
    return { desc: l.desc, avail: l.driverEvent, used: l.deviceEvent };
  }

  /** used->idx of split vring `i`, from guest memory. */
  usedIdx(i: number): number {
    const d = this.drivers[i];
    if (!(d instanceof SplitDriver)) throw new RangeError(`vring ${i} is not a split ring`);
    return this.o.memory().loadU16Acquire(this.areas(i).used + 2);
  }

  /** Posts empty RX buffers until `n` are posted or the ring is full; kicks if asked. */
  postRx(n: number): number {
    const d = this.drivers[0];
    if (d === undefined || !this.o.running()) return 0;
    let posted = 0;
    for (; posted < n && d.freeDescriptors > 0; posted++) {
      const slot = this.rxSlot++ % this.o.queueSize;
      d.add([{ addr: this.o.bufBase + slot * BUF_SIZE, len: BUF_SIZE, writable: true }], slot);
    }
    this.publish(0);
    return posted;
  }

  /** Transmits packets (virtio-net header included) one buffer each; returns how many fit. */
  send(packets: readonly Uint8Array[]): number {
    const d = this.drivers[1];
    if (d === undefined || !this.o.running()) return 0;
    const m = this.o.memory();
    let sent = 0;
    for (const p of packets) {
      if (d.freeDescriptors === 0 || p.length > BUF_SIZE) break;
      const slot = this.o.queueSize + (this.txSlot++ % this.o.queueSize);
      const addr = this.o.bufBase + slot * BUF_SIZE;
      m.write(addr, p);
      d.add([{ addr, len: p.length, writable: false }], slot);
      sent++;
    }
    this.publish(1);
    return sent;
  }

  /** TX buffers given back. */
  reclaimTx(): number {
    const d = this.drivers[1];
    if (d === undefined) return 0;
    let n = 0;
    while (d.reclaim(this.out)) n++;
    return n;
  }

  /** Received packets (virtio-net header included), oldest first. */
  receive(): Uint8Array[] {
    const d = this.drivers[0];
    if (d === undefined) return [];
    const got: Uint8Array[] = [];
    while (d.reclaim(this.out)) {
      const b = new Uint8Array(Math.min(this.out.len, BUF_SIZE));
      this.o.memory().read(this.o.bufBase + this.out.token * BUF_SIZE, b);
      got.push(b);
    }
    return got;
  }

  /** Buffers of vring `i` the back-end has not given back. */
  inFlight(i: number): number {
    return this.drivers[i]?.inFlight ?? 0;
  }

  /** Forgets the rings (the memory is going away). */
  clear(): void {
    for (let i = 0; i < this.drivers.length; i++) this.drivers[i] = undefined;
  }

  private publish(i: number): void {
    const d = this.drivers[i];
    if (d !== undefined && d.publish()) this.o.kick(i);
  }
}
