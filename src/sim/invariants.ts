/**
 * The checks of a run (DESIGN.md "Invariants and properties"), in two separate groups:
 *
 * - model invariants (`checkModelInvariants`): a violation is a vhostsim bug — memory safety
 *   (no RingError / GuestMemoryError escaping model code as a crash), every wire message
 *   well-formed per the codec, the trace complete (sessions open and close in pairs), and
 *   determinism (same seed ⇒ same trace; checked when the runner replays the run);
 * - protocol properties (`checkProtocolProperties`): findings about the modelled real versions.
 *   Each verdict carries evidence; a failure the reference model (models/session.ts) predicts
 *   for a modelled profile is `fails-as-modelled` with its mechanism; one it does not predict is
 *   `violated`.
 */
import { allowedLoss, expectedResumeIndex, type RingPos } from '../../models/session.ts';
import { RingError } from '../ring/errors.ts';
import { GuestMemoryError } from '../memory/index.ts';
import type { InvariantResult, Mechanism, PropertyResult, Verdict } from './results.ts';
import type { Scenario } from './scenario.ts';
import { checkTraceMessage, isMessageRecord, type TraceRecord } from './trace.ts';
import type { Observations, RingResume } from './topology.ts';

const hex = (n: bigint): string => `0x${n.toString(16)}`;
const fmtPos = (p: RingPos): string => (p.wrap === undefined ? `${p.idx}` : `${p.idx}/wrap ${p.wrap ? 1 : 0}`);
const samePos = (a: RingPos, b: RingPos): boolean => a.idx === b.idx && (a.wrap ?? true) === (b.wrap ?? true);
const packedBase = (p: RingPos): number => (p.idx & 0x7fff) | (p.wrap === false ? 0 : 0x8000);

export interface EscapedError {
  t: number;
  where: string;
  error: unknown;
}

/** Is this a memory-safety failure (ring or guest-memory error escaping as a crash)? */
export function isMemoryFault(e: unknown): boolean {
  let cur: unknown = e;
  for (let k = 0; k < 5 && cur !== undefined && cur !== null; k++) {
    if (cur instanceof RingError || cur instanceof GuestMemoryError) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

export function checkModelInvariants(input: {
  trace: readonly TraceRecord[];
  escaped: readonly EscapedError[];
  /** undefined: determinism not checked in this run. */
  determinism?: { same: boolean; hashA: string; hashB: string };
}): InvariantResult[] {
  const out: InvariantResult[] = [];
  const mem = input.escaped.find((e) => isMemoryFault(e.error));
  out.push(
    mem
      ? { name: 'memory-safety', verdict: 'violated', checks: 1, firstViolation: { t: mem.t, event: mem.where, reason: `${(mem.error as Error).message ?? String(mem.error)} escaped model code` } }
      : { name: 'memory-safety', verdict: 'holds', checks: 1 },
  );
  let checks = 0;
  let bad: InvariantResult['firstViolation'];
  input.trace.forEach((r, i) => {
    if (!isMessageRecord(r)) return;
    checks++;
    if (bad) return;
    const c = checkTraceMessage(r);
    if (c.error) bad = { t: r.t, event: `${r.dir} request ${r.request}`, traceLine: i + 1, reason: c.error.message };
  });
  out.push(bad ? { name: 'well-formed-messages', verdict: 'violated', checks, firstViolation: bad } : { name: 'well-formed-messages', verdict: 'holds', checks });
  // Sessions open and close in pairs, numbered 1, 2, … with no message outside an open session.
  const open = new Set<number>();
  let next = 1;
  let tbad: InvariantResult['firstViolation'];
  let tchecks = 0;
  input.trace.forEach((r, i) => {
    tchecks++;
    if (tbad) return;
    if (isMessageRecord(r)) {
      if (open.size === 0) tbad = { t: r.t, event: `${r.dir} request ${r.request}`, traceLine: i + 1, reason: 'a message outside any open session' };
    } else if (r.event === 'session') {
      if (r.n !== next) tbad = { t: r.t, event: `session ${r.n}`, traceLine: i + 1, reason: `session ${r.n} opened, expected ${next}` };
      open.add(r.n);
      next++;
    } else if (r.event === 'closed') {
      if (!open.delete(r.n)) tbad = { t: r.t, event: `closed ${r.n}`, traceLine: i + 1, reason: `session ${r.n} closed but not open` };
    }
  });
  // Any other error escaping model code aborted the run: what followed was never traced.
  const other = input.escaped.find((e) => !isMemoryFault(e.error));
  if (other && !tbad) tbad = { t: other.t, event: other.where, reason: `the run aborted (${other.error instanceof Error ? other.error.message : String(other.error)}): the trace stops there` };
  out.push(tbad ? { name: 'trace-complete', verdict: 'violated', checks: tchecks, firstViolation: tbad } : { name: 'trace-complete', verdict: 'holds', checks: tchecks });
  const d = input.determinism;
  if (d === undefined) out.push({ name: 'deterministic', verdict: 'holds', checks: 0 });
  else if (d.same) out.push({ name: 'deterministic', verdict: 'holds', checks: 1 });
  else out.push({ name: 'deterministic', verdict: 'violated', checks: 1, firstViolation: { t: 0, event: 'replay', reason: `same seed gave different traces (sha256 ${d.hashA.slice(0, 12)} vs ${d.hashB.slice(0, 12)})` } });
  return out;
}

/** How one resume compares with the old back-end's end and with the reference model. */
export interface ResumeVerdict {
  resume: RingResume;
  verdict: Verdict;
  reason: string;
  mechanism?: Mechanism;
}

export function judgeResume(s: Scenario, r: RingResume): ResumeVerdict {
  const e = r.after;
  if (!e) return { resume: r, verdict: 'holds', reason: 'first connection: the ring starts fresh' };
  const ring = s.ring;
  if (e.end === 'device-reset') {
    const start = ring === 'split' ? { idx: 0 } : { idx: 0, wrap: true };
    const ok = samePos(r.avail, start);
    return ok
      ? { resume: r, verdict: 'holds', reason: `vm${r.vm} vring ${r.vring}: guest reset, ring restarts at ${fmtPos(start)}` }
      : { resume: r, verdict: 'violated', reason: `vm${r.vm} vring ${r.vring}: after a guest reset the back-end resumed at ${fmtPos(r.avail)}, expected ${fmtPos(start)}` };
  }
  const profile = s.frontend;
  const exp = expectedResumeIndex(profile, ring, { end: 'backend-lost', size: s.queueSize, lastAvail: e.lastAvail, used: e.used, ...(e.frontendBase ? { frontendBase: e.frontendBase } : {}) });
  const matchesModel = samePos(r.avail, exp.avail);
  // "Survives": the new back-end continues where the old one was (nothing skipped, nothing re-consumed).
  const survived = ring === 'split' ? r.avail.idx === e.used.idx && e.lastAvail.idx === e.used.idx : samePos(r.avail, e.lastAvail) && samePos(e.used, e.lastAvail);
  const where = `vm${r.vm} vring ${r.vring}`;
  if (survived) return { resume: r, verdict: 'holds', reason: `${where}: resumed at ${fmtPos(r.avail)}, where the old back-end stopped` };
  if (!matchesModel) {
    return { resume: r, verdict: 'violated', reason: `${where}: resumed at ${fmtPos(r.avail)}; the old back-end stopped at ${fmtPos(e.lastAvail)} and the reference model expects ${fmtPos(exp.avail)} (${exp.ref})` };
  }
  if (exp.exact) return { resume: r, verdict: 'holds', reason: `${where}: resumed at ${fmtPos(r.avail)} as the reference model says` };
  const mechanism: Mechanism = {
    summary:
      ring === 'packed' && profile === 'virtio-user-22.11'
        ? `virtio-user 22.11 resets packed queues on reconnect ("Packets on the fly will be dropped"): the ring restarts at ${fmtPos(exp.avail)} and the ${exp.dropped ?? '?'} buffers in flight at ${fmtPos(e.used)}..${fmtPos(e.lastAvail)} are dropped`
        : ring === 'packed'
        ? `QEMU 7.2 could not read the packed ring state back from the lost back-end (GET_VRING_BASE fails on a closed socket) and sent the stale base it held (${fmtPos(exp.avail)}); DPDK 22.11 takes avail and used from it, but the old back-end had reached ${fmtPos(e.lastAvail)}`
        : `split resume at used->idx ${e.used.idx} re-consumes ${exp.replayed ?? '?'} buffers popped but not used by the old back-end`,
    profile,
    lostState: [ring === 'packed' && profile === 'virtio-user-22.11' ? `in-flight buffers (packed, vring ${r.vring}, ring reset)` : ring === 'packed' ? `last_avail_idx/avail_wrap_counter (packed, vring ${r.vring}) = ${fmtPos(e.lastAvail)}` : `in-flight buffers (split, vring ${r.vring})`],
    messages: [{ dir: 'f2b', request: 'SET_VRING_BASE', vring: r.vring, field: 'num', value: ring === 'packed' ? packedBase(exp.avail) : exp.base, connection: r.connection, at: { t: r.t, event: `vm${r.vm} connection ${r.connection}` } }],
    reference: `facts ${exp.ref}`,
  };
  return { resume: r, verdict: 'fails-as-modelled', reason: `${where}: resumed at ${fmtPos(r.avail)} instead of ${fmtPos(e.lastAvail)}`, mechanism };
}

export interface TrafficRecord {
  t: number;
  /** Distinct packets that came back (PVP) / segments delivered (VM2VM). */
  through: number;
  sent: number;
  duplicates: number;
  lost: number;
  flowed: boolean;
  /** Loss explained by counted drops (ring full, backend down, guest not ready). */
  attributed: number;
  /** Per VM: did the VM's ports move packets. */
  perVm: boolean[];
  /**
   * PVP: packets that came back, and drops counted, between the previous traffic step's end and
   * this one's start (held in a ring across a restart, they move while the next process starts).
   */
  between?: { through: number; attributed: number };
  reason: string;
}

/**
 * Packets lost beyond counted drops. PVP sums over the whole run: a packet held in a ring across
 * a back-end restart is sent in one traffic step and comes back in the next, so per-step
 * differences would count it lost in the first and clip the surplus of the second.
 */
export function unattributedLoss(s: Scenario, traffic: readonly TrafficRecord[]): number {
  if (s.topology === 'pvp') return Math.max(0, traffic.reduce((n, t) => n + t.sent - t.through - t.attributed - (t.between?.through ?? 0) - (t.between?.attributed ?? 0), 0));
  return traffic.reduce((n, t) => n + Math.max(0, t.lost - t.attributed), 0);
}

export interface LivenessRecord {
  /** What restarted: `backend`, `vm0` … */
  what: string;
  /** The VM restarted (undefined: the back-end, which all VMs share). */
  vm?: number;
  faultAt: number;
  readyAt: number | undefined;
  /** Did the next traffic step after it flow. */
  trafficResumed: boolean | undefined;
}

export function checkProtocolProperties(s: Scenario, input: { obs: Observations; traffic: readonly TrafficRecord[]; liveness: readonly LivenessRecord[]; readyBound: number }): { properties: PropertyResult[]; resumes: ResumeVerdict[] } {
  const { obs } = input;
  const props: PropertyResult[] = [];
  const resumes = obs.resumes.map((r) => judgeResume(s, r));
  const firstBad = (vs: ResumeVerdict[], v: Verdict) => vs.find((x) => x.verdict === v);

  // ring well-formed: the device never met a malformed chain (what it would have to consume was published and valid).
  const re = obs.ringErrors[0];
  const modelledMismatch = firstBad(resumes, 'fails-as-modelled');
  if (!re) props.push({ name: 'ring-well-formed', verdict: 'holds', checks: obs.resumes.length + input.traffic.length, reason: 'no malformed chain met by any back-end' });
  else {
    const explained = modelledMismatch && modelledMismatch.resume.t <= re.t && modelledMismatch.resume.vm === re.vm;
    props.push({
      name: 'ring-well-formed',
      verdict: explained ? 'fails-as-modelled' : 'violated',
      checks: obs.resumes.length + input.traffic.length,
      reason: `vm${re.vm} vring ${re.vring}: ${re.message}`,
      evidence: { ringErrors: obs.ringErrors.length },
      ...(explained ? { mechanism: modelledMismatch.mechanism! } : {}),
      firstFailure: { t: re.t, event: `pop vring ${re.vring}` },
    });
  }

  // duplicates and loss, against what the protocol allows for the in-flight counts at each crash.
  const crash = obs.detachReports.filter((d) => !d.graceful);
  const crashTx = crash.filter((d) => d.direction === 'guest-tx').reduce((n, d) => n + d.packetsInFlight, 0);
  const rxIn = crash.filter((d) => !(d.direction === 'guest-tx')).reduce((n, d) => n + d.buffersInFlight, 0);
  // virtio-user packed: every reconnect rebuilds the rings and drops what the driver had in
  // flight. On a TX ring (odd vring) those are packets, popped by a crashed back-end or not yet
  // popped at all, so the reset count covers the crash count; RX rings drop empty buffers.
  const resetTx = obs.ringResets.filter((x) => x.vring % 2 === 1).reduce((n, x) => n + x.dropped, 0);
  const txIn = s.frontend === 'virtio-user-22.11' && s.ring === 'packed' ? Math.max(crashTx, resetTx) : crashTx;
  const allowed = allowedLoss(s.frontend, s.ring, { tx: txIn, rx: rxIn });
  const dups = input.traffic.reduce((n, t) => n + t.duplicates, 0);
  const lost = unattributedLoss(s, input.traffic);
  const dupOk = allowed.duplicates === null ? dups === 0 : dups <= allowed.duplicates;
  const evidence = { duplicates: dups, unattributedLoss: lost, inFlightAtCrash: { tx: crashTx, rx: rxIn }, ...(obs.ringResets.length > 0 ? { droppedByRingReset: { tx: resetTx, rx: obs.ringResets.reduce((n, x) => n + x.dropped, 0) - resetTx } } : {}), allowed: { duplicates: allowed.duplicates, lost: allowed.lost } };
  const lossMechanism = (what: string): Mechanism | undefined =>
    modelledMismatch?.mechanism ? { ...modelledMismatch.mechanism, summary: `${what}: ${modelledMismatch.mechanism.summary}` } : undefined;
  if (dupOk) props.push({ name: 'no-duplicate-delivery', verdict: 'holds', checks: input.traffic.length, reason: `${dups} duplicates (allowed ${allowed.duplicates ?? 'unbounded'})`, evidence });
  else {
    const m = lossMechanism('duplicates after a resume at a stale position');
    props.push({ name: 'no-duplicate-delivery', verdict: m ? 'fails-as-modelled' : 'violated', checks: input.traffic.length, reason: `${dups} duplicates, allowed ${allowed.duplicates ?? 0} (${allowed.mechanism})`, evidence, ...(m ? { mechanism: m } : {}) });
  }
  const lossOk = allowed.lost === null ? lost === 0 : lost <= allowed.lost;
  if (lossOk) props.push({ name: 'bounded-loss', verdict: 'holds', checks: input.traffic.length, reason: `${lost} packets lost beyond counted drops (allowed ${allowed.lost ?? 'unbounded'})`, evidence });
  else {
    const m = lossMechanism('loss after a resume at a stale position');
    props.push({ name: 'bounded-loss', verdict: m ? 'fails-as-modelled' : 'violated', checks: input.traffic.length, reason: `${lost} packets lost beyond counted drops, allowed ${allowed.lost ?? 0}`, evidence, ...(m ? { mechanism: m } : {}) });
  }

  // ring state survives reconnect
  const afterReconnect = resumes.filter((r) => r.resume.after?.end === 'backend-lost');
  const worst = firstBad(resumes, 'violated') ?? modelledMismatch;
  if (!worst) props.push({ name: 'ring-state-survives-reconnect', verdict: 'holds', checks: resumes.length, reason: `${afterReconnect.length} ring resumes after a back-end restart, ${resumes.length - afterReconnect.length} fresh starts, all where the driver is` });
  else
    props.push({
      name: 'ring-state-survives-reconnect',
      verdict: worst.verdict,
      checks: resumes.length,
      reason: worst.reason,
      evidence: { resumes: resumes.length, mismatched: resumes.filter((r) => r.verdict !== 'holds').length },
      ...(worst.mechanism ? { mechanism: worst.mechanism } : {}),
      firstFailure: { t: worst.resume.t, event: `vm${worst.resume.vm} connection ${worst.resume.connection} SET_VRING_BASE vring ${worst.resume.vring}` },
    });

  // features stable: every reconnect of a VM process negotiates what its first connection did.
  const firstFeatures = new Map<number, bigint>();
  let fcheck = 0;
  let fbad: { vm: number; t: number; was: bigint; now: bigint; connection: number } | undefined;
  for (const c of obs.connections) {
    if (c.firstOfVm || !firstFeatures.has(c.vm)) {
      firstFeatures.set(c.vm, c.features);
      continue;
    }
    fcheck++;
    const was = firstFeatures.get(c.vm)!;
    if (was !== c.features && !fbad) fbad = { vm: c.vm, t: c.t, was, now: c.features, connection: c.connection };
  }
  props.push(
    fbad
      ? { name: 'features-stable', verdict: 'violated', checks: fcheck, reason: `vm${fbad.vm} connection ${fbad.connection} negotiated ${hex(fbad.now)}, first ${hex(fbad.was)}`, firstFailure: { t: fbad.t, event: `SET_FEATURES vm${fbad.vm}` } }
      : { name: 'features-stable', verdict: 'holds', checks: fcheck, reason: `${fcheck} reconnects negotiated the features of their VM's first connection` },
  );

  // liveness: after every restart, ready within the bound and traffic flows again.
  const late = input.liveness.find((l) => l.readyAt === undefined || l.readyAt - l.faultAt > input.readyBound);
  const stalled = input.liveness.find((l) => l.trafficResumed === false);
  if (!late && !stalled) {
    const worstT = input.liveness.reduce((m, l) => Math.max(m, (l.readyAt ?? 0) - l.faultAt), 0);
    props.push({ name: 'liveness', verdict: 'holds', checks: input.liveness.length, reason: `${input.liveness.length} restarts, ready within ${worstT.toFixed(3)} s (bound ${input.readyBound} s), traffic resumed every time` });
  } else if (late) {
    props.push({ name: 'liveness', verdict: 'violated', checks: input.liveness.length, reason: `${late.what} restarted at t=${late.faultAt.toFixed(3)} s and was not ready within ${input.readyBound} s`, firstFailure: { t: late.faultAt, event: `${late.what} restart` } });
  } else {
    const m = modelledMismatch?.mechanism;
    props.push({
      name: 'liveness',
      verdict: m ? 'fails-as-modelled' : 'violated',
      checks: input.liveness.length,
      reason: `${stalled!.what} restarted at t=${stalled!.faultAt.toFixed(3)} s: ready, but traffic did not resume`,
      ...(m ? { mechanism: m } : {}),
      firstFailure: { t: stalled!.faultAt, event: `${stalled!.what} restart` },
    });
  }
  return { properties: props, resumes };
}
