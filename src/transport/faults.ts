import type { TransportRng } from './fd.ts';

/**
 * How a connection carries bytes, and how it breaks. All random choices are drawn
 * from the connection's own stream, forked from the scheduler's seed by connection
 * id, so the same seed gives the same delivery schedule.
 */

/** A delay in virtual seconds: fixed, uniform in [min, max], or drawn by a function. */
export type DelaySpec = number | { min: number; max: number } | ((rng: TransportRng) => number);

/**
 * How one message's bytes are split into the chunks the reader receives:
 * 'whole' (one chunk), 'bytes' (one byte per chunk), 'random' (1 to 8 chunks at
 * random boundaries; `maxChunks` changes the 8), 'fixed' (chunks of `size` bytes).
 */
export type Chunking = 'whole' | 'bytes' | 'random' | { kind: 'random'; maxChunks: number } | { kind: 'fixed'; size: number };

/** The end that called connect() (or socketpair()[0]) is the client; the accepted end is the server. */
export type Role = 'client' | 'server';

/**
 * Cut the connection at a message: the `message`-th (1-based) message sent by `from`
 * ('any': counted over both directions) is delivered — whole, or only its first
 * `bytes` bytes — and then the connection is shut down both ways: each end sees the
 * data already on its way to it, then a close ('eof'); every later send returns EPIPE.
 * The ends stay open until their owners close them.
 */
export interface CutFault {
  from: Role | 'any';
  message: number;
  bytes?: number;
}

export interface ChannelFaults {
  /** Per message, from send to delivery of its first chunk (default 0). Order per direction is kept whatever the draws. */
  delay?: DelaySpec;
  /** Between successive chunks of one message (default 0). */
  chunkGap?: DelaySpec;
  chunking?: Chunking;
  /**
   * Deliver, in one callback, every chunk already due, across message boundaries
   * (a stream reader's read() does that), except that a chunk carrying fds always
   * starts a new delivery (Linux does not merge data across an SCM_RIGHTS boundary).
   */
  coalesce?: boolean;
  cuts?: readonly CutFault[];
}

export interface ConnectionInfo {
  /** 1-based, per namespace, over connects and socketpairs. */
  id: number;
  kind: 'connect' | 'socketpair';
  /** The socket path for 'connect'. */
  path?: string;
  /** 1-based count of connections made to this path (1 for socketpairs). */
  pathIndex: number;
}

/** Faults for every connection of a namespace, fixed or chosen per connection. */
export type FaultPolicy = ChannelFaults | ((info: ConnectionInfo) => ChannelFaults | undefined);

/** Cut after the whole `message`-th message sent by `from`. */
export function closeAfter(from: Role | 'any', message: number): CutFault {
  return { from, message };
}

/** Cut after only the first `bytes` bytes of the `message`-th message sent by `from`. */
export function closeMidMessage(from: Role | 'any', message: number, bytes: number): CutFault {
  return { from, message, bytes };
}

export function resolveFaults(policy: FaultPolicy | undefined, info: ConnectionInfo): ChannelFaults {
  const f = typeof policy === 'function' ? policy(info) : policy;
  const faults = f ?? {};
  validateFaults(faults);
  return faults;
}

export function validateFaults(f: ChannelFaults): void {
  checkDelaySpec('delay', f.delay);
  checkDelaySpec('chunkGap', f.chunkGap);
  const c = f.chunking;
  if (c !== undefined && typeof c === 'object') {
    if (c.kind === 'random' && !(Number.isSafeInteger(c.maxChunks) && c.maxChunks >= 1)) throw new RangeError(`chunking maxChunks ${c.maxChunks}`);
    if (c.kind === 'fixed' && !(Number.isSafeInteger(c.size) && c.size >= 1)) throw new RangeError(`chunking size ${c.size}`);
  }
  for (const cut of f.cuts ?? []) {
    if (!Number.isSafeInteger(cut.message) || cut.message < 1) throw new RangeError(`cut message ${cut.message} (messages count from 1)`);
    if (cut.bytes !== undefined && !(Number.isSafeInteger(cut.bytes) && cut.bytes >= 0)) throw new RangeError(`cut bytes ${cut.bytes}`);
  }
}

function checkDelaySpec(what: string, d: DelaySpec | undefined): void {
  if (d === undefined || typeof d === 'function') return;
  if (typeof d === 'number') {
    if (!(d >= 0 && Number.isFinite(d))) throw new RangeError(`${what} ${d} is not a finite non-negative number`);
  } else if (!(d.min >= 0 && d.max >= d.min && Number.isFinite(d.max))) {
    throw new RangeError(`${what} range [${d.min}, ${d.max}]`);
  }
}

export function drawDelay(spec: DelaySpec | undefined, rng: TransportRng): number {
  if (spec === undefined) return 0;
  if (typeof spec === 'number') return spec;
  const d = typeof spec === 'function' ? spec(rng) : spec.min + (spec.max - spec.min) * rng.float();
  if (!(d >= 0 && Number.isFinite(d))) throw new RangeError(`drawn delay ${d} is not a finite non-negative number`);
  return d;
}

/** Chunk lengths (each ≥ 1, summing to len) for a message of `len` ≥ 1 bytes. */
export function splitMessage(len: number, chunking: Chunking | undefined, rng: TransportRng): number[] {
  const c = chunking ?? 'whole';
  if (c === 'whole' || len <= 1) return [len];
  if (c === 'bytes') return new Array<number>(len).fill(1);
  if (typeof c === 'object' && c.kind === 'fixed') {
    const out: number[] = [];
    for (let off = 0; off < len; off += c.size) out.push(Math.min(c.size, len - off));
    return out;
  }
  const maxChunks = c === 'random' ? 8 : c.maxChunks;
  const n = rng.int(1, Math.min(len, maxChunks));
  const cuts = new Set<number>();
  for (let i = 1; i < n; i++) cuts.add(rng.int(1, len - 1));
  const points = [...cuts].sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(p - prev);
    prev = p;
  }
  out.push(len - prev);
  return out;
}
