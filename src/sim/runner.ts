/**
 * Runs a parsed scenario in the model: builds the topology (src/sim/topology.ts), executes the
 * steps in seeded virtual time, and collects a result in the format of src/sim/results.ts with
 * the trace of every vhost-user message.
 *
 * Timing decisions (virtual time):
 * - a launch (back-end or VM) or a guest reboot runs the model until every affected connection
 *   is ready and the guest driver has its rings, or `readyBound` seconds pass — as an operator
 *   waits for "virtio is now ready for processing" / the guest to boot before the next command;
 * - a quit or kill runs 1 ms so the peer sees the close before the next step;
 * - a traffic step offers load for its seconds, then drains for `drainSeconds` before counting.
 *
 * A model error escaping the scheduler ends the run: the result reports the model invariant it
 * breaks (memory safety when it is a RingError / GuestMemoryError) instead of throwing.
 *
 * Checks: the model invariants and the protocol properties that can be judged as the run goes
 * (ring well-formed, features stable) run after every scheduler event and after every step's own
 * action (src/sim/monitors.ts), each keeping its first violation with the event that caused it;
 * the result's `monitoring` says how many events were covered. Loss, resumes and liveness need
 * the whole run and are judged at expects and at the end, naming the event where they can.
 *
 * A crash during traffic (`kill-backend` or `kill-vm` with `at`) lands inside the traffic step
 * before it. A killed VM's packets are counted exactly (drop reason `vm-killed`): those unread on
 * its RX rings, inside its testpmd, on its TX rings not yet taken, and those the back-end put on
 * its RX rings before it saw the socket close; what the host testpmd drops for it afterwards is
 * `guest-not-ready`. A guest reset or VM exit between steps is counted the same way (`ring-reset`),
 * and so is every packet the host testpmd drops towards a VM whose device is not running
 * (fwd_dropped beyond missed_pkts, `guest-not-ready`).
 *
 * Several queue pairs: a traffic step names the queues of running VMs that moved nothing; such a
 * VM does not count as flowing, for `traffic-flows` and for liveness after a restart.
 */
import { createHash } from 'node:crypto';
import { TraceRecorder } from '../endpoint/trace-recorder.ts';
import { SocketNamespace } from '../transport/index.ts';
import { checkModelInvariants, checkProtocolProperties, fmtSilent, unattributedLoss, type LivenessRecord, type ResumeVerdict, type SilentQueue, type TrafficRecord, type VmKill } from './invariants.ts';
import {
  RESULT_FORMAT,
  scenarioSummary,
  type DropCount,
  type ExpectResult,
  type Mechanism,
  type PortCounters as ResultPortCounters,
  type RunResult,
  type TestpmdStats,
  type Verdict,
} from './results.ts';
import { RunMonitors } from './monitors.ts';
import { stepPath, walkSteps, type ExpectStep, type KillBackendStep, type KillVmStep, type Scenario, type WalkedStep } from './scenario.ts';
import { Scheduler, SchedulerEventError } from './scheduler.ts';
import { serializeTrace, type TraceRecord } from './trace.ts';
import { Topology, type DataPathTuning, type ProfileHooks } from './topology.ts';
import type { PortCounters } from '../net/port.ts';
import type { FwdMode as NetFwdMode } from '../net/forwarding.ts';

export interface RunOptions {
  /** Overrides the scenario's seed. */
  seed?: number;
  /** The scenario's file, for the result. */
  file?: string;
  hooks?: ProfileHooks;
  tuning?: Partial<DataPathTuning>;
  /** Run twice and compare traces (the `deterministic` model invariant). */
  checkDeterminism?: boolean;
  /** Virtual seconds a restart may take to become ready (liveness bound, default 10). */
  readyBound?: number;
  /** Virtual seconds after a traffic step before counting (default 0.01). */
  drainSeconds?: number;
  /**
   * Called once the run is built, before the first step: tests schedule their own events here
   * (e.g. one that corrupts a ring) and read the per-event monitors.
   */
  inject?: (run: { sched: Scheduler; topo: Topology; monitors: RunMonitors }) => void;
}

export interface RunOutput {
  result: RunResult;
  trace: TraceRecord[];
  /** The trace as JSON Lines. */
  traceText: string;
}

interface TrafficMark {
  sent: number;
  received: number;
  duplicates: number;
  hostPorts: number[][];
}

/** Runs `scenario` and returns its result and trace; never throws for a model failure (it is reported). */
export function runScenario(scenario: Scenario, opts: RunOptions = {}): RunOutput {
  const first = runOnce(scenario, opts);
  if (!opts.checkDeterminism) return first;
  const again = runOnce(scenario, opts);
  const hashA = first.result.trace.sha256!;
  const hashB = again.result.trace.sha256!;
  const same = hashA === hashB && first.result.virtualSeconds === again.result.virtualSeconds && first.result.counts.packetsThrough === again.result.counts.packetsThrough;
  const inv = first.result.invariants.find((i) => i.name === 'deterministic')!;
  Object.assign(inv, checkModelInvariants({ trace: [], escaped: [], determinism: { same, hashA, hashB } }).find((i) => i.name === 'deterministic')!);
  return first;
}

function runOnce(s: Scenario, opts: RunOptions): RunOutput {
  const wall0 = performance.now();
  // Refuse what the model cannot run before starting, rather than aborting half-way.
  for (const w of walkSteps(s.steps)) if (w.step.op === 'start-forwarding') netFwd(w.step.fwd);
  const seed = opts.seed ?? s.seed ?? 1;
  const readyBound = opts.readyBound ?? 10;
  const drain = opts.drainSeconds ?? 0.01;
  const sched = new Scheduler({ seed });
  const ns = new SocketNamespace({ scheduler: sched });
  const recorder = new TraceRecorder(sched);
  const walked = [...walkSteps(s.steps)];
  // A crash during traffic only finds buffers popped but not used if completions lag the pops
  // (DPDK's async path); with the sync path every burst completes before the next event.
  const timedKill = walked.some((w) => w.step.op === 'kill-backend' && w.step.at !== undefined);
  const tuning: Partial<DataPathTuning> = { ...(timedKill ? { completionDelay: CRASH_COMPLETION_DELAY } : {}), ...opts.tuning };
  const topo = new Topology(s, sched, ns, recorder, opts.hooks ?? {}, tuning);
  // Model invariants and per-event protocol properties, checked after every event.
  const monitors = new RunMonitors({ recorder, obs: topo.obs, guests: topo });
  monitors.install(sched);
  opts.inject?.({ sched, topo, monitors });
  /** The step being run, for attributing what its own actions change. */
  let curStep = { path: '', what: '' };

  const expects: ExpectResult[] = [];
  const traffic: TrafficRecord[] = [];
  const liveness: LivenessRecord[] = [];
  const pendingLiveness: LivenessRecord[] = [];
  const counts = { reconnects: 0, backendRestarts: 0, vmRestarts: 0, vmReboots: 0 };
  let backendLaunches = 0;
  const vmLaunches = Array.from({ length: s.vms }, () => 0);
  /** The last restart that `expect reconnected` refers to. */
  let lastRestart: { what: string; t: number; connectionsBefore: number; vm?: number } | undefined;
  let aborted: { t: number; where: string; error: unknown } | undefined;
  let lastTraffic: TrafficRecord | undefined;
  let inFlightAtCrashPackets = 0;

  const guard = (fn: () => void): void => {
    if (aborted) return;
    try {
      fn();
    } catch (e) {
      const where = e instanceof SchedulerEventError ? `event ${e.label}` : `step ${curStep.path}`;
      aborted = { t: sched.now, where, error: e instanceof SchedulerEventError && e.cause !== undefined ? e.cause : e };
      topo.obs.escaped.push(aborted);
      // The failing event's hooks did not run: check after it here, naming it.
      if (e instanceof SchedulerEventError) monitors.afterFailedEvent(e.label, e.time, e.seq);
    }
    // What the step's own code changed (outside any event) is checked too, and attributed to it.
    monitors.afterStep(sched.now, curStep.path, curStep.what);
  };
  const advance = (seconds: number, stopWhen?: () => boolean): void =>
    guard(() => {
      sched.run({ until: sched.now + seconds, ...(stopWhen ? { stopWhen } : {}) });
    });
  const settle = (vm?: number): number | undefined => {
    const t0 = sched.now;
    const check = (): boolean => {
      topo.syncHost();
      topo.syncGuests();
      return topo.ready(vm);
    };
    // Between control-plane changes a sync does nothing and readiness cannot change: skip it.
    // Read before syncing, so changes the sync itself makes are looked at after the next event.
    let seen = topo.controlPlaneGeneration;
    const changed = (): boolean => {
      const g = topo.controlPlaneGeneration;
      if (g === seen) return false;
      seen = g;
      return check();
    };
    if (check()) return t0;
    advance(readyBound, changed);
    return check() ? sched.now : undefined;
  };
  const markRestart = (what: string, vm: number | undefined, readyAt: number | undefined, faultAt: number): void => {
    const rec: LivenessRecord = { what, ...(vm !== undefined ? { vm } : {}), faultAt, readyAt, trafficResumed: undefined, step: curStep.path };
    liveness.push(rec);
    pendingLiveness.push(rec);
  };
  const connections = (): number => topo.obs.connections.length;

  const hostPortTotals = (): number[][] => {
    // After a crash inside the step the counters are those of the instance that died.
    const h = topo.host ?? topo.lastHost;
    if (!h) return [];
    return h.ports.map((p) => [p.stats().rxPackets, p.stats().txPackets]);
  };
  const mark = (): TrafficMark => {
    const r = topo.tg?.report();
    return { sent: r?.sent ?? 0, received: r?.received ?? 0, duplicates: r?.duplicates ?? 0, hostPorts: hostPortTotals() };
  };

  /**
   * VMs killed during traffic (`kill-vm` with `at`) and the packets that died with them: unread
   * on the guest's RX ring, inside its testpmd, posted on its TX ring and not yet taken by the
   * back-end, and put on its RX ring by the back-end after the kill (until the back-end sees the
   * socket close and stops the queue). `estimate` is what the topology's reset accounting added
   * for the same VM (an upper bound), replaced here by the exact count.
   */
  const vmKills: (VmKill & { estimate: number; host: NonNullable<Topology['host']> | undefined; tx0: number; fwd0: number; missed0: number; open: boolean })[] = [];
  const killLost = (k: VmKill): number => k.rxUnread + k.inTestpmd + k.txNotTaken + k.afterKill;
  /** fwd_dropped of the host testpmd's streams into a port (since its `start`). */
  const fwdDropped = (h: NonNullable<Topology['host']>, port: number): number => h.testpmd.forwardStats().find((x) => x.port === port)?.txDropped ?? 0;
  const updateKills = (close: boolean): void => {
    for (const k of vmKills) {
      if (!k.open) continue;
      const port = k.host?.ports[k.vm];
      if (k.host && port) {
        k.afterKill = Math.max(0, port.stats().txPackets - k.tx0);
        // Once the back-end has destroyed the device, eth_vhost_tx takes nothing and testpmd drops
        // the burst (fwd_dropped); drops while a ring was full are in missed_pkts, counted already.
        k.whileDown = Math.max(0, fwdDropped(k.host, port.id) - k.fwd0 - (port.missedPkts - k.missed0));
      }
      if (close) k.open = false;
    }
  };
  /**
   * Packets VM `vm`'s guest holds, from guest memory as the monitors last saw it (they ran after
   * the event before this step action): unread on its RX rings, inside its testpmd, posted on its
   * TX rings and not taken. TX buffers used but not yet reclaimed were sent: not counted.
   * With completions lagging the pops (CRASH_COMPLETION_DELAY), the back-end's pending completions
   * look unused in guest memory: RX buffers it is filling hold packets the guest will never read
   * (counted as unread), TX buffers it has taken are already in host mbufs (not counted).
   */
  /**
   * Split TX vring resumed at used->idx after a crash: buffers between there and where the crashed
   * back-end had taken them are available again but their packets were delivered already (taking
   * them again makes duplicates); those not yet taken again are no packet the guest still holds.
   * The furthest any back-end got on these rings (this VM process, since its last guest reset) counts.
   */
  const replayable = (vm: number, r: number): number => {
    const h = topo.host;
    const dev = h?.inner[vm]?.[r];
    if (s.ring !== 'split' || !h || !dev || h.attached[vm]![r] === undefined) return 0;
    const st = (dev as unknown as { saveState(): { lastAvailIdx: number } }).saveState();
    let t0 = -Infinity;
    for (const c of topo.obs.connections) if (c.vm === vm && c.firstOfVm) t0 = c.t;
    let best = 0;
    for (const e of topo.obs.ringEnds) {
      if (e.vm !== vm || e.vring !== r || e.t < t0) continue;
      if (e.end === 'device-reset') best = 0;
      else {
        const d = (e.lastAvail.idx - st.lastAvailIdx) & 0xffff;
        if (d <= s.queueSize && d > best) best = d;
      }
    }
    return best;
  };
  const guestHeldPerVring = (vm: number): { inTestpmd: number; perVring: number[] } => {
    const v = topo.vms[vm];
    const perVring = new Array<number>(2 * s.queues).fill(0);
    if (!v || v.attachedGeneration < 0) return { inTestpmd: 0, perVring };
    const port = topo.host?.ports[vm];
    // Even vrings receive, odd ones transmit (virtio-net queue pairs).
    let out = 0;
    v.fe.guest.vrings.forEach((gv, r) => {
      if (r >= perVring.length) return;
      const drv = gv.driver?.inFlight ?? 0;
      const notUsed = monitors.rings.watch(vm, r)?.inFlight ?? 0;
      out += drv;
      const q = r >> 1;
      if (r % 2 === 0) perVring[r] = Math.max(0, drv - notUsed) + (port?.enqueues[q]!.packetsPending ?? 0);
      else perVring[r] = Math.max(0, notUsed - (port?.dequeues[q]!.packetsPending ?? 0) - replayable(vm, r));
    });
    return { inTestpmd: Math.max(0, v.pool.inUse - out), perVring };
  };
  const guestHeld = (vm: number): { rxUnread: number; inTestpmd: number; txNotTaken: number } => {
    const g = guestHeldPerVring(vm);
    let rxUnread = 0;
    let txNotTaken = 0;
    g.perVring.forEach((n, r) => (r % 2 === 0 ? (rxUnread += n) : (txNotTaken += n)));
    return { rxUnread, inTestpmd: g.inTestpmd, txNotTaken };
  };
  topo.guestHeldCounter = guestHeldPerVring;
  const killVmDuringTraffic = (vm: number): void => {
    const v = topo.vms[vm];
    if (!v) return;
    const host = topo.host;
    const port = host?.ports[vm];
    const k = {
      vm,
      t: sched.now,
      ...guestHeld(vm),
      afterKill: 0,
      whileDown: 0,
      estimate: 0,
      host,
      tx0: port?.stats().txPackets ?? 0,
      fwd0: host && port ? fwdDropped(host, port.id) : 0,
      missed0: port?.missedPkts ?? 0,
      open: true,
    };
    const held0 = topo.obs.guestHeldAtReset;
    // Counted here, exactly, including what the back-end puts on its RX rings until it sees the close.
    topo.countHeldAtStop = false;
    guard(() => topo.stopVm(vm, 'kill'));
    topo.countHeldAtStop = true;
    k.estimate = topo.obs.guestHeldAtReset - held0;
    vmKills.push(k);
  };

  /** Per VM, per queue: packets moved so far (several queue pairs only). */
  const queueMark = (): { rx: number[]; tx: number[] }[] | undefined => (s.queues > 1 ? Array.from({ length: s.vms }, (_, i) => topo.queuePackets(i)) : undefined);
  /** Queues of the running VMs that moved nothing since `before`: guest TX always, guest RX when traffic comes back (PVP). */
  const silentSince = (before: { rx: number[]; tx: number[] }[] | undefined, bothWays: boolean): SilentQueue[] => {
    const out: SilentQueue[] = [];
    if (!before) return out;
    for (let vm = 0; vm < s.vms; vm++) {
      if (!topo.vms[vm]) continue;
      const a = topo.queuePackets(vm);
      const b = before[vm]!;
      for (let q = 0; q < topo.negotiatedPairs(vm); q++) {
        if (a.rx[q]! <= b.rx[q]!) out.push({ vm, queue: q, dir: 'guest-tx', vring: 2 * q + 1 });
        if (bothWays && a.tx[q]! <= b.tx[q]!) out.push({ vm, queue: q, dir: 'guest-rx', vring: 2 * q });
      }
    }
    return out;
  };
  const silentText = (sq: readonly SilentQueue[]): string => (sq.length > 0 ? `; silent queues: ${sq.map(fmtSilent).join(', ')}` : '');

  /** Generator and drop totals at the end of the last PVP traffic step. */
  let pvpEnd = { received: 0, drops: 0 };
  const runTraffic = (st: Extract<WalkedStep['step'], { op: 'traffic' }>, crash?: { step: KillBackendStep | KillVmStep; path: string }): void => {
    topo.syncHost();
    topo.syncGuests();
    const t0 = sched.now;
    const queues0 = queueMark();
    if (s.topology === 'pvp') {
      const before = mark();
      const dropsBefore = dropTotals();
      const between = { through: before.received - pvpEnd.received, attributed: dropsBefore - pvpEnd.drops };
      guard(() => topo.startTraffic({ seconds: st.seconds, ...(st.rate !== undefined ? { rate: st.rate } : {}), ...(st.size !== undefined ? { size: st.size } : {}), ...(st.flows !== undefined ? { flows: st.flows } : {}) }));
      if (crash) {
        const c = crash.step;
        advance(c.at!);
        const outer = curStep;
        curStep = { path: crash.path, what: c.op };
        if (c.op === 'kill-backend') guard(() => topo.stopBackend('kill'));
        else killVmDuringTraffic(c.vm);
        curStep = outer;
        advance(st.seconds - c.at!);
      } else advance(st.seconds);
      guard(() => topo.stopTraffic());
      advance(drain);
      updateKills(true);
      const after = mark();
      const dropsAfter = dropTotals();
      pvpEnd = { received: after.received, drops: dropsAfter };
      const sent = after.sent - before.sent;
      const through = after.received - before.received;
      const dup = after.duplicates - before.duplicates;
      const silent = silentSince(queues0, true);
      const perVm = Array.from({ length: s.vms }, (_, i) => {
        const b = before.hostPorts[i];
        const a = after.hostPorts[i];
        return a !== undefined && b !== undefined && a[0]! > b[0]! && a[1]! > b[1]! && !silent.some((q) => q.vm === i);
      });
      const attributed = dropsAfter - dropsBefore;
      const flowed = through > 0 && perVm.every((x) => x);
      lastTraffic = {
        t: t0,
        through,
        sent,
        duplicates: dup,
        lost: Math.max(0, sent - through),
        attributed,
        flowed,
        perVm,
        ...(queues0 ? { silentQueues: silent } : {}),
        between,
        reason: `${through} of ${sent} packets came back to the generator; vhost ports moving both ways${queues0 ? ' on every queue pair' : ''}: ${perVm.map((x, i) => `vm${i} ${x ? 'yes' : 'no'}`).join(', ')}${silentText(silent)}`,
      };
    } else if (s.topology === 'loopback') {
      lastTraffic = runLoopback(st, t0, queues0);
    } else if (s.guest === 'virtio-pmd') {
      lastTraffic = runPmdStream(st, t0);
    } else {
      const from = st.from ?? 1;
      const to = st.to ?? 0;
      const segments = topo.tuning.streamSegments;
      guard(() => topo.startStream(from, to, segments));
      const stream = topo.streams[topo.streams.length - 1];
      advance(st.seconds, () => stream !== undefined && stream.sender.done);
      // iperf keeps the connection for the whole duration: let the rest of the time pass idle.
      const rest = t0 + st.seconds - sched.now;
      if (rest > 0 && stream?.sender.done) {
        guard(() => topo.pauseDataPath());
        advance(rest);
        guard(() => topo.resumeDataPath());
      } else if (rest > 0) advance(rest);
      const rep = stream?.receiver.report();
      const snd = stream?.sender.report();
      const delivered = rep?.delivered ?? 0;
      const flowed = stream !== undefined && delivered > 0 && (snd?.acked ?? 0) > 0;
      lastTraffic = {
        t: t0,
        through: delivered,
        sent: segments,
        duplicates: 0,
        lost: stream && snd?.done ? 0 : 0,
        attributed: 0,
        flowed,
        perVm: Array.from({ length: s.vms }, () => flowed),
        reason: stream
          ? `stream vm${from} → vm${to}: ${delivered} of ${segments} segments delivered in order${snd?.done ? `, done in ${(snd.finishedAt - snd.startedAt).toFixed(3)} s` : ', not finished'} (${snd?.retransmissions ?? 0} retransmissions)`
          : 'no stream: a VM was not running',
      };
    }
    traffic.push(lastTraffic);
    const t = lastTraffic;
    // A step cut short by a crash is no fair test of a restart before it: the next one decides.
    if (!crash)
      for (const l of pendingLiveness.splice(0)) {
        l.trafficResumed = l.vm !== undefined ? t.through > 0 && t.perVm[l.vm] === true : t.flowed;
        const silent = (t.silentQueues ?? []).filter((q) => l.vm === undefined || q.vm === l.vm);
        if (silent.length > 0) l.silentQueues = silent.map(fmtSilent);
      }
  };

  /**
   * VM2VM between virtio-user ports (no kernel driver, so no iperf): the sending port's testpmd
   * runs txonly and the receiving one rxonly through the host's io forwarding, for as many packets
   * as a stream has segments; then the sender stops and the rest of the step idles, as iperf's.
   * txonly frames carry no sequence numbers, so duplicates are not observable here (counted 0).
   */
  const runPmdStream = (st: Extract<WalkedStep['step'], { op: 'traffic' }>, t0: number): TrafficRecord => {
    const from = st.from ?? 1;
    const to = st.to ?? 0;
    const segments = topo.tuning.streamSegments;
    const snd = topo.vms[from]?.pmd;
    const rcv = topo.vms[to]?.pmd;
    const txOf = (): number => snd?.port.stats().txPackets ?? 0;
    const rxOf = (): number => rcv?.port.stats().rxPackets ?? 0;
    const tx0 = txOf();
    const rx0 = rxOf();
    const drops0 = dropTotals();
    if (snd && rcv) {
      guard(() => {
        topo.startGuestForwarding(to, 'rxonly');
        topo.startGuestForwarding(from, 'txonly');
      });
      advance(st.seconds, () => txOf() - tx0 >= segments);
      guard(() => topo.stopGuestForwarding(from));
      advance(Math.min(drain, Math.max(0, t0 + st.seconds - sched.now)));
      guard(() => topo.stopGuestForwarding(to));
    }
    const rest = t0 + st.seconds - sched.now;
    if (rest > 0) {
      guard(() => topo.pauseDataPath());
      advance(rest);
      guard(() => topo.resumeDataPath());
    }
    const sent = txOf() - tx0;
    const through = rxOf() - rx0;
    const flowed = snd !== undefined && rcv !== undefined && through > 0;
    return {
      t: t0,
      through,
      sent,
      duplicates: 0,
      lost: Math.max(0, sent - through),
      attributed: dropTotals() - drops0,
      flowed,
      perVm: Array.from({ length: s.vms }, () => flowed),
      reason: snd && rcv ? `testpmd txonly vm${from} → rxonly vm${to} (virtio-user has no kernel driver for iperf): ${through} of ${sent} packets received` : 'no stream: a VM was not running',
    };
  };

  /**
   * Loopback: the virtio-user port's testpmd runs txonly for the step (as fast as its poll loop
   * sends) and the host testpmd receives on the vhost port; what it received is what got through.
   */
  const runLoopback = (st: Extract<WalkedStep['step'], { op: 'traffic' }>, t0: number, queues0: ReturnType<typeof queueMark>): TrafficRecord => {
    const snd = topo.vms[0]?.pmd;
    const hostRx = (): number => (topo.host ?? topo.lastHost)?.ports[0]?.stats().rxPackets ?? 0;
    const txOf = (): number => snd?.port.stats().txPackets ?? 0;
    const tx0 = txOf();
    const rx0 = hostRx();
    const drops0 = dropTotals();
    if (snd) {
      guard(() => topo.startGuestForwarding(0, 'txonly'));
      advance(st.seconds);
      guard(() => topo.stopGuestForwarding(0));
      advance(drain);
    } else advance(st.seconds);
    const sent = txOf() - tx0;
    const through = hostRx() - rx0;
    const silent = silentSince(queues0, false);
    const flowed = through > 0 && silent.length === 0;
    return {
      t: t0,
      through,
      sent,
      duplicates: 0,
      lost: Math.max(0, sent - through),
      attributed: dropTotals() - drops0,
      flowed,
      perVm: [flowed],
      ...(queues0 ? { silentQueues: silent } : {}),
      reason: snd ? `testpmd txonly on virtio-user → host vhost port: ${through} of ${sent} packets received by the host${silentText(silent)}` : 'no virtio-user port running',
    };
  };

  const dropTotals = (): number => {
    updateKills(false);
    let n = topo.obs.backendDownDrops + topo.obs.hostHeldAtCrash + topo.obs.guestHeldAtReset;
    // A kill's whileDown is part of its VM's notRunningDrops.
    for (const k of vmKills) n += killLost(k) - k.estimate;
    for (let i = 0; i < s.vms; i++) n += topo.notRunningDrops(i);
    const h = topo.host ?? topo.lastHost;
    if (h) {
      n += h.nic?.stats().rxMissed ?? 0;
      for (const p of h.ports) n += p.missedPkts;
    }
    // testpmd's fwd_dropped counts the same packets as the vhost port's missed_pkts: not added again.
    return n;
  };

  const doExpect = (w: WalkedStep, st: ExpectStep): void => {
    topo.syncHost();
    topo.syncGuests();
    const base = { path: stepPath(w.indices), iteration: w.iteration, what: st.what, ...(st.vm !== undefined ? { vm: st.vm } : {}), ...(st.planStep ? { planStep: st.planStep } : {}), t: sched.now };
    const judged = checkNow();
    let verdict: Verdict = 'holds';
    let reason = '';
    let evidence: Record<string, unknown> = {};
    let mechanism: Mechanism | undefined;
    const explainFromResumes = (): Mechanism | undefined => judged.resumes.find((r) => r.verdict === 'fails-as-modelled' && (st.vm === undefined || r.resume.vm === st.vm))?.mechanism;
    switch (st.what) {
      case 'traffic-flows': {
        const t = lastTraffic;
        if (!t) {
          verdict = 'violated';
          reason = 'no traffic step ran before this check';
          break;
        }
        const ok = st.vm !== undefined ? t.perVm[st.vm] === true && t.through > 0 : t.flowed;
        const silent = (t.silentQueues ?? []).filter((q) => st.vm === undefined || q.vm === st.vm);
        evidence = { sent: t.sent, through: t.through, duplicates: t.duplicates, lost: t.lost, perVm: t.perVm, ...(silent.length > 0 ? { silentQueues: silent.map(fmtSilent) } : {}) };
        if (ok) reason = t.reason;
        else {
          mechanism = explainFromResumes();
          verdict = mechanism ? 'fails-as-modelled' : 'violated';
          reason = `traffic did not flow: ${t.reason}`;
        }
        break;
      }
      case 'reconnected': {
        const r = lastRestart;
        const ready = topo.ready(st.vm);
        const readyAt = liveness[liveness.length - 1]?.readyAt;
        const took = r && readyAt !== undefined ? readyAt - r.t : undefined;
        const newConn = r ? connections() > r.connectionsBefore : false;
        const within = st.within === undefined || (took !== undefined && took <= st.within);
        evidence = { restart: r?.what, restartAt: r?.t, readyAt, connectionsSinceRestart: r ? connections() - r.connectionsBefore : 0 };
        if (r && ready && newConn && within) reason = `${r.what} restart: ${connections() - r.connectionsBefore} connection(s) re-established, ready after ${took?.toFixed(3)} s`;
        else {
          verdict = 'violated';
          reason = !r ? 'no restart happened before this check' : !ready ? `not ready after the ${r.what} restart` : !newConn ? 'no new vhost-user connection since the restart' : `ready after ${took?.toFixed(3)} s, more than ${st.within} s`;
        }
        break;
      }
      default: {
        const name = ({ 'no-duplicates': 'no-duplicate-delivery', 'loss-within-bound': 'bounded-loss', 'features-stable': 'features-stable', 'ring-resumed': 'ring-state-survives-reconnect' } as const)[st.what];
        const p = judged.properties.find((x) => x.name === name)!;
        verdict = p.verdict;
        reason = p.reason;
        evidence = p.evidence ?? {};
        mechanism = p.mechanism;
      }
    }
    expects.push({ ...base, verdict, reason, evidence, ...(mechanism ? { mechanism } : {}) });
  };

  const checkNow = (): { properties: ReturnType<typeof checkProtocolProperties>['properties']; resumes: ResumeVerdict[] } =>
    checkProtocolProperties(s, { obs: topo.obs, traffic, liveness, readyBound, monitors, vmKills });

  /** Kills already done inside the traffic step before them (`at`). */
  const doneEarly = new Set<number>();
  for (let k = 0; k < walked.length; k++) {
    const w = walked[k]!;
    if (aborted) break;
    if (doneEarly.has(k)) continue;
    const st = w.step;
    curStep = { path: stepPath(w.indices) + (w.iteration.length > 0 ? ` #${w.iteration.map((i) => i + 1).join('.')}` : ''), what: st.op };
    switch (st.op) {
      case 'launch-backend': {
        const restart = backendLaunches > 0;
        backendLaunches++;
        if (restart) counts.backendRestarts++;
        const t = sched.now;
        const before = connections();
        guard(() => topo.launchBackend());
        const readyAt = settle();
        if (restart || topo.vms.some((v) => v)) {
          lastRestart = { what: 'back-end', t, connectionsBefore: before };
          markRestart('back-end', undefined, readyAt, t);
        }
        break;
      }
      case 'quit-backend':
      case 'kill-backend':
        guard(() => topo.stopBackend(st.op === 'quit-backend' ? 'quit' : 'kill'));
        advance(1e-3);
        break;
      case 'launch-vm': {
        const restart = vmLaunches[st.vm]! > 0;
        vmLaunches[st.vm]!++;
        if (restart) counts.vmRestarts++;
        const t = sched.now;
        const before = connections();
        guard(() => topo.launchVm(st.vm));
        const readyAt = topo.host ? settle(st.vm) : undefined;
        lastRestart = { what: `vm${st.vm}`, t, connectionsBefore: before, vm: st.vm };
        if (topo.host) markRestart(`vm${st.vm}`, st.vm, readyAt, t);
        break;
      }
      case 'quit-vm':
      case 'kill-vm':
        guard(() => topo.stopVm(st.vm, st.op === 'quit-vm' ? 'quit' : 'kill'));
        advance(1e-3);
        break;
      case 'reboot-vm': {
        counts.vmReboots++;
        const t = sched.now;
        guard(() => topo.rebootVm(st.vm));
        const readyAt = topo.host ? settle(st.vm) : undefined;
        if (topo.host) markRestart(`vm${st.vm} reboot`, st.vm, readyAt, t);
        break;
      }
      case 'start-forwarding':
        guard(() => (st.side === 'host' ? topo.startHostForwarding(netFwd(st.fwd)) : topo.startGuestForwarding(st.vm!, netFwd(st.fwd))));
        break;
      case 'stop-forwarding':
        guard(() => (st.side === 'host' ? topo.stopHostForwarding() : topo.stopGuestForwarding(st.vm!)));
        break;
      case 'traffic': {
        // The scenario rules put a timed kill right after the traffic step it lands in.
        const nw = walked[k + 1];
        const nx = nw?.step;
        const crash = (nx?.op === 'kill-backend' || nx?.op === 'kill-vm') && nx.at !== undefined ? nx : undefined;
        if (crash) doneEarly.add(k + 1);
        runTraffic(st, crash && nw ? { step: crash, path: stepPath(nw.indices) } : undefined);
        break;
      }
      case 'wait':
        advance(st.seconds);
        break;
      case 'expect':
        doExpect(w, st);
        break;
    }
  }

  // Reconnects: connections on each VM's socket after its first one (a relaunched QEMU reconnects too).
  counts.reconnects = topo.reconnects;
  // Only the used-entry writes lag (CRASH_COMPLETION_DELAY): packets dequeued from a guest TX ring
  // were already in host mbufs at the crash (a split resume takes them again: duplicates, not loss),
  // while packets written into guest RX buffers whose used entries never came are lost.
  inFlightAtCrashPackets = topo.obs.detachReports.filter((d) => !d.graceful && d.direction !== 'guest-tx').reduce((n, d) => n + d.packetsInFlight, 0);

  const trace = recorder.records;
  const traceText = serializeTrace(trace);
  const sha256 = createHash('sha256').update(traceText).digest('hex');
  const invariants = monitors.invariants();
  const { properties } = checkNow();

  const drops: DropCount[] = [];
  const h = topo.host ?? topo.lastHost;
  if (topo.obs.backendDownDrops > 0) drops.push({ reason: 'backend-down', where: 'tg → nic', count: topo.obs.backendDownDrops });
  if (topo.obs.hostHeldAtCrash > 0) drops.push({ reason: 'in-flight-at-crash', where: 'host testpmd mbufs', count: topo.obs.hostHeldAtCrash });
  if (h?.nic && h.nic.stats().rxMissed > 0) drops.push({ reason: 'ring-full', where: 'host port 0 (RX-missed)', count: h.nic.stats().rxMissed });
  h?.ports.forEach((p, i) => {
    if (p.missedPkts > 0) drops.push({ reason: 'guest-not-ready', where: `host port ${p.id} (vm${i} RX vring)`, count: p.missedPkts });
    // Drops after a kill during traffic are listed with the kill below.
    const down = topo.notRunningDrops(i) - vmKills.filter((k) => k.vm === i).reduce((n, k) => n + k.whileDown, 0);
    if (down > 0) drops.push({ reason: 'guest-not-ready', where: `host port ${p.id} (vm${i}): dropped by testpmd (fwd_dropped) while vm${i}'s device was not running`, count: down });
  });
  if (inFlightAtCrashPackets > 0) drops.push({ reason: 'in-flight-at-crash', where: 'vhost-user RX vrings (written, used entry not yet)', count: inFlightAtCrashPackets });
  for (const k of vmKills) {
    if (killLost(k) > 0) drops.push({ reason: 'vm-killed', where: describeVmKill(k), count: killLost(k) });
    if (k.whileDown > 0) drops.push({ reason: 'guest-not-ready', where: `host port ${k.vm + 1} (vm${k.vm} RX vring): dropped by testpmd (fwd_dropped) while vm${k.vm} was down after its kill`, count: k.whileDown });
  }
  const killEstimates = vmKills.reduce((n, k) => n + k.estimate, 0);
  // Counted exactly from the rings at each reset or exit (topo.guestHeldCounter).
  const byGuest = topo.obs.guestHeldAtReset - killEstimates;
  if (s.topology === 'pvp' && byGuest > 0) drops.push({ reason: 'ring-reset', where: 'guest reset or VM exit (packets the guest held: unread on RX, in its testpmd, posted on TX)', count: byGuest });
  let unexplained = unattributedLoss(s, traffic) - inFlightAtCrashPackets;
  // virtio-user packed: TX buffers its ring reset dropped (an upper bound: some had been sent).
  const resetTx = s.frontend === 'virtio-user-22.11' && s.ring === 'packed' ? topo.obs.ringResets.filter((x) => x.vring % 2 === 1).reduce((n, x) => n + x.dropped, 0) : 0;
  const byReset = Math.min(Math.max(0, unexplained), resetTx);
  if (byReset > 0) {
    drops.push({ reason: 'ring-reset', where: 'virtio-user packed ring reset (guest TX)', count: byReset });
    unexplained -= byReset;
  }
  if (unexplained > 0) {
    const mismatch = checkNow().resumes.some((r) => r.verdict !== 'holds');
    drops.push({ reason: mismatch ? 'ring-resume-mismatch' : 'unexplained', where: 'end to end', count: unexplained });
  }

  const portStats: TestpmdStats[] = [];
  if (h) {
    const ports: ResultPortCounters[] = [];
    const fwd = h.testpmd.forwardStats();
    if (h.nic) ports.push(portCounters(h.nic.id, 'nic', h.nic.stats(), fwd));
    h.ports.forEach((p, i) => ports.push({ ...portCounters(p.id, 'vhost', p.stats(), fwd), ...(s.queues > 1 ? { queues: topo.queuePackets(i) } : {}) }));
    portStats.push({ instance: 'host', ports });
  }
  topo.vms.forEach((v, i) => {
    if (v?.pmd) portStats.push({ instance: `vm${i}`, ports: [portCounters(0, 'virtio', v.pmd.port.stats(), v.pmd.testpmd.forwardStats())] });
  });

  const sent = traffic.reduce((n, t) => n + t.sent, 0);
  const through = traffic.reduce((n, t) => n + t.through, 0);
  const duplicates = traffic.reduce((n, t) => n + t.duplicates, 0);
  const result: RunResult = {
    format: RESULT_FORMAT,
    scenario: scenarioSummary(s, opts.file),
    seed,
    expects,
    invariants,
    properties,
    portStats,
    counts: { ...counts, packetsSent: sent, packetsThrough: through, duplicates, drops },
    virtualSeconds: sched.now,
    wallSeconds: (performance.now() - wall0) / 1000,
    trace: { records: trace.length, sha256 },
    monitoring: monitors.monitoring([...properties.filter((p) => p.checkedAfter === 'end-of-run').map((p) => p.name), 'deterministic']),
  };
  return { result, trace, traceText };
}

/** Where a VM killed during traffic lost its packets, for the drops list. */
function describeVmKill(k: VmKill): string {
  return `vm${k.vm} killed at t=${k.t.toFixed(4)} s during traffic: ${k.rxUnread} unread on its RX ring, ${k.inTestpmd} in its testpmd, ${k.txNotTaken} on its TX ring not yet taken by the back-end, ${k.afterKill} put on its RX ring by the back-end before it saw the socket close`;
}

/** Completion lag (virtual seconds) in runs with a crash during traffic: under the host's poll period, so a burst's buffers are in flight for part of each period. */
const CRASH_COMPLETION_DELAY = 2e-4;

const NET_FWD: readonly string[] = ['io', 'mac', 'macswap', 'rxonly', 'txonly'];
/** The forwarding engines the net model has; the others are refused clearly. */
function netFwd(m: string | undefined): NetFwdMode | undefined {
  if (m === undefined) return undefined;
  if (!NET_FWD.includes(m)) throw new Error(`testpmd forwarding mode '${m}' is not modelled (supported: ${NET_FWD.join(', ')})`);
  return m as NetFwdMode;
}

function portCounters(id: number, kind: 'nic' | 'vhost' | 'virtio', c: PortCounters, fwd: readonly { port: number; txDropped: number }[]): ResultPortCounters {
  const f = fwd.find((x) => x.port === id);
  return {
    port: id,
    kind,
    rxPackets: c.rxPackets,
    rxMissed: c.rxMissed,
    rxBytes: c.rxBytes,
    rxErrors: c.rxErrors,
    rxNombuf: c.rxNombuf,
    txPackets: c.txPackets,
    txErrors: c.txErrors,
    txBytes: c.txBytes,
    ...(f?.txDropped !== undefined ? { txDropped: f.txDropped } : {}),
  };
}
