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
 *
 * In a run the per-event checks of src/sim/monitors.ts feed both (`RunMonitors`); the functions
 * here also judge a whole trace or observation list at once, with the same rules.
 */
import { allowedLoss, expectedResumeIndex, type RingPos } from '../../models/session.ts';
import { EscapeMonitor, FeaturesMonitor, modelInvariantResults, refOf, TraceMonitor, type EventAt, type RunMonitors } from './monitors.ts';
import type { EventRef, InvariantResult, Mechanism, PropertyResult, Verdict } from './results.ts';
import type { Scenario } from './scenario.ts';
import { isMessageRecord, type TraceRecord } from './trace.ts';
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

export { isMemoryFault } from './monitors.ts';

/**
 * The model invariants over a whole trace at once (a run's end, or a trace read from a file): the
 * same checks the runner makes after every event (src/sim/monitors.ts), here with each record's
 * own time and description as its event.
 */
export function checkModelInvariants(input: {
  trace: readonly TraceRecord[];
  escaped: readonly EscapedError[];
  /** undefined: determinism not checked in this run. */
  determinism?: { same: boolean; hashA: string; hashB: string };
}): InvariantResult[] {
  const tr = new TraceMonitor(input.trace);
  const esc = new EscapeMonitor(input.escaped);
  const at: EventAt = { t: 0, label: '', seq: undefined, step: undefined };
  // One record (or escaped error) at a time, so each violation names its own.
  input.trace.forEach((r, i) => {
    at.t = r.t;
    at.label = isMessageRecord(r) ? `${r.dir} request ${r.request}` : `${r.event} ${r.n}`;
    tr.checkUpTo(at, i + 1);
  });
  input.escaped.forEach((e, k) => {
    at.t = e.t;
    at.label = e.where;
    esc.checkUpTo(at, k + 1);
  });
  const out = modelInvariantResults(esc, tr, 'end-of-run', 1);
  const d = input.determinism;
  if (d !== undefined) {
    out[3] = d.same
      ? { name: 'deterministic', verdict: 'holds', checks: 1 }
      : { name: 'deterministic', verdict: 'violated', checks: 1, firstViolation: { t: 0, event: 'replay', reason: `same seed gave different traces (sha256 ${d.hashA.slice(0, 12)} vs ${d.hashB.slice(0, 12)})` } };
  }
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

/** A queue of a running VM that moved no packet in a traffic step (several queue pairs only). */
export interface SilentQueue {
  vm: number;
  queue: number;
  /** guest-tx: the host's vhost RX queue dequeued nothing from vring 2q+1; guest-rx: its TX queue enqueued nothing into vring 2q. */
  dir: 'guest-tx' | 'guest-rx';
  vring: number;
}

export const fmtSilent = (q: SilentQueue): string => `vm${q.vm} queue ${q.queue} ${q.dir === 'guest-tx' ? 'guest TX' : 'guest RX'} (vring ${q.vring})`;

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
  /** Per VM: did the VM's ports move packets (with several queue pairs: on every queue pair its device negotiated). */
  perVm: boolean[];
  /** Several queue pairs: the queues that moved nothing (they make their VM's `perVm` false). */
  silentQueues?: SilentQueue[];
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
  if (s.topology === 'pvp') return Math.max(0, lossBalance(traffic));
  return traffic.reduce((n, t) => n + Math.max(0, t.lost - t.attributed), 0);
}

/** PVP: packets sent minus those that came back minus counted drops, unclipped (negative: drops counted twice). */
export function lossBalance(traffic: readonly TrafficRecord[]): number {
  return traffic.reduce((n, t) => n + t.sent - t.through - t.attributed - (t.between?.through ?? 0) - (t.between?.attributed ?? 0), 0);
}

/** A VM killed during traffic and the packets that died with it (src/sim/runner.ts). */
export interface VmKill {
  vm: number;
  t: number;
  /** Packets the back-end had put on the guest's RX ring that the guest had not read. */
  rxUnread: number;
  /** Packets between RX and TX inside the guest's testpmd. */
  inTestpmd: number;
  /** Packets posted on the guest's TX ring that the back-end had not taken. */
  txNotTaken: number;
  /** Packets the back-end put on the dead guest's RX ring before it saw the socket close. */
  afterKill: number;
  /** Packets the host testpmd dropped for the VM's port after that, while the VM was down (not lost by the guest). */
  whileDown: number;
}

export interface LivenessRecord {
  /** What restarted: `backend`, `vm0` … */
  what: string;
  /** The VM restarted (undefined: the back-end, which all VMs share). */
  vm?: number;
  faultAt: number;
  readyAt: number | undefined;
  /** Did the next traffic step after it flow (on every queue pair of the VMs it concerns). */
  trafficResumed: boolean | undefined;
  /** The queues that stayed silent in that step, named (several queue pairs). */
  silentQueues?: string[];
  /** Scenario path of the step that restarted it. */
  step?: string;
}

export function checkProtocolProperties(
  s: Scenario,
  input: {
    obs: Observations;
    traffic: readonly TrafficRecord[];
    liveness: readonly LivenessRecord[];
    readyBound: number;
    /** The run's per-event checks (src/sim/monitors.ts): ring well-formed and features stable come from them, and events are named. */
    monitors?: RunMonitors;
    /** VMs killed during traffic: their packets are counted drops, listed in the bounded-loss evidence. */
    vmKills?: readonly VmKill[];
  },
): { properties: PropertyResult[]; resumes: ResumeVerdict[] } {
  const { obs } = input;
  const props: PropertyResult[] = [];
  const resumes = obs.resumes.map((r) => judgeResume(s, r));
  const firstBad = (vs: ResumeVerdict[], v: Verdict) => vs.find((x) => x.verdict === v);

  // ring well-formed: what the per-event ring monitor saw in guest memory, and any malformed chain a
  // back-end met (it stops that queue, as DPDK's burst does); the earlier of the two is reported.
  const mon = input.monitors;
  const modelledMismatch = firstBad(resumes, 'fails-as-modelled');
  const ringTally = mon?.rings.tally;
  const re = obs.ringErrors[0];
  const reAt = re ? mon?.ringErrorAt.at[0] : undefined;
  const reRef: EventRef | undefined = re ? (reAt ? { ...refOf(reAt, re.message), event: `pop vring ${re.vring} in '${reAt.label || `#${reAt.seq}`}'` } : { t: re.t, event: `pop vring ${re.vring}` }) : undefined;
  const seen = ringTally?.first;
  const useMonitor = seen !== undefined && (reRef === undefined || earlier(seen, reRef));
  const ringChecks = (ringTally?.checks ?? 0) + obs.resumes.length + input.traffic.length;
  const ringWhen = mon ? { checkedAfter: 'every-event' as const } : {};
  if (!re && !seen) {
    props.push({ name: 'ring-well-formed', verdict: 'holds', checks: ringChecks, ...ringWhen, reason: mon ? `every ring change after each of ${mon.events} events was well-formed; no malformed chain met by any back-end` : 'no malformed chain met by any back-end' });
  } else {
    const vm = useMonitor ? (seen!.evidence?.vm as number | undefined) : re!.vm;
    const t = useMonitor ? seen!.t : re!.t;
    const explained = modelledMismatch && modelledMismatch.resume.t <= t && modelledMismatch.resume.vm === vm;
    const { reason: _r, evidence: _e, ...ref } = useMonitor ? seen! : { ...reRef!, reason: '', evidence: undefined };
    props.push({
      name: 'ring-well-formed',
      verdict: explained ? 'fails-as-modelled' : 'violated',
      checks: ringChecks,
      ...ringWhen,
      reason: useMonitor ? seen!.reason : `vm${re!.vm} vring ${re!.vring}: ${re!.message}`,
      evidence: { ringErrors: obs.ringErrors.length, ...(useMonitor ? { monitor: seen!.evidence ?? {} } : {}) },
      ...(explained ? { mechanism: modelledMismatch.mechanism! } : {}),
      firstFailure: ref,
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
  const killed = (input.vmKills ?? []).map((k) => ({ vm: k.vm, t: k.t, lost: k.rxUnread + k.inTestpmd + k.txNotTaken + k.afterKill, rxUnread: k.rxUnread, inTestpmd: k.inTestpmd, txNotTaken: k.txNotTaken, afterKill: k.afterKill, droppedWhileDown: k.whileDown }));
  const evidence = { duplicates: dups, unattributedLoss: lost, ...(s.topology === 'pvp' ? { lossBalance: lossBalance(input.traffic) } : {}), inFlightAtCrash: { tx: crashTx, rx: rxIn }, ...(killed.length > 0 ? { vmKilledDuringTraffic: killed } : {}), ...(obs.ringResets.length > 0 ? { droppedByRingReset: { tx: resetTx, rx: obs.ringResets.reduce((n, x) => n + x.dropped, 0) - resetTx } } : {}), allowed: { duplicates: allowed.duplicates, lost: allowed.lost } };
  const lossMechanism = (what: string): Mechanism | undefined =>
    modelledMismatch?.mechanism ? { ...modelledMismatch.mechanism, summary: `${what}: ${modelledMismatch.mechanism.summary}` } : undefined;
  if (dupOk) props.push({ name: 'no-duplicate-delivery', verdict: 'holds', checks: input.traffic.length, reason: `${dups} duplicates (allowed ${allowed.duplicates ?? 'unbounded'})`, evidence });
  else {
    const m = lossMechanism('duplicates after a resume at a stale position');
    props.push({ name: 'no-duplicate-delivery', verdict: m ? 'fails-as-modelled' : 'violated', checks: input.traffic.length, reason: `${dups} duplicates, allowed ${allowed.duplicates ?? 0} (${allowed.mechanism})`, evidence, ...(m ? { mechanism: m } : {}) });
  }
  const lossOk = allowed.lost === null ? lost === 0 : lost <= allowed.lost;
  const byKills = killed.length > 0 ? `; ${killed.reduce((n, k) => n + k.lost, 0)} died with ${killed.length} VM(s) killed during traffic, counted as drops` : '';
  if (lossOk) props.push({ name: 'bounded-loss', verdict: 'holds', checks: input.traffic.length, reason: `${lost} packets lost beyond counted drops (allowed ${allowed.lost ?? 'unbounded'})${byKills}`, evidence });
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
      firstFailure: resumeRef(worst.resume, mon, obs),
    });

  // features stable: every reconnect of a VM process negotiates what its first connection did
  // (judged at each new connection by the per-event monitor; over the whole list without one).
  let ft = mon?.features.tally;
  if (!ft) {
    const fm = new FeaturesMonitor(obs.connections);
    const at: EventAt = { t: 0, label: '', seq: undefined, step: undefined };
    obs.connections.forEach((c, i) => {
      at.t = c.t;
      at.label = `SET_FEATURES vm${c.vm}`;
      fm.checkUpTo(at, i + 1);
    });
    ft = fm.tally;
  }
  if (ft.first) {
    const { reason, evidence: _e, ...ref } = ft.first;
    props.push({ name: 'features-stable', verdict: 'violated', checks: ft.checks, ...(mon ? { checkedAfter: 'every-event' as const } : {}), reason, firstFailure: ref });
  } else props.push({ name: 'features-stable', verdict: 'holds', checks: ft.checks, ...(mon ? { checkedAfter: 'every-event' as const } : {}), reason: `${ft.checks} reconnects negotiated the features of their VM's first connection` });

  // liveness: after every restart, ready within the bound and traffic flows again.
  const late = input.liveness.find((l) => l.readyAt === undefined || l.readyAt - l.faultAt > input.readyBound);
  const stalled = input.liveness.find((l) => l.trafficResumed === false);
  if (!late && !stalled) {
    const worstT = input.liveness.reduce((m, l) => Math.max(m, (l.readyAt ?? 0) - l.faultAt), 0);
    props.push({ name: 'liveness', verdict: 'holds', checks: input.liveness.length, reason: `${input.liveness.length} restarts, ready within ${worstT.toFixed(3)} s (bound ${input.readyBound} s), traffic resumed every time${s.queues > 1 ? ' on every queue pair' : ''}` });
  } else if (late) {
    props.push({ name: 'liveness', verdict: 'violated', checks: input.liveness.length, reason: `${late.what} restarted at t=${late.faultAt.toFixed(3)} s and was not ready within ${input.readyBound} s`, firstFailure: { t: late.faultAt, event: `${late.what} restart`, ...(late.step ? { step: late.step } : {}) } });
  } else {
    const m = modelledMismatch?.mechanism;
    props.push({
      name: 'liveness',
      verdict: m ? 'fails-as-modelled' : 'violated',
      checks: input.liveness.length,
      reason: `${stalled!.what} restarted at t=${stalled!.faultAt.toFixed(3)} s: ready, but traffic did not resume${stalled!.silentQueues?.length ? ` on ${stalled!.silentQueues.join(', ')}` : ''}`,
      ...(stalled!.silentQueues?.length ? { evidence: { silentQueues: stalled!.silentQueues } } : {}),
      ...(m ? { mechanism: m } : {}),
      firstFailure: { t: stalled!.faultAt, event: `${stalled!.what} restart`, ...(stalled!.step ? { step: stalled!.step } : {}) },
    });
  }
  for (const p of props) if (p.checkedAfter === undefined) p.checkedAfter = 'end-of-run';
  return { properties: props, resumes };
}

/** (t, seq) order; a step action (no seq) counts as before the events at its time. */
function earlier(a: EventRef, b: EventRef): boolean {
  if (a.t !== b.t) return a.t < b.t;
  return (a.seq ?? -1) <= (b.seq ?? -1);
}

/** The resume's connection event: the scheduler event in which the new device's vring was handed over. */
function resumeRef(r: RingResume, mon: RunMonitors | undefined, obs: Observations): EventRef {
  const event = `vm${r.vm} connection ${r.connection} SET_VRING_BASE vring ${r.vring}`;
  const at = mon ? mon.resumeAt.at[obs.resumes.indexOf(r)] : undefined;
  if (!at) return { t: r.t, event };
  return { t: r.t, event: `${event} (in '${at.label || `#${at.seq}`}')`, ...(at.seq !== undefined ? { seq: at.seq } : {}), ...(at.step !== undefined ? { step: at.step } : {}) };
}

