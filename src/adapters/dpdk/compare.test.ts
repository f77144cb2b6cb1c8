import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadScenario } from '../../sim/scenario.ts';
import { runScenario } from '../../sim/runner.ts';
import type { TraceRecord } from '../../sim/trace.ts';
import {
  compareObservations,
  formatComparison,
  markDetermined,
  observeModel,
  scaleTraffic,
  sessionsFromTrace,
  verdictsAgree,
  type RunObservation,
} from './compare.ts';

const plan = (f: string): string => fileURLToPath(new URL(`../../../models/testplans/pvp-reconnect-loopback/${f}`, import.meta.url));
const CASE01 = plan('case01-loopback-split-reconnect-from-vhost-user.json');
const CASE03 = plan('case03-loopback-split-reconnect-stability.json');

const state = (index: number, num: number): string =>
  [index, num].map((v) => [0, 8, 16, 24].map((s) => ((v >>> s) & 0xff).toString(16).padStart(2, '0')).join('')).join('');

describe('sessionsFromTrace', () => {
  const trace: TraceRecord[] = [
    { t: 0, event: 'session', n: 1 },
    { t: 0, dir: 'f2b', request: 3, flags: 1, size: 0, nfds: 0, payload: '' },
    { t: 0, dir: 'f2b', request: 10, flags: 1, size: 8, nfds: 0, payload: state(1, 0x8005) },
    { t: 1, event: 'closed', n: 1 },
    { t: 1, event: 'session', n: 2 },
    { t: 1, dir: 'f2b', request: 11, flags: 1, size: 8, nfds: 0, payload: state(0, 0) },
    { t: 1, dir: 'b2f', request: 11, flags: 5, size: 8, nfds: 0, payload: state(0, 0x8007) },
  ];

  it('numbers sessions, names requests, reads SET and GET_VRING_BASE (replies only)', () => {
    const s = sessionsFromTrace(trace, false);
    expect(s.map((x) => x.requests)).toEqual([['SET_OWNER', 'SET_VRING_BASE'], ['GET_VRING_BASE']]);
    expect(s[0]!.bases).toEqual([{ request: 'SET_VRING_BASE', vring: 1, value: 0x8005 }]);
    expect(s[1]!.bases).toEqual([{ request: 'GET_VRING_BASE', vring: 0, value: 0x8007 }]);
  });

  it('drops the wrap bit of a packed SET_VRING_BASE, as DPDK logs it', () => {
    expect(sessionsFromTrace(trace, true)[0]!.bases[0]!.value).toBe(5);
    // GET_VRING_BASE keeps it: DPDK logs the num it returns.
    expect(sessionsFromTrace(trace, true)[1]!.bases[0]!.value).toBe(0x8007);
  });
});

describe('scaleTraffic', () => {
  it('scales traffic steps inside repeats and leaves the rest', () => {
    const s = loadScenario(CASE03);
    const t = scaleTraffic(s, 0.5);
    const secs = (steps: typeof s.steps): number[] => steps.flatMap((x) => (x.op === 'traffic' ? [x.seconds] : x.op === 'repeat' ? secs(x.steps) : []));
    expect(secs(t.steps)).toEqual(secs(s.steps).map((x) => x * 0.5));
    expect(t.steps.length).toBe(s.steps.length);
  });
});

describe('observeModel and markDetermined on the loopback plan', () => {
  it('case 1: two sessions, every base predicted exactly', () => {
    const s = loadScenario(CASE01);
    const obs = markDetermined(observeModel(s, runScenario(s)), [0.5, 1.37].map((f) => observeModel(s, runScenario(scaleTraffic(s, f)))));
    expect(obs.sessions).toHaveLength(2);
    expect(obs.sessions[0]!.requests[0]).toBe('SET_OWNER');
    expect(obs.sessions[1]!.requests.slice(0, 4)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(obs.sessions.every((x) => x.requestsDetermined)).toBe(true);
    expect(obs.sessions.flatMap((x) => x.bases).every((b) => b.determined && b.value === 0)).toBe(true);
    expect(obs.traffic.map((t) => t.ok)).toEqual([true, true]);
    expect(obs.expects.map((e) => e.verdict)).toEqual(['holds', 'holds', 'holds']);
  });

  it('case 3: the TX base returned when virtio-user quits after traffic depends on the traffic', () => {
    const s = loadScenario(CASE03);
    const obs = markDetermined(observeModel(s, runScenario(s)), [0.5, 1.37].map((f) => observeModel(s, runScenario(scaleTraffic(s, f)))));
    const undetermined = obs.sessions.flatMap((x) => x.bases.filter((b) => !b.determined).map((b) => ({ n: x.n, ...b })));
    expect(undetermined.length).toBeGreaterThan(0);
    // Only answers of a back-end that saw traffic, on the ring the traffic used (TX, vring 1).
    expect(undetermined.every((b) => b.request === 'GET_VRING_BASE' && b.vring === 1)).toBe(true);
    expect(obs.sessions.every((x) => x.requestsDetermined)).toBe(true);
  });
});

function obs(side: 'model' | 'real', over: Partial<RunObservation> = {}): RunObservation {
  return {
    side,
    expects: [
      { step: 4, path: 'steps[4]', iteration: [], what: 'traffic-flows', verdict: 'holds', reason: 'r' },
      { step: 8, path: 'steps[8]', iteration: [], what: 'reconnected', verdict: 'holds', reason: 'r' },
    ],
    sessions: [
      { n: 1, requests: ['SET_OWNER', 'SET_VRING_BASE'], bases: [{ request: 'SET_VRING_BASE', vring: 0, value: 0, determined: true }], requestsDetermined: true },
      {
        n: 2,
        requests: ['GET_VRING_BASE', 'GET_VRING_BASE'],
        bases: [
          { request: 'GET_VRING_BASE', vring: 0, value: 0, determined: true },
          { request: 'GET_VRING_BASE', vring: 1, value: 64000, determined: false },
        ],
        requestsDetermined: true,
      },
    ],
    traffic: [{ step: 3, path: 'steps[3]', iteration: [], direction: 'virtio-user → vhost', sent: 64000, through: 64000, ok: true }],
    ...over,
  };
}

describe('compareObservations', () => {
  it('agrees on equal observations; packet counts and undetermined bases may differ', () => {
    const model = obs('model');
    const real = obs('real');
    real.traffic[0] = { ...real.traffic[0]!, sent: 3_000_000, through: 2_900_000 };
    real.sessions[1]!.bases[1] = { request: 'GET_VRING_BASE', vring: 1, value: 15104 };
    const c = compareObservations(model, real);
    expect(c.ok).toBe(true);
    expect(c.stateDependent).toBe(1);
    expect(c.rows.find((r) => r.kind === 'base' && r.agreement === 'state-dependent')!.label).toContain('GET_VRING_BASE vring 1');
    // Ordered by step: traffic (3), expect (4), expect (8).
    expect(c.rows.slice(0, 3).map((r) => r.kind)).toEqual(['traffic', 'expect', 'expect']);
  });

  it('fails on a determined base that differs', () => {
    const real = obs('real');
    real.sessions[1]!.bases[0] = { request: 'GET_VRING_BASE', vring: 0, value: 7 };
    const c = compareObservations(obs('model'), real);
    expect(c.ok).toBe(false);
    expect(c.rows.filter((r) => r.agreement === 'differ').map((r) => r.label)).toEqual(['session 2 GET_VRING_BASE vring 0']);
  });

  it('fails on a different request sequence, naming the first difference', () => {
    const real = obs('real');
    real.sessions[0]!.requests = ['SET_OWNER', 'GET_FEATURES'];
    const c = compareObservations(obs('model'), real);
    const row = c.rows.find((r) => r.kind === 'requests' && r.agreement === 'differ')!;
    expect(row.note).toBe('first difference at request 2: model SET_VRING_BASE, real GET_FEATURES');
    expect(c.ok).toBe(false);
  });

  it('reports a request sequence the model says depends on traffic without failing', () => {
    const model = obs('model');
    model.sessions[0]!.requestsDetermined = false;
    const real = obs('real');
    real.sessions[0]!.requests = ['SET_OWNER'];
    expect(compareObservations(model, real).ok).toBe(true);
  });

  it('fails on a missing or extra session', () => {
    expect(compareObservations(obs('model'), obs('real', { sessions: obs('real').sessions.slice(0, 1) })).ok).toBe(false);
    const extra = obs('real');
    extra.sessions.push({ n: 3, requests: [], bases: [] });
    expect(compareObservations(obs('model'), extra).ok).toBe(false);
  });

  it('fails when traffic flows on one side only', () => {
    const real = obs('real');
    real.traffic[0] = { ...real.traffic[0]!, through: 0, ok: false };
    expect(compareObservations(obs('model'), real).ok).toBe(false);
  });

  it('judges verdicts: a predicted failure agrees with a real failure; not-checked is reported, not failed', () => {
    expect(verdictsAgree('holds', 'holds')).toBe(true);
    expect(verdictsAgree('fails-as-modelled', 'violated')).toBe(true);
    expect(verdictsAgree('holds', 'violated')).toBe(false);
    expect(verdictsAgree('violated', 'violated')).toBe(false);
    const real = obs('real');
    real.expects[1] = { ...real.expects[1]!, verdict: 'not-checked', reason: 'n/a' };
    const c = compareObservations(obs('model'), real);
    expect(c.notChecked).toBe(1);
    expect(c.ok).toBe(true);
    const bad = obs('real');
    bad.expects[1] = { ...bad.expects[1]!, verdict: 'violated', reason: 'no new session' };
    expect(compareObservations(obs('model'), bad).ok).toBe(false);
    // An expect the real run never reached (it stopped early) differs.
    expect(compareObservations(obs('model'), obs('real', { expects: obs('real').expects.slice(0, 1) })).ok).toBe(false);
  });

  it('formats side by side with a summary line', () => {
    const lines = formatComparison('title', compareObservations(obs('model'), obs('real')));
    expect(lines[0]).toBe('title');
    expect(lines.some((l) => l.includes('session 1') && l.includes('2 requests, same'))).toBe(true);
    expect(lines[lines.length - 1]).toMatch(/0 differ → model and real agree$/);
  });
});
