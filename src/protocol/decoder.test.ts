import { describe, expect, it } from 'vitest';
import { encode, makeReply, makeRequest } from './codec.ts';
import { MessageDecoder, decodeAll } from './decoder.ts';
import { ProtocolError } from './errors.ts';
import { QEMU_MAX_PAYLOAD, encodeHeader } from './header.ts';
import { FrontendRequest as R, BackendRequest as B } from './requests.ts';

const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};
const header = (request: number, flags: number, size: number) => encodeHeader({ request, flags, size });

// A small session: three messages, the second with an fd.
const m1 = encode(makeRequest(R.GET_FEATURES)).bytes; // 12 bytes
const m2 = encode(makeRequest(R.SET_VRING_CALL, { kind: 'vringFile', index: 0, noFd: false }, { fds: ['call0'] })).bytes; // 20
const m3 = encode(makeReply({ request: R.GET_FEATURES }, { kind: 'features', features: 0x140000000n })).bytes; // 20
const stream = cat(m1, m2, m3);

function thrown(f: () => unknown): ProtocolError {
  try {
    f();
  } catch (e) {
    if (e instanceof ProtocolError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('MessageDecoder', () => {
  it('decodes several messages pushed in one chunk', () => {
    const d = new MessageDecoder<string>();
    d.push(stream.subarray(0, 12), []);
    d.push(stream.subarray(12, 13), ['call0']);
    d.push(stream.subarray(13));
    const got = [...d];
    expect(got.map((m) => m.header.request)).toEqual([R.GET_FEATURES, R.SET_VRING_CALL, R.GET_FEATURES]);
    expect(got.map((m) => m.offset)).toEqual([0, 12, 32]);
    expect(got[1]!.decoded).toEqual({ kind: 'vringFile', index: 0, noFd: false });
    expect(got[2]!.decoded).toEqual({ kind: 'features', features: 0x140000000n });
    expect(got.every((m) => m.error === undefined)).toBe(true);
    d.end();
  });

  it('decodes the same messages when fed one byte at a time', () => {
    const d = new MessageDecoder<string>();
    const got = [];
    for (let i = 0; i < stream.length; i++) got.push(...d.feed(stream.subarray(i, i + 1), i === 12 ? ['call0'] : []));
    expect(got.map((m) => [m.header.request, m.header.flags, Buffer.from(m.payload).toString('hex'), m.fds])).toEqual([
      [1, 1, '', []],
      [13, 1, '0000000000000000', ['call0']],
      [1, 5, '0000004001000000', []],
    ]);
    expect(d.bufferedBytes).toBe(0);
    expect(d.offset).toBe(stream.length);
  });

  it('returns nothing until a message is complete', () => {
    const d = new MessageDecoder();
    d.push(m2.subarray(0, 19));
    expect(d.next()).toBeUndefined();
    d.push(m2.subarray(19));
    // fds were not sent, so the message is framed but wrong
    expect(d.next()!.error?.code).toBe('fd-count');
  });

  describe('fd attachment: fds belong to the message being read when their chunk begins', () => {
    it('a chunk starting on a boundary gives its fds to the message that starts there', () => {
      const d = new MessageDecoder<string>();
      d.push(stream.subarray(0, 12));
      d.push(stream.subarray(12), ['call0']); // also holds all of m3
      const got = [...d];
      expect(got.map((m) => m.fds)).toEqual([[], ['call0'], []]);
    });

    it('a chunk starting inside a message gives its fds to that message, even if the chunk runs into the next', () => {
      const d = new MessageDecoder<string>();
      d.push(stream.subarray(0, 5));
      d.push(stream.subarray(5, 14), ['x']); // starts inside m1, ends inside m2
      d.push(stream.subarray(14), ['call0']); // starts inside m2
      const got = [...d];
      expect(got.map((m) => m.fds)).toEqual([['x'], ['call0'], []]);
      expect(got[0]!.error?.code).toBe('fd-count'); // GET_FEATURES takes no fd
      expect(got[1]!.error).toBeUndefined();
    });

    it('fds of several chunks inside one message add up, in order', () => {
      const d = new MessageDecoder<string>();
      d.push(m2.subarray(0, 4), ['a']);
      d.push(m2.subarray(4, 8), ['b']);
      d.push(m2.subarray(8));
      const m = d.next()!;
      expect(m.fds).toEqual(['a', 'b']);
      expect(m.error?.code).toBe('fd-count');
    });

    it('an empty chunk cannot carry fds, and is otherwise harmless', () => {
      const d = new MessageDecoder<string>();
      d.push(new Uint8Array(0));
      const e = thrown(() => d.push(new Uint8Array(0), ['lost']));
      expect(e.code).toBe('fds-without-bytes');
      expect(e.fatal).toBe(false);
      d.push(stream);
      expect([...d].length).toBe(3);
    });

    it('more than 8 fds on one message is a per-message error; the stream goes on', () => {
      const d = new MessageDecoder<number>();
      d.push(m1, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
      d.push(m3);
      const [a, b] = [...d];
      expect(a!.error?.code).toBe('too-many-fds');
      expect(a!.fds).toHaveLength(9); // handed out so the transport can close them
      expect(b!.error).toBeUndefined();
    });
  });

  describe('fatal errors', () => {
    it('bad version bits kill the stream; messages before it are still handed out first', () => {
      const d = new MessageDecoder();
      d.push(cat(m1, header(R.GET_FEATURES, 0x2, 0), m3));
      expect(d.next()!.header.request).toBe(R.GET_FEATURES);
      const e = thrown(() => d.next());
      expect(e.code).toBe('bad-version');
      expect(e.fatal).toBe(true);
      expect(e.offset).toBe(12);
      expect(d.error).toBe(e);
      // refused from now on, with the very same error
      expect(thrown(() => d.next())).toBe(e);
      expect(thrown(() => d.push(m1))).toBe(e);
      expect(thrown(() => d.end())).toBe(e);
    });

    it('an oversize size is refused as soon as the header is in, before any payload arrives', () => {
      const d = new MessageDecoder();
      d.push(header(R.CREATE_CRYPTO_SESSION, 0x1, 633));
      expect(thrown(() => d.next()).code).toBe('payload-too-large');
    });

    it('the payload limit is an option: QEMU reads bigger messages', () => {
      const big = encode(makeRequest(R.CREATE_CRYPTO_SESSION, { kind: 'cryptoSession', bytes: new Uint8Array(1000) }), { maxPayload: QEMU_MAX_PAYLOAD }).bytes;
      expect(thrown(() => decodeAll(big)).code).toBe('payload-too-large');
      const [m] = decodeAll(big, [], { maxPayload: QEMU_MAX_PAYLOAD });
      expect(m!.decoded?.kind).toBe('cryptoSession');
      expect(m!.payload.length).toBe(1000);
    });

    it('end() inside a message is truncation; on a boundary it is fine', () => {
      const mid = new MessageDecoder();
      mid.push(stream.subarray(0, 20));
      expect(mid.next()).toBeDefined();
      const e = thrown(() => mid.end());
      expect(e.code).toBe('truncated');
      expect(e.fatal).toBe(true);
      const inHeader = new MessageDecoder();
      inHeader.push(stream.subarray(0, 5));
      expect(thrown(() => inHeader.end()).code).toBe('truncated');
      const clean = new MessageDecoder();
      clean.push(stream);
      expect([...clean]).toHaveLength(3);
      expect(() => clean.end()).not.toThrow();
    });
  });

  it('per-message errors leave the stream usable', () => {
    const d = new MessageDecoder();
    d.push(cat(header(0, 0x1, 3), new Uint8Array(3), header(R.SET_FEATURES, 0x1, 4), new Uint8Array(4), m1));
    const got = [...d];
    expect(got.map((m) => m.error?.code)).toEqual(['unknown-request', 'size-mismatch', undefined]);
    expect(got.map((m) => m.decoded === undefined)).toEqual([true, true, false]);
    expect(got[1]!.spec?.name).toBe('SET_FEATURES');
  });

  it('decodes back-end channel requests in the backend space', () => {
    const b = encode(makeRequest(B.SLAVE_IOTLB_MSG, { kind: 'iotlb', iova: 0x1000n, size: 0n, uaddr: 0n, perm: 3, type: 1 }), { space: 'backend' }).bytes;
    expect(decodeAll(b, [], { space: 'backend' })[0]!.spec?.name).toBe('SLAVE_IOTLB_MSG');
    // on the main socket code 1 is GET_FEATURES, which carries no payload
    expect(decodeAll(b)[0]!.error?.code).toBe('size-mismatch');
  });

  it('keeps its buffer bounded while streaming many messages', () => {
    const d = new MessageDecoder();
    for (let i = 0; i < 10_000; i++) {
      d.push(m3.subarray(0, 7));
      d.push(m3.subarray(7));
      expect(d.next()!.header.request).toBe(R.GET_FEATURES);
    }
    expect(d.bufferedBytes).toBe(0);
    expect((d as unknown as { stream: { buf: Uint8Array } }).stream.buf.length).toBeLessThanOrEqual(256);
  });
});
