/**
 * Seeded pseudo-random numbers for the simulator.
 *
 * The generator is xoshiro128** (Blackman and Vigna): 128 bits of state, 32-bit
 * output, fast in plain 32-bit JavaScript arithmetic, good enough statistically for
 * choosing delays, chunk splits and interleavings. State words are filled from the
 * seed with splitmix32 so that nearby seeds (1, 2, 3 …) give unrelated streams.
 *
 * `fork(label)` derives a child stream from this stream's *key* (its seed and the path
 * of labels that led to it), never from its current position. So a component that
 * starts drawing more numbers does not shift the numbers any other component sees,
 * and a run replays exactly from its seed even after code elsewhere changes how much
 * randomness it uses.
 */

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Murmur3's 32-bit finaliser: a bijective avalanche mix. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes a label's UTF-16 code units together with one key word. */
function hashLabel(label: string, key: number, salt: number): number {
  let h = fmix32(key ^ salt);
  for (let i = 0; i < label.length; i++) {
    h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
    h = rotl(h, 13);
  }
  return fmix32(h ^ label.length);
}

/** Splits a seed into two 32-bit key words; accepts any safe integer (negative too) or a string. */
function seedKey(seed: number | string): [number, number] {
  if (typeof seed === 'string') return [hashLabel(seed, 0x243f6a88, 0x6a09e667), hashLabel(seed, 0x85a308d3, 0xbb67ae85)];
  if (!Number.isSafeInteger(seed)) throw new RangeError(`rng seed ${seed} is not a safe integer`);
  const u = BigInt.asUintN(64, BigInt(seed));
  return [Number(u & 0xffffffffn), Number(u >> 32n)];
}

/** The bare xoshiro128** generator over four 32-bit state words. */
export class Xoshiro128ss {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(state: readonly [number, number, number, number]) {
    [this.s0, this.s1, this.s2, this.s3] = state.map((w) => w >>> 0) as [number, number, number, number];
    // The all-zero state is the generator's one fixed point.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  nextU32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }
}

/** Fills xoshiro state from a two-word key with splitmix32 steps. */
function stateFromKey(k0: number, k1: number): [number, number, number, number] {
  let a = k0 >>> 0;
  let b = fmix32(k1 ^ 0x9e3779b9);
  const out: number[] = [];
  for (let i = 0; i < 4; i++) {
    a = (a + 0x9e3779b9) >>> 0;
    b = (b + 0x7f4a7c15) >>> 0;
    out.push((fmix32(a) ^ rotl(fmix32(b), 16)) >>> 0);
  }
  return out as [number, number, number, number];
}

export class Rng {
  /** The seed this stream's family was created from (the root's seed for forks). */
  readonly seed: number | string;
  /** Fork labels from the root to this stream, joined by '/'; '' for the root. */
  readonly path: string;
  private readonly k0: number;
  private readonly k1: number;
  private readonly gen: Xoshiro128ss;

  constructor(seed: number | string, path = '', key?: readonly [number, number]) {
    this.seed = seed;
    this.path = path;
    [this.k0, this.k1] = key ?? seedKey(seed);
    this.gen = new Xoshiro128ss(stateFromKey(this.k0, this.k1));
  }

  /** A uniformly distributed unsigned 32-bit integer. */
  nextU32(): number {
    return this.gen.nextU32();
  }

  /** A float in [0, 1) with 53 random bits (two draws). */
  float(): number {
    const hi = this.gen.nextU32() >>> 5; // 27 bits
    const lo = this.gen.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / TWO_53;
  }

  /** A uniformly distributed integer in [lo, hi], both ends included; unbiased (rejection sampling). */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi)) throw new RangeError(`rng.int bounds ${lo}, ${hi} are not safe integers`);
    if (hi < lo) throw new RangeError(`rng.int: hi ${hi} < lo ${lo}`);
    const span = hi - lo + 1;
    if (span <= TWO_32) {
      const limit = TWO_32 - (TWO_32 % span);
      let u = this.gen.nextU32();
      while (u >= limit) u = this.gen.nextU32();
      return lo + (u % span);
    }
    if (!Number.isSafeInteger(span)) throw new RangeError(`rng.int span ${lo}..${hi} is too wide`);
    const limit = TWO_53 - (TWO_53 % span);
    let x: number;
    do {
      x = (this.gen.nextU32() >>> 11) * TWO_32 + this.gen.nextU32(); // 21 + 32 bits
    } while (x >= limit);
    return lo + (x % span);
  }

  /** True with probability p (clamped to [0, 1]). Always consumes one draw, whatever p is. */
  chance(p: number): boolean {
    const u = this.gen.nextU32();
    return u < p * TWO_32;
  }

  /** One element chosen uniformly. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('rng.pick from an empty list');
    return items[this.int(0, items.length - 1)];
  }

  /** Shuffles in place (Fisher–Yates) and returns the same array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      const t = items[i];
      items[i] = items[j];
      items[j] = t;
    }
    return items;
  }

  /**
   * An independent stream named `label` under this one. Depends only on this stream's
   * seed and fork path, not on how many numbers have been drawn; the same label gives
   * the same stream every time, so use distinct labels for distinct components.
   */
  fork(label: string): Rng {
    const k0 = hashLabel(label, this.k0, 0x3c6ef372);
    const k1 = hashLabel(label, this.k1 ^ this.k0, 0xa54ff53a);
    return new Rng(this.seed, this.path === '' ? label : `${this.path}/${label}`, [k0, k1]);
  }
}
