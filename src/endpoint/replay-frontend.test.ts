import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { isMessageRecord, readTraceFile, type TraceMessageRecord, type TraceRecord } from '../sim/trace.ts';
import { FrontendRequest as FR } from '../protocol/index.ts';
import { compareFrontendMessage, replayAsFrontend } from './replay-frontend.ts';
import { summarizeReplay } from './replay-report.ts';

const CAPTURE = fileURLToPath(new URL('../../../shared/reference/traces/dpdk22.11-virtio-user-vhost-split-reconnect.jsonl', import.meta.url));
const have = existsSync(CAPTURE);

function rec(request: number, payload: string, extra: Partial<TraceMessageRecord> = {}): TraceMessageRecord {
  return { t: 0, dir: 'f2b', request, flags: 1, size: payload.length / 2, nfds: 0, payload, ...extra };
}

describe('compareFrontendMessage', () => {
  it('identical bytes match', () => {
    expect(compareFrontendMessage(rec(FR.SET_FEATURES, '0080005009000000'), rec(FR.SET_FEATURES, '0080005009000000'), { previousRequest: undefined }).verdict).toBe('match');
  });
  it('a different request, flags, fd count or profile-determined payload differs', () => {
    const ctx = { previousRequest: undefined };
    expect(compareFrontendMessage(rec(FR.SET_FEATURES, '0080005009000000'), rec(FR.SET_OWNER, ''), ctx).verdict).toBe('differs');
    expect(compareFrontendMessage(rec(FR.SET_STATUS, '0b00000000000000', { flags: 9 }), rec(FR.SET_STATUS, '0b00000000000000'), ctx).verdict).toBe('differs');
    expect(compareFrontendMessage(rec(FR.SET_VRING_CALL, '0000000000000000', { nfds: 1 }), rec(FR.SET_VRING_CALL, '0000000000000000'), ctx).verdict).toBe('differs');
    expect(compareFrontendMessage(rec(FR.SET_FEATURES, '0080005009000000'), rec(FR.SET_FEATURES, '0080000009000000'), ctx).verdict).toBe('differs');
    expect(compareFrontendMessage(rec(FR.SET_VRING_BASE, '0000000005000000'), rec(FR.SET_VRING_BASE, '0000000000000000'), ctx).verdict).toBe('differs');
  });
  it('ring addresses and the memory layout are state-dependent, the vring index and flags are not', () => {
    const ctx = { previousRequest: undefined };
    const a = '00000000000000000020be40010000000040be40010000000030be40010000000000000000000000';
    const b = '00000000000000000000c0000100000000a0c000010000000000c100010000000000000000000000';
    expect(compareFrontendMessage(rec(FR.SET_VRING_ADDR, a), rec(FR.SET_VRING_ADDR, b), ctx).verdict).toBe('state-dependent');
    const c = '01' + b.slice(2);
    expect(compareFrontendMessage(rec(FR.SET_VRING_ADDR, a), rec(FR.SET_VRING_ADDR, c), ctx).verdict).toBe('differs');
    const t1 = '010000000000000000e0c30001000000000000400000000000e0c300010000000000000000000000';
    const t2 = '01000000000000000000000000010000000000040000000000000000000100000000000000000000';
    expect(compareFrontendMessage(rec(FR.SET_MEM_TABLE, t1, { flags: 9, nfds: 1 }), rec(FR.SET_MEM_TABLE, t2, { flags: 9, nfds: 1 }), ctx).verdict).toBe('state-dependent');
  });
  it("GET_VRING_BASE: only the first request of a stop may carry other bytes in num (uninitialised stack)", () => {
    expect(compareFrontendMessage(rec(FR.GET_VRING_BASE, '000000009e550000'), rec(FR.GET_VRING_BASE, '0000000000000000'), { previousRequest: FR.SET_VRING_ENABLE }).verdict).toBe('state-dependent');
    expect(compareFrontendMessage(rec(FR.GET_VRING_BASE, '010000009e550000'), rec(FR.GET_VRING_BASE, '0100000000000000'), { previousRequest: FR.GET_VRING_BASE }).verdict).toBe('differs');
  });
});

describe.skipIf(!have)('replayAsFrontend on altered captures', () => {
  const base = have ? readTraceFile(CAPTURE) : [];

  function alter(fn: (rs: TraceRecord[]) => void): TraceRecord[] {
    const rs = base.map((r) => ({ ...r }));
    fn(rs);
    return rs;
  }

  it('a captured value the profile does not produce is reported as differs', () => {
    const rs = alter((rs) => {
      const i = rs.findIndex((r) => isMessageRecord(r) && r.request === FR.SET_FEATURES);
      (rs[i] as { payload: string }).payload = '0080005008000000';
    });
    const r = replayAsFrontend(rs);
    expect(r.diverged).toBe(true);
    expect(r.steps.filter((s) => s.verdict === 'differs').map((s) => s.actual?.request)).toEqual([FR.SET_FEATURES]);
  });

  it('a captured message the model never sends is missing', () => {
    const rs = alter((rs) => {
      const end = rs.length - 1;
      rs.splice(end, 0, { t: 21.6615, dir: 'f2b', request: FR.SET_OWNER, flags: 1, size: 0, nfds: 0, payload: '' });
    });
    const r = replayAsFrontend(rs);
    expect(summarizeReplay(r).missing).toBe(1);
    expect(r.diverged).toBe(true);
  });

  it('a message the capture lacks shows up as differs at its place, and the report diverges', () => {
    const rs = alter((rs) => {
      // Drop session 1's second GET_STATUS and its reply.
      const i = rs.findIndex((r, k) => k > 12 && isMessageRecord(r) && r.request === FR.GET_STATUS && r.dir === 'f2b');
      rs.splice(i, 2);
    });
    const r = replayAsFrontend(rs);
    expect(r.diverged).toBe(true);
    const first = r.steps.find((s) => s.verdict !== 'match' && s.verdict !== 'state-dependent')!;
    expect(first.actual?.request).toBe(FR.GET_STATUS);
  });
});
