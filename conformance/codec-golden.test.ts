/**
 * The codec against a real capture: DPDK 22.11 virtio-user (front-end, server=1) and the
 * DPDK 22.11 vhost PMD (back-end, client=1) — handshake, back-end quit and relaunch, second
 * handshake, front-end quit — recorded message by message with fd counts.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MessageDecoder, encode, expectedFdCount, isOpaqueKind, type DecodedMessage, type Payload } from '../src/protocol/index.ts';
import {
  checkTraceMessage,
  isMessageRecord,
  readTraceFile,
  requestSpaceOfRecord,
  traceMessageToBytes,
  type TraceMessageRecord,
} from '../src/sim/trace.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CAPTURE = resolve(repoRoot, '..', 'shared/reference/traces/dpdk22.11-virtio-user-vhost-split-reconnect.jsonl');

const records = readTraceFile(CAPTURE);
const messages = records.filter(isMessageRecord);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function decoded(r: TraceMessageRecord): Payload {
  const c = checkTraceMessage(r);
  if (!c.decoded) throw new Error(`t=${r.t}: ${c.error?.message}`);
  return c.decoded;
}
const at = (t: number) => {
  const r = messages.find((m) => m.t === t);
  if (!r) throw new Error(`no message at t=${t}`);
  return r;
};

describe('golden: DPDK 22.11 virtio-user ↔ vhost capture', () => {
  it('holds two sessions of messages', () => {
    expect(records.filter((r) => !isMessageRecord(r)).map((r) => ('event' in r ? `${r.event}${r.n}` : ''))).toEqual([
      'session1',
      'closed1',
      'session2',
      'closed2',
    ]);
    expect(messages.length).toBeGreaterThan(60);
  });

  it('every message decodes without error into a typed payload', () => {
    for (const r of messages) {
      const c = checkTraceMessage(r);
      expect(c.error, `t=${r.t}`).toBeUndefined();
      expect(c.decoded, `t=${r.t}`).toBeDefined();
      expect(isOpaqueKind(c.decoded!.kind), `t=${r.t}`).toBe(false);
    }
  });

  it('decodes the hand-checked fields', () => {
    expect(decoded(at(3.456713))).toEqual({ kind: 'features', features: 0xd7c66e7cbn }); // GET_FEATURES reply (testpmd net_vhost, tso=0)
    expect(decoded(at(3.456816))).toEqual({ kind: 'protocolFeatures', features: 0x10cbfn }); // DPDK 22.11 default
    expect(decoded(at(3.456843))).toEqual({ kind: 'protocolFeatures', features: 0x10009n }); // virtio-user: MQ|REPLY_ACK|STATUS
    expect(decoded(at(3.456976))).toEqual({ kind: 'features', features: 0x950008000n }); // SET_FEATURES
    expect(decoded(at(3.456991))).toEqual({ kind: 'status', status: 0x0b }); // SET_STATUS FEATURES_OK
    expect(at(3.456991).flags).toBe(0x9);
    expect(decoded(at(3.457192))).toEqual({ kind: 'ack', value: 0n }); // its ack
    expect(at(3.457192).flags).toBe(0x5);
    expect(decoded(at(3.476983))).toEqual({
      kind: 'memoryTable',
      regions: [{ guestPhysAddr: 0x100c3e000n, memorySize: 0x40000000n, userspaceAddr: 0x100c3e000n, mmapOffset: 0n }],
    });
    expect(decoded(at(6.519873))).toEqual({ kind: 'vringState', index: 0, num: 256 }); // SET_VRING_NUM
    expect(decoded(at(6.519923))).toEqual({ kind: 'vringAddr', index: 0, flags: 0, desc: 0x140be2000n, used: 0x140be4000n, avail: 0x140be3000n, log: 0n });
    expect(decoded(at(6.519967))).toEqual({ kind: 'vringFile', index: 0, noFd: false }); // SET_VRING_KICK
    expect(decoded(at(6.520082))).toEqual({ kind: 'status', status: 0x0f }); // DRIVER_OK
    expect(decoded(at(13.459081))).toEqual({ kind: 'vringState', index: 0, num: 0x559e }); // GET_VRING_BASE, reserved num left dirty
    expect(decoded(at(21.661365))).toEqual({ kind: 'vringState', index: 1, num: 0xc460 }); // last base of vring 1
  });

  it('every message re-encodes from its typed payload to identical bytes', () => {
    for (const r of messages) {
      const out = encode({ request: r.request, flags: r.flags, payload: decoded(r), fds: Array.from({ length: r.nfds }, (_, i) => i) }, { space: requestSpaceOfRecord(r) });
      expect(hex(out.bytes), `t=${r.t}`).toBe(hex(traceMessageToBytes(r)));
    }
  });

  it("every message carries exactly the fds the catalogue expects", () => {
    for (const r of messages) {
      const c = checkTraceMessage(r);
      expect(expectedFdCount(c.form!.fds, c.decoded), `t=${r.t} ${c.spec?.name}`).toEqual({ min: r.nfds, max: r.nfds });
    }
    const withFds = messages.filter((r) => r.nfds > 0).map((r) => checkTraceMessage(r).spec!.name);
    expect(new Set(withFds)).toEqual(new Set(['SET_VRING_CALL', 'SET_VRING_KICK', 'SET_MEM_TABLE']));
  });

  describe('as one byte stream', () => {
    // Each message's fds ride on a chunk that starts at its header, as a reader that reads
    // header-first (DPDK's read_fd_message) receives them.
    const wire = messages.map(traceMessageToBytes);
    const starts: number[] = [];
    let total = 0;
    for (const w of wire) {
      starts.push(total);
      total += w.length;
    }
    const stream = new Uint8Array(total);
    wire.forEach((w, i) => stream.set(w, starts[i]!));
    const fdsOf = (i: number) => Array.from({ length: messages[i]!.nfds }, (_, k) => `m${i}fd${k}`);

    function decodeChunked(cuts: readonly number[]): DecodedMessage<string>[] {
      const points = [...new Set([0, total, ...cuts, ...starts.filter((_, i) => messages[i]!.nfds > 0)])].sort((a, b) => a - b);
      const d = new MessageDecoder<string>();
      const out: DecodedMessage<string>[] = [];
      for (let k = 0; k + 1 < points.length; k++) {
        const from = points[k]!;
        const i = starts.indexOf(from);
        d.push(stream.subarray(from, points[k + 1]), i >= 0 ? fdsOf(i) : []);
        out.push(...d);
      }
      d.end();
      return out;
    }

    function expectSameAsCapture(got: DecodedMessage<string>[]) {
      expect(got.length).toBe(messages.length);
      got.forEach((m, i) => {
        const r = messages[i]!;
        expect(m.error).toBeUndefined();
        expect([m.header.request, m.header.flags, m.header.size, hex(m.payload)]).toEqual([r.request, r.flags, r.size, r.payload]);
        expect(m.fds).toEqual(fdsOf(i));
        expect(m.offset).toBe(starts[i]);
        expect(m.decoded).toEqual(decoded(r));
      });
    }

    it('cut only where fds begin, or a byte at a time, yields the capture', () => {
      expectSameAsCapture(decodeChunked([]));
      expectSameAsCapture(decodeChunked(Array.from({ length: total }, (_, i) => i)));
    });

    it('in any random chunking yields the capture', () => {
      fc.assert(
        fc.property(fc.uniqueArray(fc.integer({ min: 1, max: total - 1 }), { maxLength: 80 }), (cuts) => {
          expectSameAsCapture(decodeChunked(cuts));
        }),
        { numRuns: 200 },
      );
    });
  });
});
