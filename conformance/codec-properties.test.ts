/**
 * Properties of the vhost-user codec over generated messages and generated garbage.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BACKEND_REQUESTS,
  FIXED_PAYLOAD_SIZE,
  FRONTEND_REQUESTS,
  FrontendRequest as R,
  MessageDecoder,
  PAYLOAD_KINDS,
  ProtocolError,
  decodePayload,
  encode,
  encodeHeader,
  encodePayload,
  expectedFdCount,
  formsFor,
  payloadSizeFits,
  type DecodedMessage,
  type MessageForm,
  type Payload,
  type PayloadKind,
  type ProtocolErrorCode,
  type RequestSpace,
  type RequestSpec,
} from '../src/protocol/index.ts';

// ---------------------------------------------------------------- arbitraries

const U64_MAX = (1n << 64n) - 1n;
const u64 = fc.bigInt({ min: 0n, max: U64_MAX });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });
/** Bits 9..63 of a u64 (what sits above index and NOFD); zero half the time. */
const highBits = fc.oneof(fc.constant(0n), u64.map((v) => v & ~0x1ffn));
const region = fc.record({ guestPhysAddr: u64, memorySize: u64, userspaceAddr: u64, mmapOffset: u64 });
const hexOf = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
/** Reserved fields appear in a decoded payload only when non-zero. */
const nz = <K extends string, V>(key: K, v: V, zero: V): Partial<Record<K, V>> => (v === zero ? {} : ({ [key]: v } as Record<K, V>));

function payloadArb(kind: PayloadKind): fc.Arbitrary<Payload> {
  const a = ((): fc.Arbitrary<unknown> => {
    switch (kind) {
      case 'none':
        return fc.constant({ kind });
      case 'u64':
      case 'ack':
        return u64.map((value) => ({ kind, value }));
      case 'features':
      case 'protocolFeatures':
        return u64.map((features) => ({ kind, features }));
      case 'status':
        return u8.map((status) => ({ kind, status }));
      case 'vringFile':
        return fc.tuple(u8, fc.boolean(), highBits).map(([index, noFd, r]) => ({ kind, index, noFd, ...nz('reserved', r, 0n) }));
      case 'deviceStateResult':
        return fc.tuple(u8, fc.boolean(), highBits).map(([error, noFd, r]) => ({ kind, error, noFd, ...nz('reserved', r, 0n) }));
      case 'mac':
        return fc.tuple(fc.uint8Array({ minLength: 6, maxLength: 6 }), fc.oneof(fc.constant(0), u16)).map(([b, r]) => ({
          kind,
          mac: Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':'),
          ...nz('reserved', r, 0),
        }));
      case 'vringState':
        return fc.record({ index: u32, num: u32 }).map((s) => ({ kind, ...s }));
      case 'deviceStateFd':
        return fc.record({ direction: u32, phase: u32 }).map((s) => ({ kind, ...s }));
      case 'vringAddr':
        return fc.record({ index: u32, flags: u32, desc: u64, used: u64, avail: u64, log: u64 }).map((s) => ({ kind, ...s }));
      case 'memoryTable':
        return fc.tuple(fc.array(region, { maxLength: 8 }), fc.oneof(fc.constant(0), u32)).map(([regions, p]) => ({ kind, regions, ...nz('padding', p, 0) }));
      case 'singleRegion':
        return fc.tuple(region, fc.oneof(fc.constant(0n), u64)).map(([r, p]) => ({ kind, region: r, ...nz('padding', p, 0n) }));
      case 'log':
        return fc.record({ mmapSize: u64, mmapOffset: u64 }).map((s) => ({ kind, ...s }));
      case 'iotlb':
        return fc.record({ iova: u64, size: u64, uaddr: u64, perm: u8, type: u8 }).map((s) => ({ kind, ...s }));
      case 'config':
        return fc.record({ offset: u32, flags: u32, data: fc.uint8Array({ maxLength: 256 }) }).map((s) => ({ kind, ...s }));
      case 'vringArea':
        return fc.tuple(u8, fc.boolean(), highBits, u64, u64).map(([index, noFd, r, size, offset]) => ({ kind, index, noFd, ...nz('reserved', r, 0n), size, offset }));
      case 'inflight':
        return fc.record({ mmapSize: u64, mmapOffset: u64, numQueues: u16, queueSize: u16 }).map((s) => ({ kind, ...s }));
      case 'uuid':
        return fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => {
          const h = hexOf(b);
          return { kind, uuid: `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}` };
        });
      case 'cryptoSession':
      case 'opaque':
        return fc.uint8Array({ maxLength: 600 }).map((bytes) => ({ kind, bytes }));
    }
  })();
  return a as fc.Arbitrary<Payload>;
}

/** Wire bytes that are a valid payload of `kind` (counts consistent, limits respected, padding arbitrary). */
function validBytesArb(kind: PayloadKind): fc.Arbitrary<Uint8Array> {
  const fixed = FIXED_PAYLOAD_SIZE[kind];
  if (kind === 'status') return u8.map((s) => Uint8Array.of(s, 0, 0, 0, 0, 0, 0, 0));
  if (fixed !== undefined) return fc.uint8Array({ minLength: fixed, maxLength: fixed });
  if (kind === 'memoryTable') {
    return fc.integer({ min: 0, max: 8 }).chain((n) =>
      fc.uint8Array({ minLength: 8 + 32 * n, maxLength: 8 + 32 * n }).map((b) => {
        new DataView(b.buffer).setUint32(0, n, true);
        return b;
      }),
    );
  }
  if (kind === 'config') {
    return fc.uint8Array({ minLength: 12, maxLength: 12 + 256 }).map((b) => {
      new DataView(b.buffer).setUint32(4, b.length - 12, true);
      return b;
    });
  }
  return fc.uint8Array({ maxLength: 600 });
}

/** Implicit C tail padding, written as zero by the encoder. */
const IMPLICIT_PADDING: Partial<Record<PayloadKind, [number, number]>> = { iotlb: [26, 32], inflight: [20, 24] };

interface Generated {
  readonly spec: RequestSpec;
  readonly form: MessageForm;
  readonly request: number;
  readonly flags: number;
  readonly payload: Payload;
  readonly nfds: number;
}

const SPECS: Record<RequestSpace, readonly RequestSpec[]> = { frontend: FRONTEND_REQUESTS, backend: BACKEND_REQUESTS };

/** The form a receiver reads a message of this size as. */
function pickedForm(spec: RequestSpec, flags: number, size: number): MessageForm | undefined {
  return formsFor(spec, flags).find((f) => payloadSizeFits(f.kind, size));
}

/** A valid message of `space`: a request or reply of some catalogue entry, payload of a form it takes, right fd count. */
function validMessageArb(space: RequestSpace): fc.Arbitrary<Generated> {
  return fc
    .constantFrom(...SPECS[space])
    .chain((spec) =>
      fc.constantFrom<[number, boolean]>([0x1, false], [0x9, false], [0x5, true]).chain(([flags, reply]) => {
        const forms = reply ? spec.replyForms : [{ kind: spec.payload, fds: spec.fds }];
        return fc.constantFrom(...forms).chain((form) =>
          fc.tuple(payloadArb(form.kind), fc.nat()).map(([payload, r]): Generated => {
            const { min, max } = expectedFdCount(form.fds, payload);
            return { spec, form, request: spec.code, flags, payload, nfds: min + (r % (max - min + 1)) };
          }),
        );
      }),
    )
    // Several reply forms can share a size (a GET_FEATURES reply and an ack are both 8 bytes):
    // keep the messages a receiver reads back as the form they were built from.
    .filter((g) => pickedForm(g.spec, g.flags, encodePayload(g.payload).length)?.kind === g.form.kind);
}

const fdNames = (i: number, n: number) => Array.from({ length: n }, (_, k) => `m${i}.${k}`);

function thrownCode(f: () => unknown): ProtocolErrorCode | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
  return undefined;
}

// ---------------------------------------------------------------- properties

describe('payload codecs', () => {
  it.each(PAYLOAD_KINDS)('decode(encode(p)) = p for every %s payload', (kind) => {
    fc.assert(
      fc.property(payloadArb(kind), (p) => {
        expect(decodePayload(kind, encodePayload(p))).toEqual(p);
      }),
      { numRuns: 150 },
    );
  });

  it('encode(decode(bytes)) = bytes for every valid payload of every kind, implicit tail padding aside', () => {
    const arb = fc.constantFrom(...PAYLOAD_KINDS).chain((kind) => validBytesArb(kind).map((bytes) => ({ kind, bytes })));
    fc.assert(
      fc.property(arb, ({ kind, bytes }) => {
        const expected = bytes.slice();
        const pad = IMPLICIT_PADDING[kind];
        if (pad) expected.fill(0, pad[0], pad[1]);
        expect(hexOf(encodePayload(decodePayload(kind, bytes)))).toBe(hexOf(expected));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('messages', () => {
  it('every valid message decodes back to its header, payload and fds', () => {
    const arb = fc.constantFrom<RequestSpace>('frontend', 'backend').chain((space) => validMessageArb(space).map((g) => ({ space, g })));
    fc.assert(
      fc.property(arb, ({ space, g }) => {
        const fds = fdNames(0, g.nfds);
        const { bytes } = encode({ request: g.request, flags: g.flags, payload: g.payload, fds }, { space });
        const d = new MessageDecoder<string>({ space });
        d.push(bytes, fds);
        const m = d.next()!;
        expect(m.error).toBeUndefined();
        expect(m.header).toEqual({ request: g.request, flags: g.flags, size: bytes.length - 12 });
        expect(m.decoded).toEqual(g.payload);
        expect(m.fds).toEqual(fds);
        expect(d.next()).toBeUndefined();
        d.end();
      }),
      { numRuns: 1000 },
    );
  });

  it('any chunking of a concatenation of valid messages decodes to the same list', () => {
    const arb = fc.constantFrom<RequestSpace>('frontend', 'backend').chain((space) =>
      fc
        .array(fc.tuple(validMessageArb(space), fc.nat()), { minLength: 1, maxLength: 12 })
        .chain((msgs) => {
          const wire = msgs.map(([g], i) => encode({ request: g.request, flags: g.flags, payload: g.payload, fds: fdNames(i, g.nfds) }, { space }));
          const total = wire.reduce((n, w) => n + w.bytes.length, 0);
          return fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, total - 1) }), { maxLength: 40 }).map((cuts) => ({ space, msgs, wire, total, cuts }));
        }),
    );
    fc.assert(
      fc.property(arb, ({ space, msgs, wire, total, cuts }) => {
        const stream = new Uint8Array(total);
        const starts: number[] = [];
        let o = 0;
        for (const w of wire) {
          starts.push(o);
          stream.set(w.bytes, o);
          o += w.bytes.length;
        }
        // Each message's fds arrive with a chunk that begins somewhere inside it (often its header).
        const fdAt = new Map<number, readonly string[]>();
        wire.forEach((w, i) => {
          if (w.fds.length === 0) return;
          const within = msgs[i]![1] % 3 === 0 ? msgs[i]![1] % w.bytes.length : 0;
          fdAt.set(starts[i]! + within, w.fds as readonly string[]);
        });
        const points = [...new Set([0, total, ...cuts.filter((c) => c < total), ...fdAt.keys()])].sort((a, b) => a - b);
        const d = new MessageDecoder<string>({ space });
        const got: DecodedMessage<string>[] = [];
        for (let k = 0; k + 1 < points.length; k++) {
          d.push(stream.subarray(points[k], points[k + 1]), fdAt.get(points[k]!) ?? []);
          got.push(...d);
        }
        d.end();
        expect(got.map((m) => m.offset)).toEqual(starts);
        got.forEach((m, i) => {
          const [g] = msgs[i]!;
          expect(m.error).toBeUndefined();
          expect(m.header.request).toBe(g.request);
          expect(m.decoded).toEqual(g.payload);
          expect(m.fds).toEqual(wire[i]!.fds);
        });
      }),
      { numRuns: 300 },
    );
  });
});

describe('decoder robustness', () => {
  /** Feeds chunks, drains after each, ends. Returns the error code if a ProtocolError stopped it; anything else propagates. */
  function run(chunks: readonly Uint8Array[], fdsPerChunk: readonly number[] = []): { messages: number; code?: ProtocolErrorCode } {
    const d = new MessageDecoder<number>();
    let messages = 0;
    let bytes = 0;
    try {
      chunks.forEach((c, i) => {
        bytes += c.length;
        d.push(c, Array.from({ length: c.length > 0 ? (fdsPerChunk[i] ?? 0) : 0 }, (_, k) => k));
        for (let m = d.next(); m; m = d.next()) {
          messages++;
          // each message consumes its header and payload: the loop cannot spin
          expect(d.offset).toBe(m.offset + 12 + m.header.size);
          expect(messages).toBeLessThanOrEqual(Math.floor(bytes / 12));
          expect(m.decoded === undefined).toBe(m.error !== undefined);
        }
      });
      d.end();
      return { messages };
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      expect(e.fatal).toBe(true);
      return { messages, code: e.code };
    }
  }

  const chunked = (b: Uint8Array, cuts: number[]) => {
    const pts = [...new Set([0, b.length, ...cuts.map((c) => c % (b.length + 1))])].sort((x, y) => x - y);
    return pts.slice(1).map((p, i) => b.subarray(pts[i], p));
  };

  it('arbitrary bytes in arbitrary chunks end in messages or a fatal ProtocolError, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat(), { maxLength: 20 }), fc.array(fc.integer({ min: 0, max: 12 }), { maxLength: 20 }), (b, cuts, fds) => {
        run(chunked(b, cuts), fds);
      }),
      { numRuns: 1000 },
    );
  });

  it('header-shaped garbage (valid or bad versions, any request, any size, short payloads) never escapes as anything but ProtocolError', () => {
    const piece = fc
      .record({
        request: fc.integer({ min: 0, max: 50 }),
        flags: fc.constantFrom(0x0, 0x1, 0x2, 0x3, 0x5, 0x9, 0xd, 0x11),
        size: fc.oneof(fc.integer({ min: 0, max: 48 }), fc.integer({ min: 0, max: 700 }), fc.constant(0xffffffff)),
        body: fc.uint8Array({ maxLength: 300 }),
      })
      .map(({ request, flags, size, body }) => {
        const out = new Uint8Array(12 + body.length);
        encodeHeader({ request, flags, size }, out);
        out.set(body, 12);
        return out;
      });
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 30 }), fc.array(fc.integer({ min: 0, max: 10 }), { maxLength: 30 }), (pieces, cuts, fds) => {
        const all = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
        let o = 0;
        for (const p of pieces) {
          all.set(p, o);
          o += p.length;
        }
        run(chunked(all, cuts), fds);
      }),
      { numRuns: 1000 },
    );
  });

  it('a valid stream cut short yields a prefix of its messages, and end() reports truncation exactly when the cut is inside a message', () => {
    const arb = fc.array(validMessageArb('frontend'), { minLength: 1, maxLength: 8 }).chain((gs) => {
      const wire = gs.map((g, i) => encode({ request: g.request, flags: g.flags, payload: g.payload, fds: fdNames(i, g.nfds) }));
      const total = wire.reduce((n, w) => n + w.bytes.length, 0);
      return fc.integer({ min: 0, max: total }).map((cut) => ({ wire, cut }));
    });
    fc.assert(
      fc.property(arb, ({ wire, cut }) => {
        const ends: number[] = [];
        let o = 0;
        const stream = new Uint8Array(wire.reduce((n, w) => n + w.bytes.length, 0));
        for (const w of wire) {
          stream.set(w.bytes, o);
          o += w.bytes.length;
          ends.push(o);
        }
        const d = new MessageDecoder<string>();
        // fds omitted on purpose: messages that needed them come out with fd-count errors, still framed
        if (cut > 0) d.push(stream.subarray(0, cut));
        const got = [...d];
        expect(got.length).toBe(ends.filter((e) => e <= cut).length);
        const onBoundary = cut === 0 || ends.includes(cut);
        expect(thrownCode(() => d.end())).toBe(onBoundary ? undefined : 'truncated');
      }),
      { numRuns: 500 },
    );
  });
});

describe('each validation error from a minimal case', () => {
  const hdr = (request: number, flags: number, size: number, payload: Uint8Array = new Uint8Array(size)) => {
    const b = new Uint8Array(12 + payload.length);
    encodeHeader({ request, flags, size }, b);
    b.set(payload, 12);
    return b;
  };
  const u32le = (...vs: number[]) => {
    const b = new Uint8Array(4 * vs.length);
    vs.forEach((v, i) => new DataView(b.buffer).setUint32(4 * i, v, true));
    return b;
  };
  /** Decodes one message from `bytes` (with `fds` on its header chunk); returns the code of the error it carries or throws. */
  function decodeOne(bytes: Uint8Array, fds: number[] = []): { code?: ProtocolErrorCode; fatal?: boolean } {
    const d = new MessageDecoder<number>();
    try {
      d.push(bytes, fds);
      const m = d.next();
      if (m?.error) return { code: m.error.code, fatal: m.error.fatal };
      d.end();
      return {};
    } catch (e) {
      if (e instanceof ProtocolError) return { code: e.code, fatal: e.fatal };
      throw e;
    }
  }

  // Compile-time: a case for every code.
  const cases: Record<ProtocolErrorCode, () => { code?: ProtocolErrorCode; fatal?: boolean }> = {
    'bad-version': () => decodeOne(hdr(R.GET_FEATURES, 0x0, 0)),
    'payload-too-large': () => decodeOne(hdr(R.SET_FEATURES, 0x1, 633).subarray(0, 12)),
    truncated: () => decodeOne(hdr(R.GET_FEATURES, 0x1, 0).subarray(0, 11)),
    'unknown-request': () => decodeOne(hdr(44, 0x1, 0)),
    'size-mismatch': () => decodeOne(hdr(R.SET_FEATURES, 0x1, 4)),
    'too-many-fds': () => decodeOne(hdr(R.SET_OWNER, 0x1, 0), [0, 1, 2, 3, 4, 5, 6, 7, 8]),
    'fd-count': () => decodeOne(hdr(R.SET_VRING_KICK, 0x1, 8)),
    'too-many-regions': () => decodeOne(hdr(R.SET_MEM_TABLE, 0x1, 8 + 32 * 9, (() => { const p = new Uint8Array(8 + 32 * 9); p[0] = 9; return p; })())),
    'region-count-mismatch': () => decodeOne(hdr(R.SET_MEM_TABLE, 0x1, 40, new Uint8Array([2, ...new Uint8Array(39)])), [0]),
    'config-too-large': () => decodeOne(hdr(R.SET_CONFIG, 0x1, 12 + 257, new Uint8Array([...u32le(0, 257, 0), ...new Uint8Array(257)]))),
    'status-out-of-range': () => decodeOne(hdr(R.SET_STATUS, 0x1, 8, new Uint8Array([0, 1, 0, 0, 0, 0, 0, 0]))),
    'wrong-payload-kind': () => {
      const code = thrownCode(() => encode({ request: R.SET_VRING_NUM, flags: 0x1, payload: { kind: 'u64', value: 1n } }));
      return { code, fatal: false };
    },
    'field-out-of-range': () => {
      const code = thrownCode(() => encode({ request: R.SET_VRING_NUM, flags: 0x1, payload: { kind: 'vringState', index: -1, num: 0 } }));
      return { code, fatal: false };
    },
    'fds-without-bytes': () => {
      const d = new MessageDecoder<number>();
      try {
        d.push(new Uint8Array(0), [3]);
      } catch (e) {
        if (e instanceof ProtocolError) return { code: e.code, fatal: e.fatal };
        throw e;
      }
      return {};
    },
  };
  const FATAL: ReadonlySet<ProtocolErrorCode> = new Set(['bad-version', 'payload-too-large', 'truncated']);

  it.each(Object.keys(cases) as ProtocolErrorCode[])('%s', (code) => {
    const got = cases[code]();
    expect(got.code).toBe(code);
    expect(got.fatal).toBe(FATAL.has(code));
  });
});
