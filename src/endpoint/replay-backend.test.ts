import { describe, expect, it } from 'vitest';
import { encode, makeRequest, FrontendRequest as R, type Payload } from '../protocol/index.ts';
import { traceMessageFromBytes, type TraceRecord } from '../sim/trace.ts';
import { replayAsBackend } from './replay-backend.ts';
import { summarizeReplay } from './replay-report.ts';

let t = 0;
function f2b(request: number, payload?: Payload, opts: { needReply?: boolean; nfds?: number } = {}): TraceRecord {
  const m = makeRequest(request, payload, { needReply: opts.needReply ?? false });
  const rec = traceMessageFromBytes((t += 0.001), 'f2b', encode(m, { validate: false }).bytes, 0);
  return { ...rec, nfds: opts.nfds ?? 0 };
}
function b2f(request: number, payloadHex: string, flags = 5): TraceRecord {
  return { t: (t += 0.001), dir: 'b2f', request, flags, size: payloadHex.length / 2, nfds: 0, payload: payloadHex };
}
const session = (n: number): TraceRecord => ({ t: (t += 0.001), event: 'session', n });
const closed = (n: number): TraceRecord => ({ t: (t += 0.001), event: 'closed', n });

describe('replayAsBackend', () => {
  it('a reply equal in request, flags, payload and fd count is a match', () => {
    const r = replayAsBackend([session(1), f2b(R.GET_FEATURES), b2f(R.GET_FEATURES, 'cbe7667c0d000000'), closed(1)]);
    expect(summarizeReplay(r)).toMatchObject({ match: 1, differs: 0 });
    expect(r.diverged).toBe(false);
    expect(r.as).toBe('backend');
    expect(r.profile).toBe('dpdk-22.11');
  });

  it('a different payload is "differs", with the field named', () => {
    const r = replayAsBackend([session(1), f2b(R.GET_FEATURES), b2f(R.GET_FEATURES, 'cbe7667c0d000001'), closed(1)]);
    expect(r.steps[0]).toMatchObject({ verdict: 'differs' });
    expect(r.steps[0]!.detail).toMatch(/payload/);
    expect(r.diverged).toBe(true);
  });

  it('a captured reply the model does not send is "missing"; a model reply the capture lacks is "extra"', () => {
    const miss = replayAsBackend([session(1), f2b(R.SET_OWNER), b2f(R.SET_OWNER, '0000000000000000'), closed(1)]);
    expect(miss.steps.map((s) => s.verdict)).toEqual(['missing']);
    const extra = replayAsBackend([session(1), f2b(R.GET_FEATURES), closed(1)]);
    expect(extra.steps.map((s) => s.verdict)).toEqual(['extra']);
  });

  it('after the model closed the connection, later captured replies are missing and say why', () => {
    const r = replayAsBackend([
      session(1),
      f2b(R.SET_FEATURES, { kind: 'features', features: 1n << 16n }),
      f2b(R.GET_FEATURES),
      b2f(R.GET_FEATURES, 'cbe7667c0d000000'),
      closed(1),
    ]);
    expect(r.steps[0]).toMatchObject({ verdict: 'missing' });
    expect(r.steps[0]!.detail).toMatch(/closed the connection/);
  });

  it('the GET_VRING_BASE of a ring that never ran must match exactly: no state-dependent excuse', () => {
    const r = replayAsBackend([session(1), f2b(R.GET_VRING_BASE, { kind: 'vringState', index: 0, num: 0 }), b2f(R.GET_VRING_BASE, '0000000005000000'), closed(1)]);
    expect(r.steps[0]!.verdict).toBe('differs');
  });

  it('each session gets a fresh device', () => {
    const r = replayAsBackend([
      session(1),
      f2b(R.SET_STATUS, { kind: 'status', status: 0xb }),
      f2b(R.GET_STATUS),
      b2f(R.GET_STATUS, '0b00000000000000'),
      closed(1),
      session(2),
      f2b(R.GET_STATUS),
      b2f(R.GET_STATUS, '0000000000000000'),
      closed(2),
    ]);
    expect(r.steps.map((s) => [s.session, s.verdict])).toEqual([
      [1, 'match'],
      [2, 'match'],
    ]);
  });
});
