import type { GuestMemory } from '../memory/index.ts';
import type { DescriptorChain, RingFeatures, Segment, UsedBuffer } from './types.ts';
import { layoutSplitRing, splitRingFootprint, SplitDriver, SplitDevice, type SplitLayout } from './split/index.ts';
import { layoutPackedRing, packedRingFootprint, PackedDriver, PackedDevice, type PackedLayout } from './packed/index.ts';

/**
 * One face for both ring formats, for code that does not care which it drives
 * (threaded runs, benchmarks, the net data path). Each format keeps its own richer API.
 */
export type RingKind = 'split' | 'packed';

export type AnyLayout = ({ kind: 'split' } & SplitLayout) | ({ kind: 'packed' } & PackedLayout);

export interface RingDriver<T> {
  readonly size: number;
  readonly freeDescriptors: number;
  readonly inFlight: number;
  add(segments: readonly Segment[], token: T, opts?: { indirect?: boolean }): number;
  publish(): boolean;
  reclaim(out: UsedBuffer<T>): boolean;
  hasUsed(): boolean;
  enableNotifications(): boolean;
  disableNotifications(): void;
}

export interface RingDevice {
  readonly size: number;
  pop(chain: DescriptorChain): boolean;
  push(id: number, len: number): void;
  flush(): boolean;
  enableKicks(): void;
  disableKicks(): void;
}

/** Where a ring of `size` entries sits when placed at `base`, and one past its last byte. */
export function ringLayout(kind: RingKind, base: number, size: number): AnyLayout & { end: number } {
  if (kind === 'split') return { kind, ...layoutSplitRing(base, size), end: base + splitRingFootprint(size) };
  return { kind, ...layoutPackedRing(base, size), end: base + packedRingFootprint(size) };
}

export function makeDriver<T>(
  kind: RingKind,
  mem: GuestMemory,
  layout: AnyLayout,
  features: RingFeatures,
  opts?: { indirectArea?: { gpa: number; perBuffer: number } },
): RingDriver<T> {
  if (kind !== layout.kind) throw new TypeError(`a ${layout.kind} layout cannot carry a ${kind} ring`);
  return layout.kind === 'split'
    ? new SplitDriver<T>(mem, layout, features, opts)
    : new PackedDriver<T>(mem, layout, features, opts);
}

export function makeDevice(kind: RingKind, mem: GuestMemory, layout: AnyLayout, features: RingFeatures): RingDevice {
  if (kind !== layout.kind) throw new TypeError(`a ${layout.kind} layout cannot carry a ${kind} ring`);
  return layout.kind === 'split' ? new SplitDevice(mem, layout, features) : new PackedDevice(mem, layout, features);
}
