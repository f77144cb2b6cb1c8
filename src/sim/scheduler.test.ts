import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Scheduler, SchedulerEventError, SchedulerRunawayError, type EventHandle } from './scheduler.ts';
import { Rng } from './rng.ts';

/**
 * A random schedule: root events at a few times (so ties are common); when a root
 * runs it schedules children after small delays and may cancel one handle created
 * earlier.
 */
interface RootSpec {
  t: number;
  children: number[];
  cancel: number | null;
}
const rootArb: fc.Arbitrary<RootSpec> = fc.record({
  t: fc.constantFrom(0, 1, 2, 3),
  children: fc.array(fc.constantFrom(0, 0.5, 1), { maxLength: 3 }),
  cancel: fc.option(fc.nat({ max: 40 }), { nil: null }),
});

interface Outcome {
  order: string[];
  times: number[];
  cancelled: Set<string>;
  scheduled: string[];
}

/** Runs a schedule on anything with at/after; `cancel` is how the runner cancels a handle. */
function play(
  roots: RootSpec[],
  at: (t: number, fn: () => void, label: string) => { cancel(): boolean },
  now: () => number,
  run: () => void,
): Outcome {
  const order: string[] = [];
  const times: number[] = [];
  const cancelled = new Set<string>();
  const scheduled: string[] = [];
  const handles: { label: string; h: { cancel(): boolean } }[] = [];
  const add = (t: number, label: string, fn: () => void) => {
    scheduled.push(label);
    handles.push({ label, h: at(t, fn, label) });
  };
  roots.forEach((r, i) => {
    const label = `r${i}`;
    add(r.t, label, () => {
      order.push(label);
      times.push(now());
      r.children.forEach((dt, j) => {
        const cl = `${label}.c${j}`;
        add(now() + dt, cl, () => {
          order.push(cl);
          times.push(now());
        });
      });
      if (r.cancel !== null && handles.length > 0) {
        const target = handles[r.cancel % handles.length];
        if (target.h.cancel()) cancelled.add(target.label);
      }
    });
  });
  run();
  return { order, times, cancelled, scheduled };
}

/** The obviously-correct reference: a list scanned for the smallest (time, insertion). */
function playReference(roots: RootSpec[]): Outcome {
  let clock = 0;
  let seq = 0;
  const pending: { t: number; seq: number; fn: () => void; live: boolean }[] = [];
  return play(
    roots,
    (t, fn) => {
      const e = { t, seq: seq++, fn, live: true };
      pending.push(e);
      return {
        cancel: () => {
          const was = e.live;
          e.live = false;
          return was;
        },
      };
    },
    () => clock,
    () => {
      for (;;) {
        const live = pending.filter((e) => e.live);
        if (live.length === 0) return;
        live.sort((a, b) => a.t - b.t || a.seq - b.seq);
        const e = live[0];
        e.live = false;
        clock = e.t;
        e.fn();
      }
    },
  );
}

function playOn(s: Scheduler, roots: RootSpec[]): Outcome {
  return play(
    roots,
    (t, fn, label) => s.at(t, fn, label),
    () => s.now,
    () => {
      s.run();
    },
  );
}

describe('Scheduler', () => {
  it("property: with 'fifo' tie-break the order equals the reference (time, then insertion) model", () => {
    fc.assert(
      fc.property(fc.array(rootArb, { maxLength: 12 }), fc.integer(), (roots, seed) => {
        const got = playOn(new Scheduler({ seed, tieBreak: 'fifo' }), roots);
        const want = playReference(roots);
        expect(got.order).toEqual(want.order);
        expect(got.times).toEqual(want.times);
      }),
    );
  });

  it('property: seeded tie-break runs every uncancelled event exactly once, never a cancelled one, in time order', () => {
    fc.assert(
      fc.property(fc.array(rootArb, { maxLength: 12 }), fc.integer(), (roots, seed) => {
        const s = new Scheduler({ seed });
        const got = playOn(s, roots);
        for (let i = 1; i < got.times.length; i++) expect(got.times[i]).toBeGreaterThanOrEqual(got.times[i - 1]);
        expect(new Set(got.order).size).toBe(got.order.length);
        for (const c of got.cancelled) expect(got.order).not.toContain(c);
        const expected = got.scheduled.filter((l) => !got.cancelled.has(l));
        expect([...got.order].sort()).toEqual([...expected].sort());
        expect(s.idle).toBe(true);
      }),
    );
  });

  it('property: the same seed gives the same run, event for event', () => {
    fc.assert(
      fc.property(fc.array(rootArb, { maxLength: 12 }), fc.integer(), (roots, seed) => {
        const a = new Scheduler({ seed, log: true });
        const b = new Scheduler({ seed, log: true });
        expect(playOn(a, roots).order).toEqual(playOn(b, roots).order);
        expect(a.log).toEqual(b.log);
      }),
    );
  });

  it('different seeds interleave simultaneous events differently; each event comes first for some seed', () => {
    const orders = new Set<string>();
    const firsts = new Set<string>();
    for (let seed = 0; seed < 60; seed++) {
      const s = new Scheduler({ seed });
      const order: string[] = [];
      for (const l of ['a', 'b', 'c', 'd']) s.at(5, () => order.push(l), l);
      s.run();
      orders.add(order.join(''));
      firsts.add(order[0]);
    }
    expect(orders.size).toBeGreaterThan(10);
    expect(firsts).toEqual(new Set(['a', 'b', 'c', 'd']));
  });

  it('an event scheduled at the current time may run before or after other events already pending at that time', () => {
    const positions = new Set<number>();
    for (let seed = 0; seed < 40; seed++) {
      const s = new Scheduler({ seed });
      const order: string[] = [];
      s.at(1, () => {
        order.push('p');
        s.after(0, () => order.push('child'));
      });
      for (const l of ['x', 'y', 'z']) s.at(1, () => order.push(l));
      s.run();
      positions.add(order.indexOf('child') - order.indexOf('p'));
    }
    expect(positions.size).toBeGreaterThan(1);
  });

  it('later times always run after earlier ones, whatever the seed (heap order under load)', () => {
    const s = new Scheduler({ seed: 5 });
    const r = new Rng(99);
    const seen: number[] = [];
    const handles: EventHandle[] = [];
    for (let i = 0; i < 20000; i++) handles.push(s.at(r.int(0, 5000) / 7, () => seen.push(s.now)));
    let cancelled = 0;
    for (let i = 0; i < handles.length; i += 3) if (handles[i].cancel()) cancelled++;
    expect(s.pending).toBe(20000 - cancelled);
    const res = s.run();
    expect(res).toEqual({ executed: 20000 - cancelled, reason: 'idle' });
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
  });

  it('after() is relative to now; run({ until }) stops before later events and advances the clock', () => {
    const s = new Scheduler({ seed: 1 });
    const log: string[] = [];
    s.at(1, () => {
      log.push(`a@${s.now}`);
      s.after(2.5, () => log.push(`b@${s.now}`), 'b');
    });
    s.at(10, () => log.push(`c@${s.now}`));
    expect(s.run({ until: 4 })).toEqual({ executed: 2, reason: 'until' });
    expect(log).toEqual(['a@1', 'b@3.5']);
    expect(s.now).toBe(4);
    expect(s.nextTime).toBe(10);
    expect(s.run({ until: 20 })).toEqual({ executed: 1, reason: 'idle' });
    expect(s.now).toBe(20);
    expect(s.run()).toEqual({ executed: 0, reason: 'idle' });
    expect(s.now).toBe(20);
  });

  it('an event exactly at `until` runs', () => {
    const s = new Scheduler({ seed: 1 });
    let ran = false;
    s.at(2, () => (ran = true));
    s.run({ until: 2 });
    expect(ran).toBe(true);
  });

  it('step() runs one event at a time', () => {
    const s = new Scheduler({ seed: 1, tieBreak: 'fifo' });
    const log: number[] = [];
    s.at(2, () => log.push(2));
    s.at(1, () => log.push(1));
    expect(s.step()?.time).toBe(1);
    expect(log).toEqual([1]);
    expect(s.now).toBe(1);
    expect(s.step()?.time).toBe(2);
    expect(s.step()).toBeUndefined();
    expect(s.idle).toBe(true);
  });

  it('cancel() removes a pending event once; a run event cannot be cancelled', () => {
    const s = new Scheduler({ seed: 1 });
    let ran = 0;
    const h = s.at(1, () => ran++);
    const k = s.at(1, () => ran++);
    expect(h.pending).toBe(true);
    expect(h.cancel()).toBe(true);
    expect(h.cancel()).toBe(false);
    expect(h.pending).toBe(false);
    expect(s.cancel(k)).toBe(true);
    s.at(2, () => ran++);
    const done = s.at(0.5, () => ran++);
    s.run();
    expect(ran).toBe(2);
    expect(done.cancel()).toBe(false);
  });

  it('refuses times in the past, NaN and negative delays', () => {
    const s = new Scheduler({ seed: 1 });
    s.at(5, () => {});
    s.run();
    expect(() => s.at(4, () => {}, 'late')).toThrow(/before now.*late/);
    expect(() => s.at(NaN, () => {})).toThrow(RangeError);
    expect(() => s.after(-1, () => {})).toThrow(RangeError);
    expect(() => s.after(Infinity, () => {})).toThrow(RangeError);
  });

  it('a throwing handler surfaces as SchedulerEventError with label and time; the run can resume', () => {
    const s = new Scheduler({ seed: 1, tieBreak: 'fifo' });
    const boom = new Error('boom');
    const log: string[] = [];
    s.at(1, () => log.push('before'));
    s.at(2, () => {
      throw boom;
    }, 'explode');
    s.at(3, () => log.push('after'));
    let err: unknown;
    try {
      s.run();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SchedulerEventError);
    const e = err as SchedulerEventError;
    expect(e.label).toBe('explode');
    expect(e.time).toBe(2);
    expect(e.cause).toBe(boom);
    expect(e.message).toContain("'explode' at t=2");
    expect(s.now).toBe(2);
    expect(s.run()).toEqual({ executed: 1, reason: 'idle' });
    expect(log).toEqual(['before', 'after']);
  });

  it('guards against a runaway: maxEvents ends the run with a clear error', () => {
    const s = new Scheduler({ seed: 1 });
    let n = 0;
    const spin = () => {
      n++;
      s.after(0, spin, 'spin');
    };
    s.after(0, spin, 'spin');
    expect(() => s.run({ maxEvents: 1000 })).toThrow(SchedulerRunawayError);
    expect(n).toBe(1000);
    let err: unknown;
    try {
      s.run({ maxEvents: 10 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SchedulerRunawayError);
    expect((err as SchedulerRunawayError).nextLabels).toEqual(['spin']);
    expect((err as Error).message).toMatch(/after 10 events.*'spin'/);
    // Exactly maxEvents events and then idle is not a runaway.
    const t = new Scheduler({ seed: 1 });
    for (let i = 0; i < 5; i++) t.at(i, () => {});
    expect(t.run({ maxEvents: 5 })).toEqual({ executed: 5, reason: 'idle' });
    const u = new Scheduler({ seed: 1, maxEvents: 3 });
    for (let i = 0; i < 5; i++) u.at(i, () => {});
    expect(() => u.run()).toThrow(SchedulerRunawayError);
  });

  it('stopWhen and stop() end a run early without advancing to until', () => {
    const s = new Scheduler({ seed: 1 });
    let n = 0;
    for (let i = 1; i <= 10; i++) s.at(i, () => n++);
    expect(s.run({ until: 100, stopWhen: () => n === 3 })).toEqual({ executed: 3, reason: 'stopped' });
    expect(s.now).toBe(3);
    s.at(3.5, () => s.stop());
    expect(s.run()).toEqual({ executed: 1, reason: 'stopped' });
    expect(s.run().reason).toBe('idle');
    expect(n).toBe(10);
  });

  it('run() and step() cannot be called from inside an event', () => {
    const s = new Scheduler({ seed: 1 });
    s.at(1, () => s.run());
    expect(() => s.run()).toThrow(/inside an event handler/);
    s.at(2, () => s.step());
    expect(() => s.step()).toThrow(/inside an event handler/);
  });

  it('the log records label and time of each executed event when enabled', () => {
    const s = new Scheduler({ seed: 1, log: true, tieBreak: 'fifo' });
    s.at(1, () => {}, 'one');
    s.at(0.5, () => {}, 'half');
    s.run();
    expect(s.log.map((e) => [e.label, e.time])).toEqual([
      ['half', 0.5],
      ['one', 1],
    ]);
    expect(s.executed).toBe(2);
    const quiet = new Scheduler({ seed: 1 });
    quiet.at(1, () => {});
    quiet.run();
    expect(quiet.log).toEqual([]);
  });

  it("components drawing from rng do not change the tie-break order", () => {
    const orderWith = (draw: boolean) => {
      const s = new Scheduler({ seed: 77 });
      const order: string[] = [];
      for (const l of ['a', 'b', 'c', 'd', 'e']) {
        if (draw) s.rng.nextU32();
        s.at(1, () => order.push(l));
      }
      s.run();
      return order.join('');
    };
    expect(orderWith(true)).toBe(orderWith(false));
  });
});
