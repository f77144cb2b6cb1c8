import { describe, expect, it } from 'vitest';
import { encode, makeRequest, FrontendRequest as R } from '../../protocol/index.ts';
import { DpdkMessageReader } from './reader.ts';
import { simHost } from './testing.ts';

const bytesOf = (request: number, payload?: Uint8Array, flags = 1) => encode({ request, flags, ...(payload ? { payload } : {}) }, { validate: false }).bytes;

describe("DPDK's message framing (read_vhost_message)", () => {
  it('reassembles messages from any chunking', () => {
    const r = new DpdkMessageReader();
    const all = new Uint8Array([...bytesOf(R.GET_FEATURES), ...bytesOf(R.SET_FEATURES, new Uint8Array(8).fill(1))]);
    for (const b of all) r.push(new Uint8Array([b]));
    const a = r.next();
    const b = r.next();
    expect(a?.kind === 'message' && a.message.header.request).toBe(1);
    expect(b?.kind === 'message' && b.message.payload).toEqual(new Uint8Array(8).fill(1));
    expect(r.next()).toBeUndefined();
  });

  it('does not check the version bits (flags 0 or 0x3 are read as any other message)', () => {
    const r = new DpdkMessageReader();
    r.push(bytesOf(R.GET_FEATURES, undefined, 0));
    r.push(bytesOf(R.GET_FEATURES, undefined, 3));
    expect(r.next()?.kind).toBe('message');
    expect(r.next()?.kind).toBe('message');
  });

  it('a size above 632 is fatal: "invalid msg size", then the read fails', () => {
    const r = new DpdkMessageReader();
    const h = new Uint8Array(12);
    new DataView(h.buffer).setUint32(0, 5, true);
    new DataView(h.buffer).setUint32(4, 1, true);
    new DataView(h.buffer).setUint32(8, 633, true);
    r.push(h);
    const res = r.next();
    expect(res?.kind).toBe('fatal');
    expect(res?.kind === 'fatal' && res.events.map((e) => e.text)).toEqual(['invalid msg size: 633', 'vhost read message for VHOST_USER_SET_MEM_TABLE failed']);
  });

  it('22.11.0 logs "vhost read message failed" without the request name', () => {
    const r = new DpdkMessageReader(632, 0);
    const h = new Uint8Array(12);
    new DataView(h.buffer).setUint32(8, 1000, true);
    r.push(h);
    const res = r.next();
    expect(res?.kind === 'fatal' && res.events[1]!.text).toBe('vhost read message failed');
  });

  it('peer close on a boundary is "vhost peer closed"; inside a header "Unexpected header size read"; inside a payload "read control message failed"', () => {
    const on = new DpdkMessageReader();
    expect(on.close().map((e) => e.text)).toEqual(['vhost peer closed']);
    const head = new DpdkMessageReader();
    head.push(bytesOf(R.GET_FEATURES).subarray(0, 5));
    expect(head.close().map((e) => e.text)).toEqual(['Unexpected header size read', 'vhost read message failed']);
    const pay = new DpdkMessageReader();
    pay.push(bytesOf(R.SET_FEATURES, new Uint8Array(8)).subarray(0, 15));
    expect(pay.close().map((e) => e.text)).toEqual(['read control message failed', 'vhost read message for VHOST_USER_SET_FEATURES failed']);
    // A header whose payload never started: read() returns 0, which DPDK takes for a close.
    const bare = new DpdkMessageReader();
    bare.push(bytesOf(R.SET_FEATURES, new Uint8Array(8)).subarray(0, 12));
    expect(bare.close().map((e) => e.text)).toEqual(['vhost peer closed']);
  });

  it('fds ride with the message whose bytes their chunk begins; leftover fds are closed at close', () => {
    const { ns } = simHost();
    const r = new DpdkMessageReader();
    const e1 = ns.eventfd();
    const e2 = ns.eventfd();
    const m = encode(makeRequest(R.SET_VRING_CALL, { kind: 'vringFile', index: 0, noFd: false }, { fds: [e1] })).bytes;
    r.push(m.subarray(0, 3), [e1]);
    r.push(m.subarray(3));
    r.push(m.subarray(0, 4), [e2]);
    const res = r.next();
    expect(res?.kind === 'message' && res.message.fds).toEqual([e1]);
    expect(r.next()).toBeUndefined();
    r.close();
    expect(e2.closed).toBe(true);
    expect(e1.closed).toBe(false);
  });
});
