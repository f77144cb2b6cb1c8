import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Rng } from '../sim/rng.ts';
import { splitMessage, drawDelay, validateFaults, resolveFaults, closeAfter, closeMidMessage, type Chunking } from './faults.ts';

const chunkingArb: fc.Arbitrary<Chunking> = fc.oneof(
  fc.constantFrom<Chunking>('whole', 'bytes', 'random'),
  fc.integer({ min: 1, max: 10 }).map((maxChunks): Chunking => ({ kind: 'random', maxChunks })),
  fc.integer({ min: 1, max: 10 }).map((size): Chunking => ({ kind: 'fixed', size })),
);

describe('splitMessage', () => {
  it('property: chunks are non-empty and add up to the message, within the mode’s limits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 600 }), chunkingArb, fc.integer(), (len, chunking, seed) => {
        const parts = splitMessage(len, chunking, new Rng(seed));
        expect(parts.reduce((a, b) => a + b, 0)).toBe(len);
        for (const p of parts) expect(p).toBeGreaterThanOrEqual(1);
        if (chunking === 'whole') expect(parts).toEqual([len]);
        if (chunking === 'bytes') expect(parts.length).toBe(len);
        if (chunking === 'random') expect(parts.length).toBeLessThanOrEqual(8);
        if (typeof chunking === 'object' && chunking.kind === 'random') expect(parts.length).toBeLessThanOrEqual(chunking.maxChunks);
        if (typeof chunking === 'object' && chunking.kind === 'fixed') {
          expect(parts.length).toBe(Math.ceil(len / chunking.size));
          for (const p of parts.slice(0, -1)) expect(p).toBe(chunking.size);
        }
      }),
    );
  });

  it('random splitting is seeded and does produce splits', () => {
    const a = Array.from({ length: 20 }, (_, i) => splitMessage(64, 'random', new Rng(i)).join());
    const b = Array.from({ length: 20 }, (_, i) => splitMessage(64, 'random', new Rng(i)).join());
    expect(a).toEqual(b);
    expect(new Set(a).size).toBeGreaterThan(10);
  });
});

describe('delays', () => {
  it('property: a uniform range draws within [min, max]; a fixed delay is itself', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 10, noNaN: true }), fc.double({ min: 0, max: 10, noNaN: true }), fc.integer(), (a, b, seed) => {
        const [min, max] = a <= b ? [a, b] : [b, a];
        const r = new Rng(seed);
        for (let i = 0; i < 10; i++) {
          const d = drawDelay({ min, max }, r);
          expect(d >= min && d <= max).toBe(true);
        }
        expect(drawDelay(a, r)).toBe(a);
      }),
    );
  });

  it('a delay function gets the stream; a bad drawn value is refused', () => {
    const r = new Rng(1);
    expect(drawDelay((rng) => rng.int(3, 3), r)).toBe(3);
    expect(() => drawDelay(() => -1, r)).toThrow(RangeError);
    expect(drawDelay(undefined, r)).toBe(0);
  });
});

describe('fault validation', () => {
  it('refuses nonsense and accepts the helpers’ output', () => {
    expect(() => validateFaults({ delay: -1 })).toThrow(RangeError);
    expect(() => validateFaults({ delay: { min: 2, max: 1 } })).toThrow(RangeError);
    expect(() => validateFaults({ chunking: { kind: 'fixed', size: 0 } })).toThrow(RangeError);
    expect(() => validateFaults({ cuts: [closeAfter('client', 0)] })).toThrow(/count from 1/);
    expect(() => validateFaults({ cuts: [closeMidMessage('server', 1, -2)] })).toThrow(RangeError);
    expect(() => validateFaults({ cuts: [closeAfter('any', 3), closeMidMessage('server', 2, 5)], chunking: 'bytes', delay: { min: 0, max: 1 } })).not.toThrow();
  });

  it('a policy function is asked per connection', () => {
    const seen: number[] = [];
    const policy = (info: { id: number }) => {
      seen.push(info.id);
      return info.id === 2 ? { delay: 5 } : undefined;
    };
    expect(resolveFaults(policy, { id: 1, kind: 'connect', path: '/s', pathIndex: 1 })).toEqual({});
    expect(resolveFaults(policy, { id: 2, kind: 'connect', path: '/s', pathIndex: 2 })).toEqual({ delay: 5 });
    expect(seen).toEqual([1, 2]);
  });
});
