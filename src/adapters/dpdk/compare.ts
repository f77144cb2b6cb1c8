/**
 * Model run vs real run of the same scenario: what each observed, in a common shape, and the
 * comparison `vhostsim validate` prints. Pure: no processes, no files.
 *
 * Observed on both sides:
 * - every `expect` with its verdict (by scenario path and repeat iteration);
 * - every vhost-user session (connection) in order: the front-end's request names as the
 *   back-end read them, and the ring bases (SET_VRING_BASE as sent, GET_VRING_BASE as answered);
 * - every `traffic` step: packets sent and received, and whether any got through.
 *
 * What the model predicts exactly and what depends on state it cannot know (how many packets
 * real testpmd moved, hence ring positions after traffic) is decided by the model itself:
 * `markDetermined` compares the model run with runs whose traffic steps last longer or
 * shorter. A value equal in all of them does not depend on the amount of traffic and must
 * match reality; one that changes is reported but never fails the comparison.
 */
import type { RunOutput } from '../../sim/runner.ts';
import { isMessageRecord, type TraceRecord } from '../../sim/trace.ts';
import { walkSteps, stepPath, type Scenario } from '../../sim/scenario.ts';
import { requestName } from './requests.ts';
import type { Verdict } from '../../sim/results.ts';

/** results.ts's verdicts (`not-checked`: a real run could not judge it). */
export type ObservedVerdict = Verdict;

export interface ObservedExpect {
  /** 0-based position of the step in the run (repeats unrolled), for ordering. */
  step?: number;
  path: string;
  iteration: number[];
  what: string;
  verdict: ObservedVerdict;
  reason: string;
}

export interface ObservedBase {
  request: 'SET_VRING_BASE' | 'GET_VRING_BASE';
  vring: number;
  /**
   * SET_VRING_BASE: split `num`; packed: the avail index without its wrap bit (DPDK's log
   * prints no wrap bits). GET_VRING_BASE: the `num` returned, as is.
   */
  value: number;
  /** Whether the model predicts this value exactly (see `markDetermined`); real: undefined. */
  determined?: boolean;
}

export interface ObservedSession {
  /** 1-based over the run, in connection order. */
  n: number;
  /** Request names the back-end read (`SET_OWNER`, `GET_FEATURES`, …). */
  requests: string[];
  bases: ObservedBase[];
  /** The back-end reached ready ("virtio is now ready for processing"). */
  ready?: boolean;
  /** Where it came from, for people: the step that opened it on a real run, and its position. */
  openedBy?: string;
  step?: number;
  /** Model: the request sequence does not depend on the amount of traffic. */
  requestsDetermined?: boolean;
}

export interface ObservedTraffic {
  step?: number;
  path: string;
  iteration: number[];
  /** `virtio-user → vhost` for loopback. */
  direction: string;
  sent: number;
  through: number;
  /** Packets got through; undefined when the run does not say (no traffic-flows check after the step). */
  ok: boolean | undefined;
}

export interface RunObservation {
  side: 'model' | 'real';
  expects: ObservedExpect[];
  sessions: ObservedSession[];
  traffic: ObservedTraffic[];
}

// ---- the model side ---------------------------------------------------------------------------

const GET_VRING_BASE = 11;
const SET_VRING_BASE = 10;
const FLAG_REPLY = 0x4;

function u32At(hex: string, byte: number): number | undefined {
  if (hex.length < (byte + 4) * 2) return undefined;
  let v = 0;
  for (let i = 3; i >= 0; i--) v = v * 256 + parseInt(hex.slice((byte + i) * 2, (byte + i) * 2 + 2), 16);
  return v;
}

/**
 * Sessions from a model trace. Records do not say which connection a message belongs to; with
 * one front-end (the topologies the real side runs) it is the one opened last.
 */
export function sessionsFromTrace(trace: readonly TraceRecord[], packed: boolean): ObservedSession[] {
  const out: ObservedSession[] = [];
  let cur: ObservedSession | undefined;
  for (const r of trace) {
    if (!isMessageRecord(r)) {
      if (r.event === 'session') {
        cur = { n: out.length + 1, requests: [], bases: [] };
        out.push(cur);
      }
      continue;
    }
    if (!cur) continue;
    const reply = (r.flags & FLAG_REPLY) !== 0;
    if (r.dir === 'f2b' && !reply) {
      cur.requests.push(requestName(r.request) ?? `REQUEST_${r.request}`);
      if (r.request === SET_VRING_BASE) {
        const vring = u32At(r.payload, 0);
        const num = u32At(r.payload, 4);
        if (vring !== undefined && num !== undefined) cur.bases.push({ request: 'SET_VRING_BASE', vring, value: packed ? num & 0x7fff : num });
      }
    } else if (r.dir === 'b2f' && reply && r.request === GET_VRING_BASE) {
      const vring = u32At(r.payload, 0);
      const num = u32At(r.payload, 4);
      if (vring !== undefined && num !== undefined) cur.bases.push({ request: 'GET_VRING_BASE', vring, value: num });
    }
  }
  return out;
}

/** Traffic steps of the scenario, in execution order, with their path and iteration. */
export function trafficSteps(s: Scenario): { step: number; path: string; iteration: number[] }[] {
  return [...walkSteps(s.steps)].map((w, step) => ({ w, step })).filter(({ w }) => w.step.op === 'traffic').map(({ w, step }) => ({ step, path: stepPath(w.indices), iteration: w.iteration }));
}

/** Position of each expect step in the run, by path and iteration. */
function expectSteps(s: Scenario): Map<string, number> {
  const m = new Map<string, number>();
  [...walkSteps(s.steps)].forEach((w, i) => {
    if (w.step.op === 'expect') m.set(`${stepPath(w.indices)}|${w.iteration.join('.')}`, i);
  });
  return m;
}

/**
 * What a model run observed. Per-step traffic counts come from `perTraffic` when the runner
 * gives them; otherwise from the `traffic-flows` expects' evidence (sent / through of the last
 * traffic step), which is all results.ts carries.
 */
export function observeModel(s: Scenario, out: RunOutput): RunObservation {
  const pos = expectSteps(s);
  const expects: ObservedExpect[] = out.result.expects.map((e) => ({ step: pos.get(`${e.path}|${e.iteration.join('.')}`), path: e.path, iteration: e.iteration, what: e.what, verdict: e.verdict, reason: e.reason }));
  const sessions = sessionsFromTrace(out.trace, s.ring === 'packed');
  const steps = trafficSteps(s);
  // Each traffic-flows expect judges the traffic step before it: attach its evidence there.
  const traffic: ObservedTraffic[] = steps.map((t) => ({ ...t, direction: direction(s), sent: 0, through: 0, ok: undefined }));
  let ti = -1;
  for (const w of walkSteps(s.steps)) {
    if (w.step.op === 'traffic') ti++;
    if (w.step.op === 'expect' && w.step.what === 'traffic-flows' && ti >= 0) {
      const path = stepPath(w.indices);
      const e = out.result.expects.find((x) => x.path === path && sameIter(x.iteration, w.iteration));
      const ev = e?.evidence as { sent?: number; through?: number } | undefined;
      if (ev && typeof ev.through === 'number') traffic[ti] = { ...traffic[ti]!, sent: ev.sent ?? 0, through: ev.through, ok: ev.through > 0 };
    }
  }
  return { side: 'model', expects, sessions, traffic };
}

export function direction(s: Scenario): string {
  return s.topology === 'loopback' ? 'virtio-user → vhost' : s.topology === 'pvp' ? 'generator → VM → generator' : 'vm → vm';
}

const sameIter = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** The scenario with every traffic step's seconds scaled: the same steps, a different amount of traffic. */
export function scaleTraffic(s: Scenario, factor: number): Scenario {
  const scale = (steps: Scenario['steps']): Scenario['steps'] =>
    steps.map((st) => (st.op === 'traffic' ? { ...st, seconds: st.seconds * factor } : st.op === 'repeat' ? { ...st, steps: scale(st.steps) } : st));
  return { ...s, steps: scale(s.steps) };
}

/**
 * Marks what the model predicts exactly: a session's request sequence and each ring base are
 * determined when every variant run (other amounts of traffic) shows the same. Mutates and
 * returns `primary`.
 */
export function markDetermined(primary: RunObservation, variants: readonly RunObservation[]): RunObservation {
  primary.sessions.forEach((sess, k) => {
    const others = variants.map((v) => v.sessions[k]);
    sess.requestsDetermined = others.every((o) => o !== undefined && o.requests.join(' ') === sess.requests.join(' '));
    sess.bases.forEach((b, j) => {
      b.determined = others.every((o) => {
        const ob = o?.bases[j];
        return ob !== undefined && ob.request === b.request && ob.vring === b.vring && ob.value === b.value;
      });
    });
  });
  return primary;
}

// ---- the comparison ---------------------------------------------------------------------------

export type Agreement =
  /** Same, and the model predicts it. */
  | 'agree'
  /** Differs where the model says the value depends on state (reported, not a failure). */
  | 'state-dependent'
  /** Not compared (a real run could not judge it). */
  | 'not-checked'
  /** Differs where the model predicted it: a failure. */
  | 'differ';

export interface CompareRow {
  /** Position of the step it belongs to (sessions: the step that opened them), for ordering. */
  step?: number;
  /** `expect`, `traffic`, `session`, `requests`, `base`. */
  kind: 'expect' | 'traffic' | 'session' | 'requests' | 'base';
  /** What it is about: `steps[8] reconnected`, `session 2`, `session 2 GET_VRING_BASE vring 1 (#2)`. */
  label: string;
  model: string;
  real: string;
  agreement: Agreement;
  note?: string;
}

export interface Comparison {
  rows: CompareRow[];
  differ: number;
  stateDependent: number;
  notChecked: number;
  agree: number;
  /** True when nothing differs where the model made a prediction. */
  ok: boolean;
}

const iterLabel = (it: readonly number[]): string => (it.length ? ` #${it.map((k) => k + 1).join('.')}` : '');
const failed = (v: ObservedVerdict): boolean => v === 'fails-as-modelled' || v === 'violated';

/** Model and real verdicts agree when both hold, or both fail (the model predicting a failure is `fails-as-modelled`). */
export function verdictsAgree(model: ObservedVerdict, real: ObservedVerdict): boolean {
  if (model === 'violated') return false; // a model bug never agrees with anything
  return model === real || (failed(model) && failed(real));
}

export function compareObservations(model: RunObservation, real: RunObservation): Comparison {
  const rows: CompareRow[] = [];

  // Expects, matched by path and iteration.
  for (const m of model.expects) {
    const label = `${m.path}${iterLabel(m.iteration)} ${m.what}`;
    const r = real.expects.find((x) => x.path === m.path && sameIter(x.iteration, m.iteration));
    if (!r) {
      rows.push({ step: m.step, kind: 'expect', label, model: m.verdict, real: '(missing)', agreement: 'differ', note: 'the real run did not get to this step' });
      continue;
    }
    const agreement: Agreement = r.verdict === 'not-checked' || m.verdict === 'not-checked' ? 'not-checked' : verdictsAgree(m.verdict, r.verdict) ? 'agree' : 'differ';
    rows.push({ step: m.step ?? r.step, kind: 'expect', label, model: m.verdict, real: r.verdict, agreement, ...(agreement !== 'agree' ? { note: `real: ${r.reason}` } : {}) });
  }
  for (const r of real.expects) {
    if (!model.expects.some((m) => m.path === r.path && sameIter(m.iteration, r.iteration))) {
      rows.push({ step: r.step, kind: 'expect', label: `${r.path}${iterLabel(r.iteration)} ${r.what}`, model: '(missing)', real: r.verdict, agreement: 'differ' });
    }
  }

  // Traffic: whether packets got through is predicted; how many is not (real rates differ).
  const nT = Math.max(model.traffic.length, real.traffic.length);
  for (let i = 0; i < nT; i++) {
    const m = model.traffic[i];
    const r = real.traffic[i];
    const label = `${(m ?? r)!.path}${iterLabel((m ?? r)!.iteration)} traffic ${(m ?? r)!.direction}`;
    const show = (t: ObservedTraffic | undefined): string => (t ? (t.ok === undefined ? 'not counted' : `${t.ok ? 'ok' : 'none'}, ${t.through}/${t.sent} through`) : '(missing)');
    const agreement: Agreement = !m || !r ? 'differ' : m.ok === undefined || r.ok === undefined ? 'not-checked' : m.ok === r.ok ? 'agree' : 'differ';
    rows.push({ step: m?.step ?? r?.step, kind: 'traffic', label, model: show(m), real: show(r), agreement, ...(agreement === 'agree' ? { note: 'packet counts depend on real rates: not compared' } : {}) });
  }

  // Sessions: count, request sequences, ring bases.
  const nS = Math.max(model.sessions.length, real.sessions.length);
  let sessionStep: number | undefined;
  for (let k = 0; k < nS; k++) {
    const m = model.sessions[k];
    const r = real.sessions[k];
    sessionStep = r?.step ?? m?.step ?? sessionStep;
    const step = sessionStep;
    const label = `session ${k + 1}${r?.openedBy ? ` (${r.openedBy})` : ''}`;
    if (!m || !r) {
      rows.push({ step, kind: 'session', label, model: m ? `${m.requests.length} requests` : '(none)', real: r ? `${r.requests.length} requests` : '(none)', agreement: 'differ', note: m ? 'the real back-end saw no such connection' : 'a connection the model did not make' });
      continue;
    }
    const same = m.requests.join(' ') === r.requests.join(' ');
    const predicted = m.requestsDetermined ?? true;
    rows.push({
      step,
      kind: 'requests',
      label,
      model: m.requests.join(' '),
      real: r.requests.join(' '),
      agreement: same ? 'agree' : predicted ? 'differ' : 'state-dependent',
      ...(!same ? { note: firstDifference(m.requests, r.requests) } : {}),
    });
    const nB = Math.max(m.bases.length, r.bases.length);
    const seen = new Map<string, number>();
    for (let j = 0; j < nB; j++) {
      const mb = m.bases[j];
      const rb = r.bases[j];
      const key = `${(mb ?? rb)!.request} vring ${(mb ?? rb)!.vring}`;
      const nth = (seen.get(key) ?? 0) + 1;
      seen.set(key, nth);
      const show = (b: ObservedBase | undefined): string => (b ? `${b.request.slice(0, 3)} ${b.vring}:${b.value}` : '(none)');
      const determined = mb?.determined ?? true;
      const same = mb !== undefined && rb !== undefined && mb.request === rb.request && mb.vring === rb.vring && mb.value === rb.value;
      const shape = mb !== undefined && rb !== undefined && mb.request === rb.request && mb.vring === rb.vring;
      const agreement: Agreement = same ? 'agree' : shape && !determined ? 'state-dependent' : 'differ';
      rows.push({
        step,
        kind: 'base',
        label: `session ${k + 1} ${key}${nth > 1 ? ` (#${nth})` : ''}`,
        model: show(mb),
        real: show(rb),
        agreement,
        ...(agreement === 'state-dependent' ? { note: 'the model says this position depends on how much traffic ran' } : {}),
      });
    }
  }

  // Step order; within a step: expects and traffic first, then the sessions it opened. Stable sort.
  const KIND_ORDER = { traffic: 0, expect: 1, session: 2, requests: 2, base: 2 } as const;
  rows.sort((a, b) => (a.step ?? Infinity) - (b.step ?? Infinity) || KIND_ORDER[a.kind] - KIND_ORDER[b.kind]);
  const count = (a: Agreement): number => rows.filter((r) => r.agreement === a).length;
  const differ = count('differ');
  return { rows, differ, stateDependent: count('state-dependent'), notChecked: count('not-checked'), agree: count('agree'), ok: differ === 0 };
}

function firstDifference(a: readonly string[], b: readonly string[]): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return `first difference at request ${i + 1}: model ${a[i] ?? '(end)'}, real ${b[i] ?? '(end)'}`;
}

const MARK: Record<Agreement, string> = { agree: '=', 'state-dependent': '~', 'not-checked': '?', differ: '≠' };

/** Side-by-side text: one line per row, `=` agree, `~` state-dependent, `?` not checked, `≠` differ. */
export function formatComparison(title: string, c: Comparison): string[] {
  const lines = [title];
  const short = (s: string, n: number): string => (s.length > n ? s.slice(0, n - 1) + '…' : s);
  const width = Math.min(64, Math.max(20, ...c.rows.filter((r) => r.kind !== 'requests').map((r) => r.label.length)));
  for (const r of c.rows) {
    if (r.kind === 'requests') {
      // Long sequences on their own lines, so both read in full.
      const same = r.agreement === 'agree';
      lines.push(`  ${MARK[r.agreement]} ${r.label}: ${same ? `${r.model.split(' ').length} requests, same` : 'requests differ'}`);
      if (!same) {
        lines.push(`      model: ${r.model}`);
        lines.push(`      real:  ${r.real}`);
      } else lines.push(`      ${r.model}`);
      if (r.note) lines.push(`      ${r.note}`);
      continue;
    }
    lines.push(`  ${MARK[r.agreement]} ${r.label.padEnd(width)} model ${short(r.model, 30).padEnd(30)} real ${short(r.real, 30)}${r.note && r.agreement !== 'agree' ? `  (${r.note})` : ''}`);
  }
  lines.push(`  ${c.agree} agree, ${c.stateDependent} state-dependent, ${c.notChecked} not checked, ${c.differ} differ → ${c.ok ? 'model and real agree' : 'DISAGREE'}`);
  return lines;
}
