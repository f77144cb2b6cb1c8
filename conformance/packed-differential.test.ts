import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GuestMemory } from '../src/memory/index.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../src/ring/types.ts';
import { RingError } from '../src/ring/errors.ts';
import {
  layoutPackedRing,
  packedRingFootprint,
  PackedDriver,
  PackedDevice,
  dpdkGetPackedBase,
  dpdkSetPackedBase,
  encodePackedBase,
  decodePackedBase,
  type PackedLayout,
} from '../src/ring/packed/index.ts';
import { PackedRingModel } from '../models/packed-ring.ts';

// Differential test: random interleavings of driver and device operations run on the
// reference model and on the byte ring; after every command every observable must
// agree (pop results, reclaim results, kick/notify decisions, free descriptors,
// positions and wrap counters on both sides, event-area bytes, the flag bits of every
// slot the command wrote).

const PER_BUFFER = 4;
const DATA_SPAN = 0x10000;

interface Cfg {
  size: number;
  features: RingFeatures;
  notifyFirstFlush: boolean;
}

interface World {
  model: PackedRingModel<number>;
  cfg: Cfg;
  token: number;
}

interface Real {
  driver: PackedDriver<number>;
  device: PackedDevice;
  mem: GuestMemory;
  chain: DescriptorChain;
  layout: PackedLayout;
  dataBase: number;
}

function setup(cfg: Cfg): { model: World; real: Real } {
  const layout = layoutPackedRing(0, cfg.size);
  const dataBase = Math.ceil(packedRingFootprint(cfg.size) / 4096) * 4096;
  const indirectBase = dataBase + DATA_SPAN;
  const mem = GuestMemory.create(indirectBase + cfg.size * PER_BUFFER * 16);
  PackedDriver.init(mem, layout);
  const opts = cfg.features.indirect ? { indirectArea: { gpa: indirectBase, perBuffer: PER_BUFFER } } : {};
  const driver = new PackedDriver<number>(mem, layout, cfg.features, opts);
  const device = new PackedDevice(mem, layout, cfg.features, { notifyFirstFlush: cfg.notifyFirstFlush });
  const model = new PackedRingModel<number>(cfg.size, cfg.features, { notifyFirstFlush: cfg.notifyFirstFlush, indirectPerBuffer: PER_BUFFER });
  return { model: { model, cfg, token: 0 }, real: { driver, device, mem, chain: new DescriptorChain(64), layout, dataBase } };
}

/** Cheap agreement check for hot loops; falls back to expect for a readable diff. */
function agree(actual: unknown, expected: unknown, label: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) expect(actual, label).toEqual(expected);
}

/** An outcome that can be compared across implementations: a value or an error's identity. */
function outcome<V>(f: () => V): { ok: V } | { err: string } {
  try {
    return { ok: f() };
  } catch (e) {
    if (e instanceof RingError) return { err: `RingError:${e.code}` };
    if (e instanceof Error) return { err: e.name };
    throw e;
  }
}

// ---- the oracle's view of bytes (raw reads, independent of the ring code) ----------

function rawSlot(r: Real, pos: number) {
  const at = r.layout.desc + 16 * pos;
  return { len: r.mem.readU32(at + 8), id: r.mem.readU16(at + 12), flags: r.mem.readU16(at + 14) };
}

function rawEvent(r: Real, gpa: number) {
  return { offWrap: r.mem.readU16(gpa), flags: r.mem.readU16(gpa + 2) };
}

/** Differences between the model's slot and the bytes at `pos` (empty when they agree). */
function slotMismatch(m: World, r: Real, pos: number): string | null {
  const s = m.model.slots[pos];
  const b = rawSlot(r, pos);
  const a = (b.flags & 0x80) !== 0;
  const u = (b.flags & 0x8000) !== 0;
  let bad = a !== s.avail || u !== s.used;
  if (s.buffer === null && s.avail === s.used && (s.avail || s.usedId !== 0 || s.usedWrite)) {
    // a used descriptor the device wrote: id, WRITE iff len > 0, len when WRITE
    const w = (b.flags & 2) !== 0;
    bad ||= b.id !== s.usedId || w !== s.usedWrite || (s.usedWrite && b.len !== s.usedLen);
  }
  if (!bad) return null;
  return `slot ${pos}: bytes A=${+a} U=${+u} id=${b.id} len=${b.len} flags=0x${b.flags.toString(16)}; model ${JSON.stringify({ ...s, buffer: s.buffer?.id })}`;
}

/** Everything observable must agree after every command. */
function compareAll(m: World, r: Real): void {
  const model = m.model;
  expect(r.driver.freeDescriptors, 'freeDescriptors').toBe(model.freeDescriptors);
  expect(r.driver.inFlight, 'driver inFlight').toBe(model.inFlight);
  expect(r.driver.positions(), 'driver positions and wrap counters').toEqual({
    nextAvail: model.nextAvail,
    availWrap: model.availWrap,
    nextUsed: model.nextUsed,
    usedWrap: model.usedWrap,
  });
  expect(r.device.saveState(), 'device state and wrap counters').toEqual(model.saveState());
  expect(r.device.inFlight, 'device inFlight').toBe(model.deviceInFlight().length);
  expect(rawEvent(r, r.layout.driverEvent), 'driver event area').toEqual(model.driverEvent);
  expect(rawEvent(r, r.layout.deviceEvent), 'device event area').toEqual(model.deviceEvent);
  expect(r.driver.hasUsed(), 'hasUsed').toBe(model.hasUsed());
  const slots = model.size <= 64 ? model.slots.map((_, i) => i) : model.touched;
  const bad: string[] = [];
  for (const pos of slots) {
    const d = slotMismatch(m, r, pos);
    if (d !== null) bad.push(d);
  }
  expect(bad, 'slot flags, used ids and lengths').toEqual([]);
}

class Cmd implements fc.Command<World, Real> {
  constructor(
    private readonly label: string,
    private readonly body: (m: World, r: Real) => void,
    private readonly guard: (m: Readonly<World>) => boolean = () => true,
  ) {}
  check(m: Readonly<World>): boolean {
    return this.guard(m);
  }
  run(m: World, r: Real): void {
    this.body(m, r);
    compareAll(m, r);
  }
  toString(): string {
    return this.label;
  }
}

// ---- commands -------------------------------------------------------------------

interface Shape {
  readable: number[];
  writable: number[];
  offsets: number[];
  indirect: boolean;
}

const shapeArb: fc.Arbitrary<Shape> = fc.record({
  readable: fc.array(fc.integer({ min: 0, max: 1500 }), { maxLength: 3 }),
  writable: fc.array(fc.integer({ min: 0, max: 1500 }), { maxLength: 3 }),
  offsets: fc.array(fc.integer({ min: 0, max: DATA_SPAN - 1600 }), { minLength: 6, maxLength: 6 }),
  indirect: fc.boolean(),
});

function segmentsOf(shape: Shape, dataBase: number): Segment[] {
  const lens = shape.readable.length + shape.writable.length === 0 ? [64] : shape.readable;
  const segs: Segment[] = [];
  lens.forEach((len, i) => segs.push({ addr: dataBase + shape.offsets[i], len, writable: false }));
  shape.writable.forEach((len, i) => segs.push({ addr: dataBase + shape.offsets[3 + i], len, writable: true }));
  return segs;
}

function doAdd(m: World, r: Real, shape: Shape): boolean {
  const segs = segmentsOf(shape, r.dataBase);
  const opts = { indirect: shape.indirect && m.cfg.features.indirect };
  const token = m.token++;
  const a = outcome(() => m.model.add(segs, token, opts));
  const b = outcome(() => r.driver.add(segs, token, opts));
  agree(b, a, `add ${JSON.stringify(segs)} ${JSON.stringify(opts)}`);
  return 'ok' in a;
}

function doPop(m: World, r: Real): boolean {
  const a = m.model.pop();
  const got = r.device.pop(r.chain);
  agree(got, a !== null, 'pop found a chain');
  if (a === null) return false;
  agree({ id: r.chain.id, segments: r.chain.segments(), ringDescriptors: r.chain.ringDescriptors, indirect: r.chain.indirect }, a, 'popped chain');
  return true;
}

function lenFor(m: World, id: number, mode: number, frac: number): number {
  const w = m.model.writableOf(id);
  if (mode === 0) return w;
  if (mode === 1) return 0;
  return Math.floor(w * frac);
}

function doPush(m: World, r: Real, pick: number, mode: number, frac: number): void {
  const ids = m.model.deviceInFlight();
  const id = m.cfg.features.inOrder ? ids[0] : ids[pick % ids.length];
  const len = lenFor(m, id, mode, frac);
  const a = outcome(() => m.model.push(id, len));
  const b = outcome(() => r.device.push(id, len));
  agree(b, a, `push ${id} ${len}`);
}

function doReclaim(m: World, r: Real, out: UsedBuffer<number>): boolean {
  const a = m.model.reclaim();
  const got = r.driver.reclaim(out);
  agree(got, a !== null, 'reclaim found a buffer');
  if (a === null) return false;
  agree({ token: out.token, len: out.len, id: out.id }, a, 'reclaimed buffer');
  return true;
}

const out: UsedBuffer<number> = { token: -1, len: 0, id: 0 };

const addCmd = shapeArb.map((s) => new Cmd(`add(${JSON.stringify(s)})`, (m, r) => void doAdd(m, r, s)));
const publishCmd = fc.constant(
  new Cmd('publish', (m, r) => {
    expect(r.driver.publish(), 'kick decision').toBe(m.model.publish());
  }),
);
const popCmd = fc.integer({ min: 1, max: 4 }).map((n) => new Cmd(`pop x${n}`, (m, r) => {
  for (let i = 0; i < n && doPop(m, r); i++);
}));
const pushCmd = fc
  .tuple(fc.nat(), fc.integer({ min: 0, max: 2 }), fc.double({ min: 0, max: 1, noNaN: true }))
  .map(([pick, mode, frac]) => new Cmd(`push(pick ${pick}, mode ${mode}, ${frac})`, (m, r) => doPush(m, r, pick, mode, frac), (m) => m.model.deviceInFlight().length > 0));
const badPushCmd = fc.nat().map((pick) =>
  new Cmd(`push bad ${pick}`, (m, r) => {
    // an id the device does not hold, or (IN_ORDER) one that is not the oldest
    const held = m.model.deviceInFlight();
    let id = pick % (m.cfg.size + 2);
    if (held.includes(id) && !(m.cfg.features.inOrder && held[0] !== id)) id = m.cfg.size + 1;
    const a = outcome(() => m.model.push(id, 0));
    const b = outcome(() => r.device.push(id, 0));
    expect(a).toEqual({ err: 'RingError:used-overflow' });
    expect(b).toEqual(a);
  }),
);
const flushCmd = fc.constant(
  new Cmd('flush', (m, r) => {
    expect(r.device.flush(), 'notify decision').toBe(m.model.flush());
  }),
);
const reclaimCmd = fc.integer({ min: 1, max: 4 }).map((n) => new Cmd(`reclaim x${n}`, (m, r) => {
  for (let i = 0; i < n && doReclaim(m, r, out); i++);
}));
const notifCmd = fc.constantFrom('drv-enable', 'drv-disable', 'dev-enable', 'dev-disable').map((k) =>
  new Cmd(k, (m, r) => {
    if (k === 'drv-enable') expect(r.driver.enableNotifications(), 'enableNotifications re-check').toBe(m.model.enableNotifications());
    if (k === 'drv-disable') {
      r.driver.disableNotifications();
      m.model.disableNotifications();
    }
    if (k === 'dev-enable') {
      r.device.enableKicks();
      m.model.enableKicks();
    }
    if (k === 'dev-disable') {
      r.device.disableKicks();
      m.model.disableKicks();
    }
  }),
);
const usedEventCmd = fc.tuple(fc.nat(), fc.boolean()).map(([off, wrap]) =>
  new Cmd(`setUsedEvent(${off}, ${wrap})`, (m, r) => {
    const offWrap = (off % m.cfg.size) | (wrap ? 0x8000 : 0);
    const a = outcome(() => m.model.setUsedEvent(offWrap));
    const b = outcome(() => r.driver.setUsedEvent(offWrap));
    expect(b).toEqual(a);
  }),
);

/**
 * One full round trip of up to `n` buffers: add until full, publish, pop everything,
 * push it back in a shuffled order (ring order under IN_ORDER), flush, reclaim all.
 * A few of these wrap a ring many times.
 */
const cycleCmd = fc
  .tuple(fc.integer({ min: 1, max: 4096 }), shapeArb, fc.nat(), fc.integer({ min: 0, max: 2 }))
  .map(([n, shape, seed, mode]) =>
    new Cmd(`cycle(${n}, ${JSON.stringify(shape)}, seed ${seed}, mode ${mode})`, (m, r) => {
      const touched = new Set<number>();
      for (let i = 0; i < n && m.model.freeDescriptors > 0; i++) {
        if (!doAdd(m, r, shape)) break;
        m.model.touched.forEach((p) => touched.add(p));
      }
      expect(r.driver.publish(), 'kick decision').toBe(m.model.publish());
      while (doPop(m, r));
      let ids = m.model.deviceInFlight();
      if (!m.cfg.features.inOrder) {
        let s = seed;
        ids = ids
          .map((id) => ({ id, k: (s = (Math.imul(s, 1103515245) + 12345) >>> 0) }))
          .sort((x, y) => x.k - y.k)
          .map((x) => x.id);
      }
      for (const id of ids) {
        const len = lenFor(m, id, mode, 0.5);
        m.model.push(id, len);
        r.device.push(id, len);
      }
      expect(r.device.flush(), 'notify decision').toBe(m.model.flush());
      m.model.touched.forEach((p) => touched.add(p));
      while (doReclaim(m, r, out));
      m.model.touched = [...touched];
    }),
  );

/** Stop the back-end and start a new one from its state: directly, via a QEMU-style base, or via DPDK 22.11's base. */
const restartCmd = fc.constantFrom('state', 'qemu-base', 'dpdk-base').map((how) =>
  new Cmd(
    `restart device (${how})`,
    (m, r) => {
      const s = r.device.saveState();
      let next: Partial<ReturnType<PackedDevice['saveState']>>;
      if (how === 'state') next = s;
      else if (how === 'qemu-base') next = decodePackedBase(encodePackedBase(s.lastAvailIdx, s.availWrap, s.lastUsedIdx, s.usedWrap));
      else next = dpdkSetPackedBase(dpdkGetPackedBase(s));
      // nothing in flight on the device: used == avail, so even DPDK's half base is lossless
      expect({ ...s, ...next }).toEqual(s);
      r.device = new PackedDevice(r.mem, r.layout, m.cfg.features, { notifyFirstFlush: m.cfg.notifyFirstFlush }, next);
      // a fresh device: what it was given, and the first-flush rule for the rest
      m.model.restoreState({
        lastAvailIdx: next.lastAvailIdx,
        availWrap: next.availWrap,
        lastUsedIdx: next.lastUsedIdx,
        usedWrap: next.usedWrap,
        signalledUsedValid: next.signalledUsedValid ?? !m.cfg.notifyFirstFlush,
        signalledUsed: next.signalledUsed ?? (m.cfg.notifyFirstFlush ? 0 : next.lastUsedIdx),
      });
    },
    // a restart loses what the device holds; only restart when it holds nothing
    (m) => m.model.deviceInFlight().length === 0 && m.model.pendingUsed === 0,
  ),
);

// ---- configurations ---------------------------------------------------------------

const sizeArb = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 1, max: 8 }) },
  { weight: 4, arbitrary: fc.constantFrom(3, 5, 7, 17, 31, 33) },
  { weight: 3, arbitrary: fc.integer({ min: 9, max: 300 }) },
  { weight: 2, arbitrary: fc.constant(1025) },
  { weight: 1, arbitrary: fc.constant(32768) },
);

const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  size: sizeArb,
  features: fc.record({ indirect: fc.boolean(), eventIdx: fc.boolean(), inOrder: fc.boolean() }),
  notifyFirstFlush: fc.boolean(),
});

function run(cmdArbs: fc.Arbitrary<Cmd>[], opts: { numRuns: number; maxCommands: number; cfg?: fc.Arbitrary<Cfg> }) {
  fc.assert(
    fc.property(opts.cfg ?? cfgArb, fc.commands(cmdArbs, { maxCommands: opts.maxCommands, size: 'max' }), (cfg, cmds) => {
      fc.modelRun(() => setup(cfg), cmds);
    }),
    { numRuns: opts.numRuns },
  );
}

const everything = [addCmd, addCmd, publishCmd, popCmd, popCmd, pushCmd, pushCmd, badPushCmd, flushCmd, reclaimCmd, reclaimCmd, notifCmd, usedEventCmd, cycleCmd];

describe('packed ring: byte ring against the reference model', () => {
  it('pop returns exactly the chains the model made available, in ring order (id, segments, descriptor count)', () => {
    run([addCmd, addCmd, addCmd, publishCmd, popCmd, pushCmd, flushCmd, reclaimCmd], { numRuns: 150, maxCommands: 80 });
  });

  it('reclaim returns the token and length the model predicts, IN_ORDER batches included', () => {
    const inOrderCfg = cfgArb.map((c) => ({ ...c, features: { ...c.features, inOrder: true } }));
    run([addCmd, addCmd, popCmd, pushCmd, pushCmd, flushCmd, reclaimCmd, cycleCmd], { numRuns: 80, maxCommands: 60, cfg: inOrderCfg });
    run([addCmd, addCmd, popCmd, pushCmd, pushCmd, flushCmd, reclaimCmd, cycleCmd], { numRuns: 80, maxCommands: 60 });
  });

  it('every kick and notify decision agrees with the model (Linux kick_prepare_packed, DPDK vring_call_packed)', () => {
    const eventCfg = cfgArb.map((c) => ({ ...c, features: { ...c.features, eventIdx: true } }));
    run(everything, { numRuns: 120, maxCommands: 100, cfg: eventCfg });
    run(everything, { numRuns: 60, maxCommands: 100 });
  });

  it('used flags always agree with the device wrap counter (AVAIL = USED = wrap, WRITE iff len > 0)', () => {
    const small = cfgArb.map((c) => ({ ...c, size: 1 + (c.size % 64) }));
    run(everything, { numRuns: 150, maxCommands: 100, cfg: small });
  });

  it('free descriptors and both sides\u2019 wrap counters agree after many laps of the ring', () => {
    run([cycleCmd, cycleCmd, cycleCmd, addCmd, popCmd, pushCmd, flushCmd, reclaimCmd], { numRuns: 60, maxCommands: 40 });
  });

  it('a device restarted from its saved state, a QEMU base or a DPDK 22.11 base continues where it stopped', () => {
    run([...everything, restartCmd, restartCmd], { numRuns: 120, maxCommands: 100 });
  });
});
