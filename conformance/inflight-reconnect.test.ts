import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Scheduler } from '../src/sim/scheduler.ts';
import { SocketNamespace } from '../src/transport/index.ts';
import { DpdkBackend } from '../src/endpoint/backend/index.ts';
import { InflightTracker } from '../src/endpoint/backend/inflight-tracker.ts';
import { QemuFrontend } from '../src/endpoint/frontend/qemu.ts';
import { TraceRecorder } from '../src/endpoint/trace-recorder.ts';
import { isMessageRecord } from '../src/sim/trace.ts';
import { FrontendRequest as R } from '../src/protocol/index.ts';
import { DescriptorChain, type UsedBuffer } from '../src/ring/types.ts';
import type { SplitDriver } from '../src/ring/split/index.ts';

// A back-end killed with K chains popped and not yet used, under QEMU with inflight tracking
// (what vhost-user-blk does) and without it (virtio-net): with tracking the next back-end
// resubmits exactly those K heads; without it the split re-base (last_avail_idx := used->idx)
// decides their fate.

const PATH = 'run/vhost-blk.sock';
const RUNS = Number(process.env.VHOSTSIM_PROP_SCALE ?? 1);

interface Rig {
  sched: Scheduler;
  ns: SocketNamespace;
  fe: QemuFrontend;
  be: DpdkBackend;
  recorder: TraceRecorder;
}

function rig(inflight: boolean, seed = 1): Rig {
  const sched = new Scheduler({ seed });
  const ns = new SocketNamespace({ scheduler: sched });
  const recorder = new TraceRecorder(sched);
  const fe = new QemuFrontend({ ns, path: PATH, guestDriver: 'virtio-pmd', ramSize: 4 << 20, recorder, inflight });
  fe.start();
  const be = newBackend(ns, inflight);
  return { sched, ns, fe, be, recorder };
}

function newBackend(ns: SocketNamespace, inflight: boolean): DpdkBackend {
  const be = new DpdkBackend({ ns, path: PATH, profile: { client: true, inflight } });
  be.start();
  return be;
}

function ready(b: DpdkBackend): number {
  return b.events.filter((e) => e.kind === 'ready').length;
}

function runUntilUp(r: Rig, be: DpdkBackend): void {
  r.sched.run({ until: r.sched.now + 60, stopWhen: () => ready(be) >= 1 && r.fe.phase === 'running' });
  expect(ready(be)).toBe(1);
  expect(r.fe.phase).toBe('running');
}

/** Requests the front-end sent, in order, over every connection. */
function requests(r: Rig): number[] {
  return r.recorder.records.filter(isMessageRecord).filter((m) => m.dir === 'f2b').map((m) => m.request);
}

interface Crash {
  /** Buffers the guest posts on vring 0 (one 64-byte device-writable buffer each). */
  n: number;
  /** Chains the first back-end pops. */
  popped: number;
  /** Of those, how many it completes (in pop order: the ring has IN_ORDER) before it dies. */
  completed: number;
  /**
   * The crash point inside the last completion: 'between' completions, or 'torn' after
   * its used entry is visible (used->idx) and before its inflight flag is cleared.
   */
  at: 'between' | 'torn';
}

interface Outcome {
  /** Heads in avail order, as the first back-end popped them. */
  poppedHeads: number[];
  /** Heads popped and not used when the back-end died. */
  leftInflight: number[];
  r: Rig;
  second: DpdkBackend;
  driver: SplitDriver<unknown>;
  tokens: Map<number, number>;
}

function crashAndReconnect(inflight: boolean, c: Crash, seed = 1): Outcome {
  const r = rig(inflight, seed);
  runUntilUp(r, r.be);
  const gv = r.fe.guest.vring(0);
  const driver = gv.driver as SplitDriver<unknown>;
  const area = r.fe.guest.bufferArea();
  for (let i = 0; i < c.n; i++) driver.add([{ addr: area.gpa + 0x1000 + 64 * i, len: 64, writable: true }], i);
  driver.publish();
  const ring = r.be.vring(0)!;
  const tracker = InflightTracker.for(ring);
  expect(tracker === undefined).toBe(!inflight);
  const chain = new DescriptorChain(8);
  const poppedHeads: number[] = [];
  for (let i = 0; i < c.popped; i++) {
    expect(tracker !== undefined ? tracker.pop(chain) : ring.pop(chain)).toBe(true);
    poppedHeads.push(chain.id);
  }
  for (let i = 0; i < c.completed; i++) {
    const head = poppedHeads[i]!;
    if (tracker !== undefined && c.at === 'torn' && i === c.completed - 1) {
      tracker.setLastInflightIo(head);
      ring.device.push(head, 64);
      ring.notify();
    } else if (tracker !== undefined) tracker.complete(head, 64);
    else {
      ring.device.push(poppedHeads[i]!, 64);
      ring.notify();
    }
  }
  const leftInflight = poppedHeads.slice(c.completed);
  if (tracker !== undefined) {
    // a torn completion leaves its head marked, for the kick-time check to clear
    const marked = c.at === 'torn' && c.completed > 0 ? [...leftInflight, poppedHeads[c.completed - 1]!] : leftInflight;
    expect(tracker.inflightHeads().sort((a, b) => a - b)).toEqual([...marked].sort((a, b) => a - b));
  }
  r.be.kill();
  const second = newBackend(r.ns, inflight);
  runUntilUp(r, second);
  const tokens = new Map<number, number>();
  return { poppedHeads, leftInflight, r, second, driver, tokens };
}

/** Reclaims everything the device has used: token → times used. */
function reclaimAll(driver: SplitDriver<unknown>, into: Map<number, number>): void {
  const out: UsedBuffer<unknown> = { token: undefined, len: 0, id: 0 };
  while (driver.reclaim(out)) into.set(out.token as number, (into.get(out.token as number) ?? 0) + 1);
}

const crashes = fc
  .record({
    n: fc.integer({ min: 1, max: 64 }),
    popFrac: fc.double({ min: 0, max: 1, noNaN: true }),
    doneFrac: fc.double({ min: 0, max: 1, noNaN: true }),
    at: fc.constantFrom<Crash['at']>('between', 'torn'),
  })
  .map(({ n, popFrac, doneFrac, at }): Crash => {
    const popped = Math.round(popFrac * n);
    return { n, popped, completed: Math.round(doneFrac * popped), at };
  });

describe('inflight tracking across a back-end crash (QEMU inflight on, dpdk-22.11 inflight on, split ring)', () => {
  it('QEMU sends GET_INFLIGHT_FD once and SET_INFLIGHT_FD with the same memfd before the vring setup of every start', () => {
    const o = crashAndReconnect(true, { n: 8, popped: 5, completed: 2, at: 'between' });
    const reqs = requests(o.r);
    expect(reqs.filter((q) => q === R.GET_INFLIGHT_FD)).toHaveLength(1);
    // per start: SET_FEATURES (vhost_dev_prepare_inflight), SET_INFLIGHT_FD, then vhost_dev_start
    const sets = reqs.flatMap((q, i) => (q === R.SET_INFLIGHT_FD ? [i] : []));
    expect(sets).toHaveLength(2);
    // first start: SET_FEATURES, GET_INFLIGHT_FD, SET_INFLIGHT_FD; later ones skip the GET
    expect(reqs.slice(sets[0]! - 2, sets[0]! + 1)).toEqual([R.SET_FEATURES, R.GET_INFLIGHT_FD, R.SET_INFLIGHT_FD]);
    expect(reqs.slice(sets[1]! - 1, sets[1]! + 1)).toEqual([R.SET_FEATURES, R.SET_INFLIGHT_FD]);
    for (const i of sets) {
      const firstVring = reqs.findIndex((q, j) => j > i && q === R.SET_VRING_NUM);
      expect(firstVring).toBeGreaterThan(i);
      expect(reqs.slice(i + 1, firstVring)).not.toContain(R.SET_INFLIGHT_FD);
    }
    expect(reqs.indexOf(R.GET_INFLIGHT_FD)).toBeLessThan(sets[0]!);
    expect(reqs.indexOf(R.GET_INFLIGHT_FD)).toBeGreaterThan(reqs.indexOf(R.GET_PROTOCOL_FEATURES));
    // the area QEMU kept is the one both back-ends mapped: same memfd object on QEMU's side,
    // same shared memory on the new back-end's side
    const area = o.r.fe.inflightArea!;
    expect(area).toBeDefined();
    expect(area.fd.closed).toBe(false);
    expect(o.second.device!.inflightRegion!.fd.buffer).toBe(area.fd.buffer);
    expect(area.numQueues).toBe(2);
    expect(area.queueSize).toBe(o.r.fe.cfg.queueSize);
  });

  it('with inflight tracking every in-flight descriptor completes exactly once', () => {
    fc.assert(
      fc.property(crashes, (c) => {
        const o = crashAndReconnect(true, c);
        const ring = o.second.vring(0)!;
        const tracker = InflightTracker.for(ring)!;
        expect(tracker).toBeDefined();
        const resubmit = tracker.resubmit();
        // exactly the K heads left inflight, oldest first
        expect(resubmit.map((d) => d.index)).toEqual(o.leftInflight);
        expect(tracker.resubmit()).toEqual([]);
        for (const d of resubmit) tracker.complete(d.index, 64);
        // then new work: the rest of what the guest posted, nothing popped twice
        const chain = new DescriptorChain(8);
        let fresh = 0;
        while (tracker.pop(chain)) {
          expect(o.poppedHeads).not.toContain(chain.id);
          tracker.complete(chain.id, 64);
          fresh++;
        }
        expect(fresh).toBe(c.n - c.popped);
        expect(tracker.inflightHeads()).toEqual([]);
        const used = new Map<number, number>();
        reclaimAll(o.driver, used);
        expect(used.size).toBe(c.n);
        for (let i = 0; i < c.n; i++) expect(used.get(i)).toBe(1);
        expect(o.driver.inFlight).toBe(0);
      }),
      { numRuns: 30 * RUNS },
    );
  });
});

describe('the same crash without inflight tracking (QEMU virtio-net, dpdk-22.11 net default)', () => {
  it('no inflight messages, no resubmit list: the K chains are replayed by the split re-base', () => {
    fc.assert(
      fc.property(crashes, (c) => {
        const o = crashAndReconnect(false, c);
        const reqs = requests(o.r);
        expect(reqs).not.toContain(R.GET_INFLIGHT_FD);
        expect(reqs).not.toContain(R.SET_INFLIGHT_FD);
        const ring = o.second.vring(0)!;
        expect(ring.inflight).toBeUndefined();
        expect(InflightTracker.for(ring)).toBeUndefined();
        // QEMU's GET_VRING_BASE to the dead back-end failed, so it restored
        // last_avail_idx from used->idx (= completed): the new back-end starts there, and
        // with IN_ORDER completion the K popped-but-unused chains are exactly the ones it
        // meets first: nothing is lost, and they are processed again from scratch (replayed
        // as new work, with no record that they had been started).
        const chain = new DescriptorChain(8);
        const again: number[] = [];
        while (ring.pop(chain)) {
          again.push(chain.id);
          ring.device.push(chain.id, 64);
          ring.notify();
        }
        expect(again.slice(0, o.leftInflight.length)).toEqual(o.leftInflight);
        expect(again).toHaveLength(c.n - c.completed);
        const used = new Map<number, number>();
        reclaimAll(o.driver, used);
        for (let i = 0; i < c.n; i++) expect(used.get(i)).toBe(1);
      }),
      { numRuns: 30 * RUNS },
    );
  });
});
