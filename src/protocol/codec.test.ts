import { describe, expect, it } from 'vitest';
import { checkMessage, encode, makeAck, makeReply, makeRequest } from './codec.ts';
import { ProtocolError } from './errors.ts';
import { FrontendRequest as R, BackendRequest as B } from './requests.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string) => new Uint8Array(Buffer.from(h, 'hex'));

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
  return undefined;
}

describe('encode and the message builders', () => {
  it('builds the GET_FEATURES exchange byte for byte as DPDK sent it', () => {
    const req = makeRequest(R.GET_FEATURES);
    expect(hex(encode(req).bytes)).toBe('010000000100000000000000');
    const reply = makeReply(req, { kind: 'features', features: 0xd7c66e7cbn });
    expect(hex(encode(reply).bytes)).toBe('01000000' + '05000000' + '08000000' + 'cbe7667c0d000000');
  });

  it('acks echo the request code with flags 0x5 and u64 0 / 1', () => {
    const req = makeRequest(R.SET_STATUS, { kind: 'status', status: 0xb }, { needReply: true });
    expect(req.flags).toBe(0x9);
    expect(hex(encode(makeAck(req, true)).bytes)).toBe('27000000' + '05000000' + '08000000' + '0000000000000000');
    expect(hex(encode(makeAck(req, false)).bytes)).toBe('27000000' + '05000000' + '08000000' + '0100000000000000');
  });

  it('passes fds through untouched, in order', () => {
    const fds = [{ id: 'a' }, { id: 'b' }];
    const region = { guestPhysAddr: 0n, memorySize: 0x1000n, userspaceAddr: 0n, mmapOffset: 0n };
    const out = encode(makeRequest(R.SET_MEM_TABLE, { kind: 'memoryTable', regions: [region, region] }, { fds }));
    expect(out.fds).toEqual(fds);
    expect(out.bytes.length).toBe(12 + 8 + 64);
  });

  it('refuses what a receiver would refuse', () => {
    expect(codeOf(() => encode(makeRequest(R.SET_FEATURES, { kind: 'status', status: 1 })))).toBe('wrong-payload-kind');
    expect(codeOf(() => encode(makeRequest(R.SET_VRING_KICK, { kind: 'vringFile', index: 0, noFd: false })))).toBe('fd-count');
    expect(codeOf(() => encode(makeRequest(R.SET_VRING_KICK, { kind: 'vringFile', index: 0, noFd: true }, { fds: [1] })))).toBe('fd-count');
    expect(codeOf(() => encode(makeRequest(99, { kind: 'none' })))).toBe('unknown-request');
    expect(codeOf(() => encode({ request: R.GET_FEATURES, flags: 0x2 }))).toBe('bad-version');
    expect(codeOf(() => encode(makeRequest(R.CREATE_CRYPTO_SESSION, { kind: 'cryptoSession', bytes: new Uint8Array(700) })))).toBe('payload-too-large');
    expect(codeOf(() => encode(makeRequest(R.SET_FEATURES, new Uint8Array(4))))).toBe('size-mismatch');
    expect(codeOf(() => encode(makeRequest(R.SET_OWNER, undefined, { fds: Array(9).fill(0) })))).toBe('too-many-fds');
  });

  it('builds malformed messages on request when validation is off', () => {
    const m = encode({ request: 99, flags: 0x2, payload: bytes('ff') }, { validate: false });
    expect(hex(m.bytes)).toBe('63000000' + '02000000' + '01000000' + 'ff');
    expect(encode(makeRequest(R.CREATE_CRYPTO_SESSION, { kind: 'cryptoSession', bytes: new Uint8Array(700) }), { maxPayload: 1072 }).bytes.length).toBe(712);
  });

  it('uses the back-end request space when told to', () => {
    const m = makeRequest(B.SLAVE_VRING_HOST_NOTIFIER_MSG, { kind: 'vringArea', index: 0, noFd: true, size: 0n, offset: 0n });
    expect(codeOf(() => encode(m, { space: 'backend' }))).toBeUndefined();
    expect(codeOf(() => encode(m))).toBe('wrong-payload-kind'); // front-end 3 is SET_OWNER
  });
});

describe('checkMessage', () => {
  const h = (request: number, flags: number, size: number) => ({ request, flags, size });

  it('reads an 8-byte reply to an ack-only request as the ack', () => {
    const c = checkMessage(h(R.SET_MEM_TABLE, 0x5, 8), new Uint8Array(8), 0);
    expect(c.decoded).toEqual({ kind: 'ack', value: 0n });
  });

  it('reads the postcopy SET_MEM_TABLE reply as a memory table', () => {
    const p = new Uint8Array(40);
    p[0] = 1;
    expect(checkMessage(h(R.SET_MEM_TABLE, 0x5, 40), p, 0).decoded?.kind).toBe('memoryTable');
  });

  it('reads a zero-length GET_CONFIG reply as the error answer', () => {
    expect(checkMessage(h(R.GET_CONFIG, 0x5, 0), new Uint8Array(0), 0).decoded).toEqual({ kind: 'none' });
  });

  it('wants the inflight fd with a GET_INFLIGHT_FD reply, and none with an ack', () => {
    expect(checkMessage(h(R.GET_INFLIGHT_FD, 0x5, 24), new Uint8Array(24), 0).error?.code).toBe('fd-count');
    expect(checkMessage(h(R.GET_INFLIGHT_FD, 0x5, 24), new Uint8Array(24), 1).error).toBeUndefined();
    expect(checkMessage(h(R.GET_INFLIGHT_FD, 0x5, 8), bytes('0100000000000000'), 0).decoded).toEqual({ kind: 'ack', value: 1n });
  });

  it('accepts SET_LOG_BASE with or without the log fd and its size-0 reply', () => {
    expect(checkMessage(h(R.SET_LOG_BASE, 0x1, 16), new Uint8Array(16), 1).error).toBeUndefined();
    expect(checkMessage(h(R.SET_LOG_BASE, 0x1, 16), new Uint8Array(16), 0).error).toBeUndefined();
    expect(checkMessage(h(R.SET_LOG_BASE, 0x5, 0), new Uint8Array(0), 0).decoded).toEqual({ kind: 'none' });
  });

  it('accepts a GET_VRING_BASE request whose reserved num is not zero (virtio-user sends garbage there)', () => {
    const c = checkMessage(h(R.GET_VRING_BASE, 0x1, 8), bytes('000000009e550000'), 0);
    expect(c.decoded).toEqual({ kind: 'vringState', index: 0, num: 0x559e });
  });

  it('reports checks in reader order: fd overflow before the request is even looked up', () => {
    expect(checkMessage(h(0, 0x1, 0), new Uint8Array(0), 9).error?.code).toBe('too-many-fds');
    expect(checkMessage(h(0, 0x1, 0), new Uint8Array(0), 0).error?.code).toBe('unknown-request');
    expect(checkMessage(h(R.SET_OWNER, 0x1, 0), new Uint8Array(0), 16, { maxFds: 16 }).error?.code).toBe('fd-count');
  });

  it('never gives a decoded payload together with an error', () => {
    const c = checkMessage(h(R.SET_VRING_CALL, 0x1, 8), new Uint8Array(8), 0);
    expect(c.error?.code).toBe('fd-count');
    expect(c.decoded).toBeUndefined();
    expect(c.spec?.name).toBe('SET_VRING_CALL');
  });
});

describe('reply shapes that share a size', () => {
  it('accepts a plain ack to SET_DEVICE_STATE_FD although its 8-byte result form would need an fd', () => {
    const ack = encode(makeAck({ request: R.SET_DEVICE_STATE_FD, flags: 0x9 }, false));
    const header = { request: R.SET_DEVICE_STATE_FD, flags: 0x5, size: 8 };
    const check = checkMessage(header, ack.bytes.subarray(12), 0);
    expect(check.error).toBeUndefined();
  });
});
