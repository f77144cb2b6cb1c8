import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Rng, Xoshiro128ss } from './rng.ts';

function draws(r: Rng, n: number): number[] {
  return Array.from({ length: n }, () => r.nextU32());
}

describe('Xoshiro128ss', () => {
  it('matches the reference xoshiro128** output for state [1, 2, 3, 4]', () => {
    const g = new Xoshiro128ss([1, 2, 3, 4]);
    const out = Array.from({ length: 10 }, () => g.nextU32());
    expect(out).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804]);
  });

  it('escapes the all-zero fixed point', () => {
    const g = new Xoshiro128ss([0, 0, 0, 0]);
    expect(Array.from({ length: 4 }, () => g.nextU32()).some((x) => x !== 0)).toBe(true);
  });
});

describe('Rng', () => {
  it('property: the same seed gives the same stream', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer(), fc.string()), (seed) => {
        expect(draws(new Rng(seed), 16)).toEqual(draws(new Rng(seed), 16));
      }),
    );
  });

  it('nearby seeds give unrelated streams', () => {
    const firsts = new Set([0, 1, 2, 3, 4, 5, 6, 7, -1, 2 ** 32, 2 ** 32 + 1].map((s) => new Rng(s).nextU32()));
    expect(firsts.size).toBe(11);
  });

  it('rejects seeds that are not safe integers', () => {
    expect(() => new Rng(1.5)).toThrow(RangeError);
    expect(() => new Rng(2 ** 53)).toThrow(RangeError);
  });

  it('property: int(lo, hi) stays within [lo, hi], both ends inclusive', () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), fc.nat({ max: 2 ** 40 }), (seed, lo, width) => {
        const r = new Rng(seed);
        for (let i = 0; i < 20; i++) {
          const x = r.int(lo, lo + width);
          expect(Number.isInteger(x) && x >= lo && x <= lo + width).toBe(true);
        }
      }),
    );
  });

  it('int covers both ends and is roughly uniform', () => {
    const r = new Rng(42);
    const counts = new Array<number>(10).fill(0);
    for (let i = 0; i < 20000; i++) counts[r.int(0, 9)]++;
    for (const c of counts) {
      expect(c).toBeGreaterThan(1700);
      expect(c).toBeLessThan(2300);
    }
    expect(r.int(5, 5)).toBe(5);
    expect(() => r.int(3, 2)).toThrow(RangeError);
  });

  it('int over spans wider than 2^32 reaches above 2^32', () => {
    const r = new Rng(7);
    let max = 0;
    for (let i = 0; i < 100; i++) max = Math.max(max, r.int(0, 2 ** 40));
    expect(max).toBeGreaterThan(2 ** 32);
  });

  it('property: float() is in [0, 1)', () => {
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const r = new Rng(seed);
        for (let i = 0; i < 50; i++) {
          const f = r.float();
          expect(f >= 0 && f < 1).toBe(true);
        }
      }),
    );
  });

  it('chance(0) is never true, chance(1) always, chance(0.25) about a quarter', () => {
    const r = new Rng(3);
    let hits = 0;
    for (let i = 0; i < 4000; i++) {
      expect(r.chance(0)).toBe(false);
      expect(r.chance(1)).toBe(true);
      if (r.chance(0.25)) hits++;
    }
    expect(hits).toBeGreaterThan(850);
    expect(hits).toBeLessThan(1150);
  });

  it('property: a fork does not depend on how much the parent has drawn', () => {
    fc.assert(
      fc.property(fc.integer(), fc.string(), fc.nat({ max: 50 }), (seed, label, n) => {
        const a = new Rng(seed);
        const b = new Rng(seed);
        draws(b, n);
        expect(draws(a.fork(label), 8)).toEqual(draws(b.fork(label), 8));
      }),
    );
  });

  it('property: drawing from a fork does not change the parent or a sibling', () => {
    fc.assert(
      fc.property(fc.integer(), fc.nat({ max: 50 }), (seed, n) => {
        const quiet = new Rng(seed);
        const busy = new Rng(seed);
        draws(busy.fork('a'), n);
        expect(draws(busy, 8)).toEqual(draws(quiet, 8));
        expect(draws(busy.fork('b'), 8)).toEqual(draws(quiet.fork('b'), 8));
      }),
    );
  });

  it('forks differ by label, by parent seed and from the parent; paths record the labels', () => {
    const r = new Rng(1);
    const streams = [r, r.fork('a'), r.fork('b'), new Rng(2).fork('a'), r.fork('a').fork('a')].map((x) => draws(x, 4).join());
    expect(new Set(streams).size).toBe(streams.length);
    expect(r.fork('x').fork('y').path).toBe('x/y');
  });

  it('pick and shuffle are deterministic and complete', () => {
    const a = new Rng(9).shuffle([1, 2, 3, 4, 5, 6]);
    expect(new Rng(9).shuffle([1, 2, 3, 4, 5, 6])).toEqual(a);
    expect([...a].sort()).toEqual([1, 2, 3, 4, 5, 6]);
    const r = new Rng(9);
    const seen = new Set(Array.from({ length: 100 }, () => r.pick(['x', 'y', 'z'])));
    expect(seen).toEqual(new Set(['x', 'y', 'z']));
    expect(() => r.pick([])).toThrow(RangeError);
  });
});
