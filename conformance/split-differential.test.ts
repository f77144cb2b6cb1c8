import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GuestMemory } from '../src/memory/index.ts';
import { RingError, RingFullError } from '../src/ring/errors.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../src/ring/types.ts';
import { layoutSplitRing, splitRingFootprint, SplitDevice, SplitDriver, type SplitLayout } from '../src/ring/split/index.ts';
import { SplitRingModel, type ModelChain } from '../models/split-ring.ts';

/*
 * Random interleavings of driver and device operations, run on the reference model
 * (models/split-ring.ts) and on the byte-level ring in guest memory; every observable
 * must agree after every step. Operations carry abstract choices ("the k-th chain in
 * flight", "a fraction of the writable bytes") resolved against the current state, so
 * fast-check can shrink a failing sequence to a short one.
 */

const DATA_SIZE = 1 << 16;
const PER_BUFFER = 4;

interface Setup {
  size: number;
  features: RingFeatures;
  start: number;
  notifyFirstFlush: boolean;
}

type SegSpec = { off: number; len: number };
type Op =
  | { t: 'add'; readable: SegSpec[]; writable: SegSpec[]; indirect: boolean }
  | { t: 'burst'; n: number; writable: boolean }
  | { t: 'publish' }
  | { t: 'pop' }
  | { t: 'push'; pick: number; full: boolean; frac: number }
  | { t: 'flush' }
  | { t: 'reclaim' }
  | { t: 'drain' }
  | { t: 'enableNotifications' }
  | { t: 'disableNotifications' }
  | { t: 'setUsedEvent'; delta: number }
  | { t: 'enableKicks' }
  | { t: 'disableKicks' }
  | { t: 'restart' }
  | { t: 'rebase' };

const sizeArb = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom(1, 2, 4, 8, 16, 32, 64, 128, 256) },
  { weight: 1, arbitrary: fc.constant(32768) },
);
const featuresArb = fc.record({ indirect: fc.boolean(), eventIdx: fc.boolean(), inOrder: fc.boolean() });
const startArb = fc.oneof(fc.constant(0), fc.integer({ min: 65536 - 80, max: 65535 }), fc.integer({ min: 0, max: 65535 }));
const setupArb: fc.Arbitrary<Setup> = fc.record({ size: sizeArb, features: featuresArb, start: startArb, notifyFirstFlush: fc.boolean() });

const segArb = fc.record({ off: fc.integer({ min: 0, max: DATA_SIZE - 1 }), len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 4096 })) });

function opArb(weights: Partial<Record<Op['t'], number>>): fc.Arbitrary<Op> {
  const all: Record<Op['t'], fc.Arbitrary<Op>> = {
    add: fc.record({
      t: fc.constant('add' as const),
      readable: fc.array(segArb, { maxLength: 3 }),
      writable: fc.array(segArb, { maxLength: 3 }),
      indirect: fc.boolean(),
    }),
    burst: fc.record({ t: fc.constant('burst' as const), n: fc.integer({ min: 1, max: 40 }), writable: fc.boolean() }),
    publish: fc.constant({ t: 'publish' as const }),
    pop: fc.constant({ t: 'pop' as const }),
    push: fc.record({ t: fc.constant('push' as const), pick: fc.nat(), full: fc.boolean(), frac: fc.double({ min: 0, max: 1, noNaN: true }) }),
    flush: fc.constant({ t: 'flush' as const }),
    reclaim: fc.constant({ t: 'reclaim' as const }),
    drain: fc.constant({ t: 'drain' as const }),
    enableNotifications: fc.constant({ t: 'enableNotifications' as const }),
    disableNotifications: fc.constant({ t: 'disableNotifications' as const }),
    setUsedEvent: fc.record({ t: fc.constant('setUsedEvent' as const), delta: fc.integer({ min: -3, max: 40 }) }),
    enableKicks: fc.constant({ t: 'enableKicks' as const }),
    disableKicks: fc.constant({ t: 'disableKicks' as const }),
    restart: fc.constant({ t: 'restart' as const }),
    rebase: fc.constant({ t: 'rebase' as const }),
  };
  const base: Record<Op['t'], number> = {
    add: 6,
    burst: 1,
    publish: 4,
    pop: 5,
    push: 5,
    flush: 3,
    reclaim: 5,
    drain: 1,
    enableNotifications: 0,
    disableNotifications: 0,
    setUsedEvent: 0,
    enableKicks: 0,
    disableKicks: 0,
    restart: 0,
    rebase: 0,
  };
  const w = { ...base, ...weights };
  return fc.oneof(...(Object.keys(all) as Op['t'][]).filter((k) => w[k] > 0).map((k) => ({ weight: w[k], arbitrary: all[k] })));
}

/** The byte ring, the model, and what the harness itself remembers to check both. */
class Pair {
  readonly mem: GuestMemory;
  readonly layout: SplitLayout;
  readonly dataBase: number;
  readonly driver: SplitDriver<number>;
  device: SplitDevice;
  readonly model: SplitRingModel<number>;
  readonly chain: DescriptorChain;
  readonly out: UsedBuffer<number> = { token: -1, len: -1, id: -1 };
  /** Heads the device holds, in pop order (pushable). */
  heldByDevice: number[] = [];
  /** What the driver added, by token, and what it has reclaimed. */
  added = new Map<number, { segments: Segment[]; writable: number }>();
  reclaimed = new Set<number>();
  nextToken = 0;
  lastPopped: number | null = null;
  readonly log: string[] = [];

  constructor(readonly s: Setup) {
    const q = s.size;
    this.layout = layoutSplitRing(0, q);
    const indirectGpa = Math.ceil(splitRingFootprint(q) / 16) * 16;
    this.dataBase = Math.ceil((indirectGpa + q * PER_BUFFER * 16) / 4096) * 4096;
    this.mem = new GuestMemory([{ gpa: 0, size: this.dataBase + DATA_SIZE + 4096 }]);
    SplitDriver.init(this.mem, this.layout);
    if (s.start !== 0) {
      // A ring taken over with nothing in flight at a non-zero position (exercises u16 wrap).
      this.mem.writeU16(this.layout.avail + 2, s.start);
      this.mem.writeU16(this.layout.used + 2, s.start);
    }
    this.driver = new SplitDriver<number>(this.mem, this.layout, s.features, { indirectArea: { gpa: indirectGpa, perBuffer: PER_BUFFER } });
    this.device = this.newDevice({ lastAvailIdx: s.start, lastUsedIdx: s.start });
    this.model = new SplitRingModel<number>(q, s.features, { indirectPerBuffer: PER_BUFFER, notifyFirstFlush: s.notifyFirstFlush, startIdx: s.start });
    this.chain = new DescriptorChain(q);
  }

  private newDevice(state: Parameters<SplitDevice['restoreState']>[0]): SplitDevice {
    return new SplitDevice(this.mem, this.layout, this.s.features, { notifyFirstFlush: this.s.notifyFirstFlush }, state);
  }

  private segs(specs: SegSpec[], writable: boolean): Segment[] {
    return specs.map((x) => ({ addr: this.dataBase + Math.min(x.off, DATA_SIZE - x.len), len: x.len, writable }));
  }

  /** Runs `f` on both sides; both must return the same value or throw the same kind of error. */
  private both<R>(what: string, real: () => R, model: () => R): R | undefined {
    let r: { ok: true; v: R } | { ok: false; e: unknown };
    let m: { ok: true; v: R } | { ok: false; e: unknown };
    try {
      r = { ok: true, v: real() };
    } catch (e) {
      r = { ok: false, e };
    }
    try {
      m = { ok: true, v: model() };
    } catch (e) {
      m = { ok: false, e };
    }
    if (r.ok && m.ok) {
      expect(r.v, `${what}: ring vs model`).toEqual(m.v);
      return r.v;
    }
    expect(errKind(r.ok ? undefined : r.e), `${what}: ring ${r.ok ? 'returned' : 'threw ' + String(r.e)}, model ${m.ok ? 'returned' : 'threw ' + String(m.e)}`).toBe(
      errKind(m.ok ? undefined : m.e),
    );
    return undefined;
  }

  add(segments: Segment[], indirect: boolean): void {
    const token = this.nextToken++;
    const head = this.both(
      `add ${JSON.stringify(segments)} indirect=${indirect}`,
      () => this.driver.add(segments, token, { indirect }),
      () => this.model.add(segments, token, { indirect }),
    );
    if (head !== undefined) this.added.set(token, { segments, writable: segments.filter((x) => x.writable).reduce((a, x) => a + x.len, 0) });
  }

  pop(): boolean {
    const got = this.both<ModelChain | null>(
      'pop',
      () => (this.device.pop(this.chain) ? chainView(this.chain) : null),
      () => this.model.pop(),
    );
    if (got) this.heldByDevice.push(got.head);
    this.lastPopped = got ? got.head : null;
    return !!got;
  }

  push(pick: number, full: boolean, frac: number): void {
    if (this.heldByDevice.length === 0) return;
    const k = this.s.features.inOrder ? 0 : pick % this.heldByDevice.length;
    const head = this.heldByDevice[k];
    const writable = this.model.buffers.get(head)!.writable;
    const len = full ? writable : Math.floor(writable * frac);
    this.both(`push ${head} ${len}`, () => this.device.push(head, len), () => this.model.push(head, len));
    this.heldByDevice.splice(k, 1);
  }

  /**
   * Flush, then read the used elements just published straight from guest memory:
   * each of the model's elements (an IN_ORDER batch included) sits at the slot of its
   * first buffer and carries its last buffer's head.
   */
  flush(): void {
    const elements = this.model.pending.map((e) => ({ id: e.heads[e.heads.length - 1], len: e.len, n: e.heads.length }));
    let pos = this.model.usedIdx;
    this.both('flush', () => this.device.flush(), () => this.model.flush());
    for (const e of elements) {
      const at = this.layout.used + 4 + 8 * (pos & (this.s.size - 1));
      expect({ id: this.mem.readU32(at), len: this.mem.readU32(at + 4) }, `used element at position ${pos}`).toEqual({ id: e.id, len: e.len });
      pos = (pos + e.n) & 0xffff;
    }
    expect(this.mem.readU16(this.layout.used + 2), 'used.idx in memory').toBe(this.model.usedIdx);
  }

  reclaim(): boolean {
    const got = this.both(
      'reclaim',
      () => (this.driver.reclaim(this.out) ? { token: this.out.token, id: this.out.id, len: this.out.len } : null),
      () => this.model.reclaim(),
    );
    if (got) {
      // Model-independent: each token comes back once, with no more than its writable bytes.
      expect(this.reclaimed.has(got.token), `token ${got.token} reclaimed twice`).toBe(false);
      this.reclaimed.add(got.token);
      expect(got.len).toBeLessThanOrEqual(this.added.get(got.token)!.writable);
    }
    return !!got;
  }

  run(op: Op): void {
    this.log.push(JSON.stringify(op));
    switch (op.t) {
      case 'add':
        this.add([...this.segs(op.readable, false), ...this.segs(op.writable, true)], op.indirect);
        break;
      case 'burst':
        for (let i = 0; i < op.n; i++) this.add([{ addr: this.dataBase + 64 * (i % 256), len: 64, writable: op.writable }], false);
        this.both('publish', () => this.driver.publish(), () => this.model.publish());
        break;
      case 'publish':
        this.both('publish', () => this.driver.publish(), () => this.model.publish());
        break;
      case 'pop':
        this.pop();
        break;
      case 'push':
        this.push(op.pick, op.full, op.frac);
        break;
      case 'flush':
        this.flush();
        break;
      case 'reclaim':
        this.reclaim();
        break;
      case 'drain':
        while (this.pop());
        while (this.heldByDevice.length > 0) this.push(0, true, 1);
        this.flush();
        while (this.reclaim());
        break;
      case 'enableNotifications':
        this.both('enableNotifications', () => this.driver.enableNotifications(), () => this.model.enableNotifications());
        break;
      case 'disableNotifications':
        this.both('disableNotifications', () => this.driver.disableNotifications(), () => this.model.disableNotifications());
        break;
      case 'setUsedEvent': {
        const idx = (this.model.lastSeenUsed + op.delta) & 0xffff;
        this.both('setUsedEvent', () => this.driver.setUsedEvent(idx), () => this.model.setUsedEvent(idx));
        break;
      }
      case 'enableKicks':
        this.both('enableKicks', () => this.device.enableKicks(), () => this.model.enableKicks());
        break;
      case 'disableKicks':
        this.both('disableKicks', () => this.device.disableKicks(), () => this.model.disableKicks());
        break;
      case 'restart':
        // A new device instance from the old one's saved state (GET/SET_VRING_BASE), at a quiescent point.
        if (this.model.pending.length > 0) break;
        this.device = this.newDevice(this.device.saveState());
        this.model.restartDevice();
        break;
      case 'rebase':
        // Only where the resync is exact; the lossy case is covered in the device's unit tests.
        if (!this.model.rebaseIsExact()) break;
        this.device.rebaseFromUsed();
        this.model.rebaseFromUsed();
        this.heldByDevice = [];
        break;
    }
    this.compareState();
  }

  compareState(): void {
    const d = this.driver;
    const m = this.model;
    expect(d.freeDescriptors, 'freeDescriptors').toBe(m.freeDescriptors);
    expect(d.inFlight, 'inFlight').toBe(m.inFlight);
    expect(d.hasUsed(), 'hasUsed').toBe(m.hasUsed());
    expect(this.device.availableCount(), 'availableCount').toBe(m.availableCount());
    expect(this.device.saveState(), 'device state').toEqual(m.saveState());
    // The index and suppression fields in guest memory hold the model's values.
    const q = this.s.size;
    const L = this.layout;
    const mem = this.mem;
    expect(mem.readU16(L.avail + 2), 'avail.idx').toBe(m.publishedIdx);
    expect(mem.readU16(L.used + 2), 'used.idx').toBe(m.usedIdx);
    expect(mem.readU16(L.avail), 'avail.flags').toBe(m.noInterrupt ? 1 : 0);
    expect(mem.readU16(L.used), 'used.flags').toBe(m.noNotify ? 1 : 0);
    if (this.s.features.eventIdx) {
      expect(mem.readU16(L.avail + 4 + 2 * q), 'used_event').toBe(m.usedEvent);
      expect(mem.readU16(L.used + 4 + 8 * q), 'avail_event').toBe(m.availEvent);
    }
    // Model-independent: descriptors are conserved.
    const held = [...m.buffers.values()].reduce((a, b) => a + b.slots.length, 0);
    expect(d.freeDescriptors + held).toBe(this.s.size);
  }

  /** Everything still in flight completes; every token added comes back exactly once. */
  finish(): void {
    for (let guard = 0; guard < 4 && this.model.inFlight > 0; guard++) {
      this.both('publish', () => this.driver.publish(), () => this.model.publish());
      this.run({ t: 'drain' });
    }
    expect(this.driver.inFlight).toBe(0);
    expect(this.reclaimed.size).toBe(this.added.size);
  }
}

function chainView(c: DescriptorChain): ModelChain {
  return {
    head: c.id,
    segments: c.segments(),
    indirect: c.indirect,
    ringDescriptors: c.ringDescriptors,
    readableBytes: c.readableBytes,
    writableBytes: c.writableBytes,
  };
}

function errKind(e: unknown): string {
  if (e === undefined) return 'none';
  if (e instanceof RingFullError) return 'RingFullError';
  if (e instanceof RingError) return `RingError:${e.code}`;
  if (e instanceof TypeError) return 'TypeError';
  if (e instanceof RangeError) return 'RangeError';
  return `other:${String(e)}`;
}

function runAll(s: Setup, ops: Op[], extra?: (p: Pair, op: Op) => void): void {
  const p = new Pair(s);
  try {
    for (const op of ops) {
      p.run(op);
      extra?.(p, op);
    }
    p.finish();
  } catch (e) {
    if (e instanceof Error) e.message += `\n  setup ${JSON.stringify(s)}\n  ops ${p.log.slice(-12).join('\n      ')}`;
    throw e;
  }
}

const RUNS = Number(process.env.VHOSTSIM_FC_RUNS ?? 100);

describe('split ring: byte-level ring agrees with the reference model', () => {
  it('device pops exactly the chains the driver published, in order (heads, segments, indirect)', () => {
    fc.assert(
      fc.property(setupArb, fc.array(opArb({}), { maxLength: 150, size: 'max' }), (s, ops) => {
        runAll(s, ops, (p, op) => {
          if (op.t !== 'pop' || p.lastPopped === null) return;
          // Model-independent: the chain popped is the one added with that head.
          const head = p.lastPopped;
          const token = p.model.buffers.get(head)!.token;
          expect(p.chain.segments()).toEqual(p.added.get(token)!.segments);
        });
      }),
      { numRuns: RUNS },
    );
  });

  it('the driver reclaims every completed buffer exactly once, with its token and the length the device wrote (IN_ORDER batches expand to fully used buffers)', () => {
    fc.assert(
      fc.property(
        setupArb.map((s) => ({ ...s, features: { ...s.features, inOrder: true } })),
        fc.array(opArb({ push: 8, flush: 2, burst: 2 }), { maxLength: 150, size: 'max' }),
        (s, ops) => runAll(s, ops),
      ),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(setupArb, fc.array(opArb({ push: 8, reclaim: 8 }), { maxLength: 150, size: 'max' }), (s, ops) => runAll(s, ops)),
      { numRuns: RUNS },
    );
  });

  it('every kick decision follows avail_event (EVENT_IDX) or used.flags NO_NOTIFY', () => {
    fc.assert(
      fc.property(setupArb, fc.array(opArb({ enableKicks: 2, disableKicks: 2, burst: 2, publish: 6 }), { maxLength: 150, size: 'max' }), (s, ops) => runAll(s, ops)),
      { numRuns: RUNS },
    );
  });

  it('every notify decision follows used_event (EVENT_IDX, with DPDK first-signal rule) or avail.flags NO_INTERRUPT', () => {
    fc.assert(
      fc.property(
        setupArb,
        fc.array(opArb({ enableNotifications: 2, disableNotifications: 2, setUsedEvent: 2, flush: 5 }), { maxLength: 150, size: 'max' }),
        (s, ops) => runAll(s, ops),
      ),
      { numRuns: RUNS },
    );
  });

  it('free descriptors and buffers in flight agree after every step, and descriptors are conserved', () => {
    fc.assert(
      fc.property(
        setupArb.map((s) => ({ ...s, size: Math.min(s.size, 16) })),
        fc.array(opArb({ add: 10, burst: 2 }), { maxLength: 200, size: 'max' }),
        (s, ops) => runAll(s, ops),
      ),
      { numRuns: RUNS },
    );
  });

  it('a device restarted from saveState, or rebased on used.idx, continues exactly as the model', () => {
    fc.assert(
      fc.property(setupArb, fc.array(opArb({ restart: 2, rebase: 1, enableKicks: 1, disableKicks: 1 }), { maxLength: 150, size: 'max' }), (s, ops) => runAll(s, ops)),
      { numRuns: RUNS },
    );
  });
});
