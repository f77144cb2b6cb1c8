/**
 * Placing a virtio-net device's vrings in guest memory and building their halves: the
 * guest's driver halves (kept across back-end restarts) and back-end device halves (built
 * anew for every session, fresh or resumed from a saved or recovered position).
 */
import type { GuestMemory } from '../memory/index.ts';
import { makeDevice, makeDriver, ringLayout, type AnyLayout, type RingDevice, type RingDriver, type RingKind } from '../ring/factory.ts';
import type { RingFeatures } from '../ring/types.ts';
import { SplitDevice, SplitDriver, type SplitDeviceState } from '../ring/split/index.ts';
import { PackedDevice, PackedDriver, type PackedDeviceState } from '../ring/packed/index.ts';

export interface NetRingsOptions {
  kind: RingKind;
  queueSize: number;
  queuePairs?: number;
  /** First byte available for the rings (rounded up to 4 KiB). */
  base: number;
}

export interface NetRings {
  kind: RingKind;
  queueSize: number;
  /** layouts[v] for vring v: 2q guest RX, 2q+1 guest TX. */
  layouts: AnyLayout[];
  /** One past the last ring byte, rounded up to 4 KiB. */
  end: number;
}

const PAGE = 4096;
const roundUp = (v: number, a: number) => Math.ceil(v / a) * a;

/** Lays out 2·queuePairs rings, each on its own page, and zero-fills them (driver initialisation). */
export function layoutNetRings(mem: GuestMemory, opts: NetRingsOptions): NetRings {
  const n = 2 * (opts.queuePairs ?? 1);
  let at = roundUp(opts.base, PAGE);
  const layouts: AnyLayout[] = [];
  for (let v = 0; v < n; v++) {
    const l = ringLayout(opts.kind, at, opts.queueSize);
    if (l.kind === 'split') SplitDriver.init(mem, l);
    else PackedDriver.init(mem, l);
    layouts.push(l);
    at = roundUp(l.end, PAGE);
  }
  return { kind: opts.kind, queueSize: opts.queueSize, layouts, end: at };
}

/** Fresh driver halves for every vring (a driver start after reset). */
export function makeGuestDrivers<T>(mem: GuestMemory, rings: NetRings, features: RingFeatures): RingDriver<T>[] {
  return rings.layouts.map((l) => makeDriver<T>(rings.kind, mem, l, features));
}

/**
 * How a new back-end session positions its device half:
 * - 'fresh': at the start (a new ring, or a back-end given base 0 on a fresh ring);
 * - 'used-index': split only — last avail = last used = used.idx read from guest memory,
 *   what DPDK ends up with after a reconnect (translate_ring_addresses resyncs to used->idx)
 *   and what QEMU restores after a broken connection;
 * - a saved device state (GET_VRING_BASE then SET_VRING_BASE).
 */
export type DeviceResume = 'fresh' | 'used-index' | { split: Partial<SplitDeviceState> } | { packed: Partial<PackedDeviceState> };

export function makeBackendDevice(mem: GuestMemory, rings: NetRings, vring: number, features: RingFeatures, resume: DeviceResume = 'fresh'): RingDevice {
  const layout = rings.layouts[vring];
  if (layout === undefined) throw new RangeError(`vring ${vring} is not laid out`);
  if (resume === 'fresh') return makeDevice(rings.kind, mem, layout, features);
  if (resume === 'used-index') {
    if (layout.kind !== 'split') throw new TypeError('a packed ring has no used index to resume from (fact sheet §5.4)');
    const d = new SplitDevice(mem, layout, features);
    d.rebaseFromUsed();
    return d;
  }
  if ('split' in resume) {
    if (layout.kind !== 'split') throw new TypeError('split state for a packed ring');
    return new SplitDevice(mem, layout, features, undefined, resume.split);
  }
  if (layout.kind !== 'packed') throw new TypeError('packed state for a split ring');
  return new PackedDevice(mem, layout, features, {}, resume.packed);
}
