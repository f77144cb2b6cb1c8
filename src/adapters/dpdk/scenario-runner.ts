/**
 * Runs a scenario on real DPDK 22.11 and reports it in the model's result shape
 * (src/sim/results.ts), so the two can be compared (compare.ts).
 *
 * Supported here, front-end `virtio-user-22.11` only: topology `loopback`, a virtio-user testpmd
 * (`server=1`, the VM stand-in; txonly while a `traffic` step runs) and a vhost testpmd
 * (`client=1`, the back-end; the scenario's `start-forwarding host` mode), 1–4 queue pairs;
 * topology `pvp` (one VM), the back-end with a NIC port in front of its vhost port and traffic
 * from a generator (`PvpNic`: af_packet on a veth pair and a generator testpmd here, a lab's
 * PCI port and its external generator elsewhere). Each process is
 * relaunched with the same command line, as the plan does. Real seconds replace virtual ones:
 * `traffic` and `wait` take their seconds (a wait is capped), launches wait for readiness
 * within a liveness bound rather than a model time.
 *
 * Observed: port counters (`show port stats all`) around every traffic step, the back-ends'
 * VHOST_CONFIG logs (sessions, request names, ring bases), readiness lines. Model invariants
 * and the protocol properties that need ring or packet contents are reported `not-checked`
 * with the reason; nothing is inferred that the processes did not show.
 */
import { existsSync, rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createHash } from 'node:crypto';
import { walkSteps, unrolledLength, stepPath, type Scenario, type Step, type WalkedStep } from '../../sim/scenario.ts';
import { RESULT_FORMAT, MODEL_INVARIANTS, PROTOCOL_PROPERTIES, type RunResult, type PortCounters, type PropertyResult, type Verdict, scenarioSummary } from '../../sim/results.ts';
import { backendOptions, placeForwarding, shellQuote, testpmdArgs, virtioUserOptions, type NicDescription } from './options.ts';
import { generatorOptions, generatorRound, pmdAvailability } from './pvp.ts';
import { statsDelta } from './stats.ts';
import { createVethPair, vethAvailability, type VethPair } from './veth.ts';
import { RunDir } from './runtime.ts';
import { Testpmd, type OutputLine } from './testpmd.ts';
import { parseVhostLog, messageNames, eventsOf, type LogLine, type VhostSession } from './vhost-log.ts';
import { logToTraceText } from './log-to-trace.ts';
import type { PortStats } from './stats.ts';

/**
 * Where a PVP scenario's NIC and traffic come from: `veth` (this machine: af_packet on a veth
 * pair made for the run, a generator testpmd on its other end) or `external` (a lab: the host
 * takes `nic`, e.g. a PCI port, and an external generator sends; traffic is counted at the
 * host's NIC port).
 */
export type PvpNic = { kind: 'veth' } | { kind: 'external'; nic: NicDescription };

/** `--nic` values: `veth`, `pci:0000:af:00.0`, `af_packet:IFACE`, `tap:IFACE`. */
export function parseNicSpec(spec: string): PvpNic {
  if (spec === 'veth') return { kind: 'veth' };
  const i = spec.indexOf(':');
  const kind = i < 0 ? spec : spec.slice(0, i);
  const arg = i < 0 ? '' : spec.slice(i + 1);
  if (arg === '') throw new Error(`--nic ${spec}: expected veth, pci:ADDRESS, af_packet:IFACE or tap:IFACE`);
  if (kind === 'pci') {
    if (!/^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/.test(arg)) throw new Error(`--nic ${spec}: not a PCI address`);
    return { kind: 'external', nic: { kind: 'pci', address: arg } };
  }
  if (kind === 'af_packet') return { kind: 'external', nic: { kind: 'af_packet', iface: arg } };
  if (kind === 'tap') return { kind: 'external', nic: { kind: 'tap', iface: arg } };
  throw new Error(`--nic ${spec}: unknown kind '${kind}' (veth, pci, af_packet, tap)`);
}

/** What a PVP run on this NIC needs that is missing here, or undefined. */
export function pvpNicUnavailable(testpmd: string, nic: PvpNic = { kind: 'veth' }): string | undefined {
  if (nic.kind === 'external') return undefined;
  const v = vethAvailability();
  if (!v.ok) return `the veth stand-in for the NIC: ${v.reason}`;
  const p = pmdAvailability(testpmd, 'net_af_packet');
  return p.ok ? undefined : `the af_packet stand-in for the NIC: ${p.reason}`;
}
import { direction, type ObservedBase, type ObservedExpect, type ObservedSession, type ObservedTraffic, type RunObservation } from './compare.ts';

export interface RealRunOptions {
  testpmd: string;
  stdbuf: string | false;
  /** DPDK version string for the report. */
  version?: string;
  /** `-m` per testpmd; $VHOSTSIM_DPDK_MEM_MB or 256 (a 1 GiB back-end takes ~3 s to map guest memory). */
  memoryMb?: number;
  /** Liveness bound per start-up or readiness milestone (ms); 30 s. */
  timeoutMs?: number;
  /** `wait` steps longer than this (seconds) are cut to it, with a note; 10. */
  maxWaitSeconds?: number;
  /** The scenario's file, for the result. */
  file?: string;
  onProgress?: (e: RealProgress) => void;
  /** Echo testpmd output to stderr. */
  echo?: boolean;
  /** PVP scenarios: the NIC and generator; the veth stand-in by default. */
  nic?: PvpNic;
  /** PVP with the generator testpmd: frames per burst; 32. */
  burst?: number;
}

export interface RealProgress {
  /** 1-based step number (repeats unrolled) and the total. */
  index: number;
  total: number;
  label: string;
  phase: 'start' | 'end';
  /** Real seconds the step took (at `end`). */
  seconds?: number;
  note?: string;
}

/** Verdicts of a real run: results.ts's (`not-checked` for what a real run cannot judge). */
export type RealVerdict = Verdict;

export interface RealSessionReport {
  n: number;
  /** Which back-end process logged it (`vhost#0`, …) and the step that was running when it started. */
  process: string;
  openedBy: string;
  /** Position of that step in the run (repeats unrolled). */
  step?: number;
  startedBy: VhostSession['startedBy'];
  end: VhostSession['end'];
  ready: boolean;
  features?: string;
  protocolFeatures?: string;
  requests: string[];
  bases: ObservedBase[];
  /** Split rings: DPDK re-based to the guest's used->idx ("last_used_idx … mismatches"). */
  usedIdxResyncs: { lastUsedIdx: number; usedIdx: number }[];
}

export interface RealTrafficReport extends ObservedTraffic {
  seconds: number;
  /** PVP: generator rounds and the host ports' deltas (port 0 NIC, port 1 vhost). */
  rounds?: number;
  host?: { nicRx: number; nicTx: number; vhostRx: number; vhostTx: number; nicMissed: number };
  /** virtio-user's forward-engine TX-dropped for the step. */
  txDropped: number;
  reason: string;
}

/** What a real run adds to the model's result shape (results.ts has no place for it). */
export interface RealRunExtra {
  dpdk: { testpmd: string; version?: string; memoryMb: number };
  commandLines: { frontend: string; backend: string; generator?: string };
  /** PVP: the NIC and the generator port's counters at the end. */
  nic?: { description: NicDescription; generator: 'testpmd' | 'external'; veth?: { a: string; b: string }; generatorStats?: PortCounters };
  processes: { name: string; pid: number; exit?: { code: number | null; signal: string | null } }[];
  sessions: RealSessionReport[];
  traffic: RealTrafficReport[];
  notes: string[];
  /** Set when the run stopped before its last step. */
  error?: string;
}

/**
 * The result of a real run: results.ts's RunResult (`parseResult` accepts it; it drops `real`),
 * with the real-only details under `real`.
 */
export type RealRunResult = RunResult & { real: RealRunExtra };

export interface RealRunOutput {
  result: RealRunResult;
  observation: RunObservation;
  /** The message-level trace made from the back-ends' logs (log-to-trace.ts). */
  traceText: string;
  /** Every testpmd's full output, by process name. */
  logs: { name: string; text: string }[];
  /** The back-ends' output as the trace was made from it (its `line` fields count lines here). */
  backendLog: string;
}

/** Why this machine's real runner cannot run the scenario, or undefined when it can. */
export function realUnsupported(s: Scenario): string | undefined {
  if (s.topology === 'vm2vm') return "topology 'vm2vm' is not supported by the real runner (two VMs and iperf); use 'loopback' or 'pvp'";
  if (s.frontend === 'qemu-7.2') return "frontend 'qemu-7.2' needs QEMU 7.2 and a guest image; the real runner drives 'virtio-user-22.11' (as the VM in 'pvp')";
  if (s.topology === 'pvp' && s.vms !== 1) return `topology 'pvp' with ${s.vms} VMs: the real runner has one VM stand-in`;
  if (s.topology === 'pvp' && s.queues !== 1) return `topology 'pvp' with queues = ${s.queues}: the real runner runs PVP with one queue pair`;
  if (s.queues > 4) return `queues = ${s.queues}: the real runner supports 1–4 queue pairs`;
  const bo = s.options?.backend ?? {};
  if (bo.client === false) return "options.backend.client = false: the real runner runs the reconnect arrangement (vhost client=1, virtio-user server=1)";
  for (const k of ['inflight', 'patch', 'reconnect', 'reconnectPeriod'] as const) {
    if (bo[k] !== undefined) return `options.backend.${k} is a model switch with no testpmd equivalent`;
  }
  for (const w of walkSteps(s.steps)) {
    if (w.step.op === 'kill-backend' && w.step.at !== undefined) return `${stepPath(w.indices)}: a crash 'at' a time inside traffic is not supported on real processes`;
  }
  return undefined;
}

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hex = (v: bigint | undefined): string | undefined => (v === undefined ? undefined : `0x${v.toString(16)}`);

function stepLabel(st: Step): string {
  switch (st.op) {
    case 'launch-vm':
    case 'quit-vm':
    case 'kill-vm':
    case 'reboot-vm':
      return `${st.op} ${st.vm}`;
    case 'start-forwarding':
      return `start-forwarding ${st.side}${st.fwd ? ` ${st.fwd}` : ''}`;
    case 'stop-forwarding':
      return `stop-forwarding ${st.side}`;
    case 'traffic':
    case 'wait':
      return `${st.op} ${st.seconds} s`;
    case 'expect':
      return `expect ${st.what}`;
    default:
      return st.op;
  }
}

/** Runs `s` on real testpmd processes; throws before starting anything when unsupported. */
export async function runScenarioReal(s: Scenario, opts: RealRunOptions): Promise<RealRunOutput> {
  const why = realUnsupported(s);
  if (why) throw new Error(`cannot run '${s.name}' on real DPDK here: ${why}`);
  const runner = new ScenarioRun(s, opts);
  try {
    await runner.setUp();
    await runner.run();
  } finally {
    await runner.teardown();
  }
  return runner.output();
}

interface Restart {
  what: string;
  t: number;
  sessionsBefore: number;
}

/** A scenario on real processes; built and run by `runScenarioReal` (exported for tests with no DPDK). */
export class ScenarioRun {
  private readonly s: Scenario;
  private readonly o: RealRunOptions;
  private readonly memoryMb: number;
  private readonly timeoutMs: number;
  private readonly dir: RunDir;
  private readonly socket: string;
  private readonly t0 = now();
  private readonly wall0 = performance.now();
  private fe: Testpmd | undefined;
  private be: Testpmd | undefined;
  private readonly fes: Testpmd[] = [];
  private readonly bes: Testpmd[] = [];
  /** Per back-end: how many of its lines belong to the scenario (teardown output is cut off). */
  private readonly cut = new Map<Testpmd, number>();
  /** Whether the current virtio-user has had a back-end (its next one is a reconnect). */
  private feConnected = false;
  private readonly lastStats = new Map<Testpmd, PortStats[]>();
  private readonly stepStarts: { t: number; label: string; index: number }[] = [];
  private current = 0;
  private readonly expects: RealRunResult['expects'] = [];
  private readonly traffic: RealTrafficReport[] = [];
  private readonly expectSteps: number[] = [];
  private readonly notes: string[] = [];
  private error: string | undefined;
  private lastRestart: Restart | undefined;
  private readonly counts = { backendRestarts: 0, vmRestarts: 0, vmReboots: 0 };
  private backendLaunches = 0;
  /** Per restart: did a new session reach ready by the end of its step. */
  private readonly restartOutcomes: { what: string; ready: boolean }[] = [];
  private vmLaunches = 0;
  private readonly pvp: boolean;
  /** PVP: the host's NIC port, the veth pair and generator testpmd when they stand in. */
  private nic: NicDescription | undefined;
  private veth: VethPair | undefined;
  private gen: Testpmd | undefined;
  private genArgs: string[] | undefined;
  private drivers: string[] | undefined;
  private readonly burst: number;

  constructor(s: Scenario, o: RealRunOptions) {
    this.s = s;
    this.o = o;
    this.memoryMb = o.memoryMb ?? Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.pvp = s.topology === 'pvp';
    this.burst = o.burst ?? 32;
    this.dir = RunDir.create('real');
    this.socket = this.dir.socket('vhost-net.sock');
  }

  /** PVP: the NIC (veth pair made here, or the lab's) and the generator, before the first step. */
  async setUp(): Promise<void> {
    if (!this.pvp) return;
    const spec = this.o.nic ?? { kind: 'veth' };
    if (spec.kind === 'external') {
      this.nic = spec.nic;
      this.notes.push(`NIC ${describeNic(spec.nic)} with an external generator: traffic is what the host's NIC port received (sent) and transmitted (through) during each traffic step`);
      return;
    }
    const pmd = pmdAvailability(this.o.testpmd, 'net_af_packet');
    if (!pmd.ok) throw new Error(`PVP stand-in: ${pmd.reason}`);
    this.drivers = pmd.drivers.length ? pmd.drivers : undefined;
    this.veth = createVethPair();
    this.nic = { kind: 'af_packet', iface: this.veth.a };
    this.genArgs = testpmdArgs(generatorOptions({ filePrefix: this.dir.prefix('gen'), nic: { kind: 'af_packet', iface: this.veth.b }, forwardLcore: 1, memoryMb: this.memoryMb, drivers: this.drivers, burst: this.burst }));
    const gen = this.launch('generator', this.genArgs);
    this.gen = gen;
    await gen.waitForPrompt(1, this.timeoutMs);
  }

  // ---- processes ------------------------------------------------------------------------------

  private frontendArgs(prefix: string): string[] {
    const fo = this.s.options?.frontend ?? {};
    return testpmdArgs(
      virtioUserOptions({
        filePrefix: prefix,
        socket: this.socket,
        queues: this.s.queues,
        queueSize: this.s.queueSize,
        packed: this.s.ring === 'packed',
        mrgRxbuf: this.s.mrgRxbuf,
        ...(fo.inOrder !== undefined ? { inOrder: fo.inOrder } : {}),
        ...(fo.cq !== undefined ? { cq: fo.cq } : {}),
        memoryMb: this.memoryMb,
        placement: placeForwarding(1),
        // PVP: one port, frames swapped back out of the port they came in on.
        ...(this.pvp ? { app: { portTopology: 'loop' as const, forwardMode: 'mac' as const, burst: this.burst } } : {}),
      }),
    );
  }

  private backendArgs(prefix: string): string[] {
    const bo = this.s.options?.backend ?? {};
    const extra: Record<string, boolean> = {};
    if (bo.tso !== undefined) extra.tso = bo.tso;
    if (bo.iommuSupport !== undefined) extra['iommu-support'] = bo.iommuSupport;
    if (bo.postcopySupport !== undefined) extra['postcopy-support'] = bo.postcopySupport;
    if (bo.linearBuffer !== undefined) extra['linear-buffer'] = bo.linearBuffer;
    if (bo.extBuffer !== undefined) extra['ext-buffer'] = bo.extBuffer;
    const host = this.s.options?.testpmd?.host ?? {};
    return testpmdArgs(
      backendOptions({
        filePrefix: prefix,
        sockets: this.socket,
        queues: this.s.queues,
        memoryMb: this.memoryMb,
        placement: placeForwarding(0),
        ...(this.nic ? { nic: this.nic } : {}),
        ...(this.drivers ? { drivers: this.drivers } : {}),
        // A PCI NIC needs DMA-able memory.
        ...(this.nic?.kind === 'pci' ? { hugepages: true } : {}),
        ...(Object.keys(extra).length ? { vhostExtra: extra } : {}),
        app: {
          ...(this.pvp ? { burst: this.burst } : {}),
          ...(host.nbCores !== undefined ? { nbCores: host.nbCores } : {}),
          ...(host.txd !== undefined ? { txd: host.txd } : {}),
          ...(host.rxd !== undefined ? { rxd: host.rxd } : {}),
          ...(host.portTopology !== undefined ? { portTopology: host.portTopology } : {}),
        },
      }),
    );
  }

  private launch(name: string, args: string[]): Testpmd {
    return Testpmd.launch({ testpmd: this.o.testpmd, stdbuf: this.o.stdbuf, args, name, ...(this.o.echo ? { echo: true } : {}) });
  }

  /** Waits for a milestone within the liveness bound; a miss becomes a note, not an exception. */
  private async milestone(what: string, p: Promise<unknown>): Promise<boolean> {
    try {
      await p;
      return true;
    } catch (e) {
      this.notes.push(`${what}: ${(e as Error).message.split('\n')[0]}`);
      return false;
    }
  }

  private async launchVm(): Promise<void> {
    // virtio-user binds without unlinking: a socket left by a killed process must go first.
    if (existsSync(this.socket)) rmSync(this.socket, { force: true });
    const be = this.be?.running ? this.be : undefined;
    const beMark = be?.mark() ?? 0;
    const fe = this.launch(`virtio-user#${this.fes.length}`, this.frontendArgs(this.dir.prefix('vu')));
    this.fe = fe;
    this.fes.push(fe);
    this.feConnected = false;
    await fe.waitFor('waiting for client connection', { timeoutMs: this.timeoutMs });
    if (be) {
      // The back-end retries every second: it connects, and the device becomes ready.
      const ok = await this.milestone('virtio-user relaunch', Promise.all([be.waitFor('virtio is now ready for processing', { since: beMark, timeoutMs: this.timeoutMs }), fe.waitForPrompt(1, this.timeoutMs)]));
      if (ok) this.feConnected = true;
    }
  }

  private async launchBackend(): Promise<void> {
    const fe = this.fe?.running ? this.fe : undefined;
    const feMark = fe?.mark() ?? 0;
    const reconnect = this.feConnected;
    const be = this.launch(`vhost#${this.bes.length}`, this.backendArgs(this.dir.prefix('vhost')));
    this.be = be;
    this.bes.push(be);
    if (!fe) {
      await be.waitForPrompt(1, this.timeoutMs);
      return;
    }
    const ok = await this.milestone(
      'back-end launch',
      Promise.all([be.waitFor('virtio is now ready for processing', { timeoutMs: this.timeoutMs }), be.waitForPrompt(1, this.timeoutMs), fe.waitForPrompt(1, this.timeoutMs)]),
    );
    if (ok && reconnect) await this.milestone('virtio-user reconnect', fe.waitFor('virtio-user reconnection succeeds', { since: feMark, timeoutMs: 10_000 }));
    if (ok) this.feConnected = true;
  }

  private async stopBackend(mode: 'quit' | 'kill'): Promise<void> {
    const be = this.be;
    if (!be?.running) return;
    await this.snapshot(be);
    this.be = undefined;
    if (mode === 'quit') await be.quit();
    else await be.kill();
    this.cut.set(be, be.lines.length);
    // Let virtio-user see the socket close before the next step (the model runs 1 ms).
    await sleep(200);
  }

  private async stopVm(mode: 'quit' | 'kill'): Promise<void> {
    const fe = this.fe;
    if (!fe?.running) return;
    await this.snapshot(fe);
    this.fe = undefined;
    this.feConnected = false;
    const be = this.be?.running ? this.be : undefined;
    const mark = be?.mark() ?? 0;
    // Before its prompt (server=1 still waiting for a back-end) testpmd reads no stdin: `quit` cannot reach it.
    if (mode === 'quit' && fe.prompts === 0) this.notes.push(`${fe.name} was still waiting for a back-end: SIGKILL instead of quit`);
    if (mode === 'quit' && fe.prompts > 0) await fe.quit();
    else await fe.kill();
    if (be) await this.milestone(`virtio-user ${mode}`, be.waitFor('vhost peer closed', { since: mark, timeoutMs: 5_000 }));
  }

  /** Port counters of a process at its prompt, remembered as its last known. */
  private async snapshot(p: Testpmd): Promise<PortStats | undefined> {
    return (await this.snapshotAll(p))?.[0];
  }

  /** Every port's counters (PVP host: port 0 NIC, port 1 vhost). */
  private async snapshotAll(p: Testpmd): Promise<PortStats[] | undefined> {
    if (!p.running || p.prompts === 0) return this.lastStats.get(p);
    try {
      const st = await p.portStats();
      if (st.length) this.lastStats.set(p, st);
      return st.length ? st : this.lastStats.get(p);
    } catch (e) {
      this.notes.push(`${p.name}: show port stats failed: ${(e as Error).message.split('\n')[0]}`);
      return this.lastStats.get(p);
    }
  }

  /** The process is up and past start-up (virtio-user server=1 blocks before its prompt until a back-end connects). */
  private atPrompt(p: Testpmd | undefined): Testpmd | undefined {
    return p !== undefined && p.running && p.prompts > 0 ? p : undefined;
  }

  // ---- steps ----------------------------------------------------------------------------------

  async run(): Promise<void> {
    const walked = [...walkSteps(this.s.steps)];
    const total = unrolledLength(this.s.steps);
    for (let k = 0; k < walked.length; k++) {
      const w = walked[k]!;
      const label = `${stepPath(w.indices)}${w.iteration.length ? ` #${w.iteration.map((i) => i + 1).join('.')}` : ''} ${stepLabel(w.step)}`;
      this.stepStarts.push({ t: now(), label, index: k });
      this.current = k;
      this.o.onProgress?.({ index: k + 1, total, label, phase: 'start' });
      const t = performance.now();
      const notesBefore = this.notes.length;
      try {
        await this.step(w);
      } catch (e) {
        this.error = `${label}: ${(e as Error).message}`;
        this.o.onProgress?.({ index: k + 1, total, label, phase: 'end', seconds: (performance.now() - t) / 1000, note: `stopped: ${(e as Error).message.split('\n')[0]}` });
        return;
      }
      const note = this.notes.slice(notesBefore).join('; ');
      this.o.onProgress?.({ index: k + 1, total, label, phase: 'end', seconds: (performance.now() - t) / 1000, ...(note ? { note } : {}) });
    }
  }

  private async step(w: WalkedStep): Promise<void> {
    const st = w.step;
    switch (st.op) {
      case 'launch-backend': {
        const restart = this.backendLaunches > 0;
        this.backendLaunches++;
        if (restart) this.counts.backendRestarts++;
        const r = this.markRestart('back-end');
        await this.launchBackend();
        if (restart || this.fe?.running) {
          this.lastRestart = r;
          this.restartDone(r);
        }
        break;
      }
      case 'quit-backend':
      case 'kill-backend':
        await this.stopBackend(st.op === 'quit-backend' ? 'quit' : 'kill');
        break;
      case 'launch-vm': {
        if (this.vmLaunches++ > 0) this.counts.vmRestarts++;
        const r = this.markRestart(`vm${st.vm}`);
        await this.launchVm();
        this.lastRestart = r;
        if (this.be?.running) this.restartDone(r);
        break;
      }
      case 'quit-vm':
      case 'kill-vm':
        await this.stopVm(st.op === 'quit-vm' ? 'quit' : 'kill');
        break;
      case 'reboot-vm': {
        // No guest OS to reboot: virtio-user's device reset is its testpmd quitting and a new one probing.
        this.counts.vmReboots++;
        const r = this.markRestart(`vm${st.vm} reboot`);
        await this.stopVm('quit');
        await this.launchVm();
        this.lastRestart = r;
        if (this.be?.running) this.restartDone(r);
        break;
      }
      case 'start-forwarding': {
        const p = this.atPrompt(st.side === 'host' ? this.be : this.fe);
        if (!p) {
          this.notes.push(`start-forwarding ${st.side}: no ${st.side === 'host' ? 'back-end' : 'virtio-user'} testpmd at its prompt`);
          break;
        }
        if (st.fwd) await p.setForwardMode(st.fwd);
        await p.start();
        break;
      }
      case 'stop-forwarding': {
        const p = this.atPrompt(st.side === 'host' ? this.be : this.fe);
        if (p) await p.stop();
        break;
      }
      case 'traffic':
        await this.runTraffic(w, st.seconds);
        break;
      case 'wait': {
        const cap = this.o.maxWaitSeconds ?? 10;
        if (st.seconds > cap) this.notes.push(`wait ${st.seconds} s cut to ${cap} s of real time`);
        await sleep(Math.min(st.seconds, cap) * 1000);
        break;
      }
      case 'expect':
        this.doExpect(w);
        break;
    }
  }

  private markRestart(what: string): Restart {
    return { what, t: now(), sessionsBefore: this.backendLog().sessions.length };
  }

  private restartDone(r: Restart): void {
    this.restartOutcomes.push({ what: r.what, ready: this.backendLog().sessions.slice(r.sessionsBefore).some((x) => x.ready) });
  }

  /**
   * PVP traffic: generator rounds (`start tx_first N`, counted back at its RX) spread over the
   * step, as many frames as the step's rate × seconds asks within what a round can carry
   * (ROUND_BURSTS × burst frames, ROUNDS_PER_SECOND rounds a second). Without a generator here
   * (a lab's), the step's real seconds pass and the host's NIC port counters tell.
   */
  private async runPvpTraffic(w: WalkedStep, st: Extract<Step, { op: 'traffic' }>): Promise<void> {
    const seconds = st.seconds;
    const base = { step: this.current, path: stepPath(w.indices), iteration: w.iteration, direction: direction(this.s), seconds };
    const be = this.atPrompt(this.be);
    const h0 = be ? await this.snapshotAll(be) : undefined;
    const t0 = performance.now();
    let sent = 0;
    let through = 0;
    let rounds = 0;
    const gen = this.gen;
    if (gen) {
      const n = Math.max(1, Math.round(seconds * ROUNDS_PER_SECOND));
      const wanted = st.rate !== undefined ? st.rate * seconds : Infinity;
      const bursts = Math.max(1, Math.min(ROUND_BURSTS, Math.ceil(wanted / n / this.burst)));
      const budget = seconds * 1000;
      for (let k = 0; k < n; k++) {
        const left = budget - (performance.now() - t0);
        // Each round gets its share of what is left, but at least a liveness-sized window to come back.
        const r = await generatorRound(gen, bursts, { timeoutMs: Math.max(MIN_ROUND_MS, left / (n - k)) });
        sent += r.sent;
        through += r.received;
        rounds++;
      }
    } else await sleep(seconds * 1000);
    await sleep(50);
    const h1 = be && this.be === be && this.atPrompt(be) ? await this.snapshotAll(be) : undefined;
    const d = h0 && h1 ? statsDelta(h0, h1) : undefined;
    const port = (i: number): PortStats | undefined => d?.find((x) => x.port === i);
    const host = d ? { nicRx: port(0)?.rxPackets ?? 0, nicTx: port(0)?.txPackets ?? 0, vhostRx: port(1)?.rxPackets ?? 0, vhostTx: port(1)?.txPackets ?? 0, nicMissed: port(0)?.rxMissed ?? 0 } : undefined;
    if (!gen) {
      sent = host?.nicRx ?? 0;
      through = host?.nicTx ?? 0;
    }
    const took = ((performance.now() - t0) / 1000).toFixed(2);
    const hostText = host ? `; host NIC RX ${host.nicRx} → vhost TX ${host.vhostTx}, vhost RX ${host.vhostRx} → NIC TX ${host.nicTx}` : '; no back-end at its prompt';
    const reason = gen
      ? `generator (af_packet on ${this.veth?.b}) sent ${sent} frames in ${rounds} round(s), ${through} came back through the VM in ${took} s${hostText}`
      : `external generator: the host's NIC port received ${sent} and sent ${through} frames in ${seconds} s${hostText}`;
    this.traffic.push({ ...base, sent, through, ok: through > 0, txDropped: 0, reason, ...(gen ? { rounds } : {}), ...(host ? { host } : {}) });
  }

  private async runTraffic(w: WalkedStep, seconds: number): Promise<void> {
    if (this.pvp) return this.runPvpTraffic(w, w.step as Extract<Step, { op: 'traffic' }>);
    const base = { step: this.current, path: stepPath(w.indices), iteration: w.iteration, direction: direction(this.s), seconds };
    const fe = this.atPrompt(this.fe);
    const be = this.be;
    if (!fe) {
      await sleep(seconds * 1000);
      const reason = this.fe?.running ? 'virtio-user is still waiting for a back-end' : 'no virtio-user port running';
      this.traffic.push({ ...base, sent: 0, through: 0, ok: false, txDropped: 0, reason });
      return;
    }
    const f0 = await this.snapshot(fe);
    const b0 = be && this.atPrompt(be) ? await this.snapshot(be) : undefined;
    await fe.setForwardMode('txonly');
    await fe.start();
    await sleep(seconds * 1000);
    const fwd = await fe.stop();
    // Let the back-end's last bursts land before counting.
    await sleep(100);
    const f1 = await this.snapshot(fe);
    const b1 = be && this.be === be && this.atPrompt(be) ? await this.snapshot(be) : undefined;
    const sent = f1 && f0 ? f1.txPackets - f0.txPackets : 0;
    const through = b1 && b0 ? b1.rxPackets - b0.rxPackets : 0;
    const txDropped = fwd.find((x) => x.port === 0)?.txDropped ?? 0;
    const reason = b0
      ? `testpmd txonly on virtio-user → host vhost port: ${through} of ${sent} packets received by the host in ${seconds} s (${txDropped} TX-dropped at virtio-user)`
      : `no back-end running: ${sent} packets sent, none received`;
    this.traffic.push({ ...base, sent, through, ok: through > 0, txDropped, reason });
  }

  private doExpect(w: WalkedStep): void {
    const st = w.step as Extract<Step, { op: 'expect' }>;
    const base = { path: stepPath(w.indices), iteration: w.iteration, what: st.what, ...(st.vm !== undefined ? { vm: st.vm } : {}), ...(st.planStep ? { planStep: st.planStep } : {}), t: (now() - this.t0) / 1000 };
    let verdict: RealVerdict = 'holds';
    let reason = '';
    let evidence: Record<string, unknown> = {};
    switch (st.what) {
      case 'traffic-flows': {
        const t = this.traffic[this.traffic.length - 1];
        if (!t) {
          verdict = 'violated';
          reason = 'no traffic step ran before this check';
          break;
        }
        evidence = { sent: t.sent, through: t.through, txDropped: t.txDropped, seconds: t.seconds };
        verdict = t.ok ? 'holds' : 'violated';
        reason = t.ok ? t.reason : `traffic did not flow: ${t.reason}`;
        break;
      }
      case 'reconnected': {
        const r = this.lastRestart;
        const log = this.backendLog();
        const fresh = r ? log.sessions.slice(r.sessionsBefore) : [];
        const ready = fresh.find((x) => x.ready);
        const readyAt = ready ? eventsOf(ready, 'ready')[0]?.t : undefined;
        const took = r && readyAt !== undefined ? (readyAt - r.t) / 1000 : undefined;
        const within = st.within === undefined || (took !== undefined && took <= st.within);
        evidence = { restart: r?.what, sessionsSinceRestart: fresh.length, readySessions: fresh.filter((x) => x.ready).length, ...(took !== undefined ? { readyAfterSeconds: Math.round(took * 1000) / 1000 } : {}) };
        if (r && ready && within) reason = `${r.what} restart: ${fresh.length} new session(s) in the back-end's log, ready ${took?.toFixed(3)} s (real) after the restart began`;
        else {
          verdict = 'violated';
          reason = !r ? 'no restart happened before this check' : !ready ? `no new session reached ready in the back-end's log after the ${r.what} restart` : `ready after ${took?.toFixed(3)} s of real time, more than ${st.within} s`;
        }
        break;
      }
      case 'features-stable': {
        const sessions = this.backendLog().sessions.filter((x) => x.features !== undefined);
        const first = sessions[0]?.features;
        const bad = sessions.filter((x) => x.features !== first);
        evidence = { sessions: sessions.length, features: hex(first) };
        verdict = bad.length === 0 ? 'holds' : 'violated';
        reason = bad.length === 0 ? `${sessions.length} session(s) negotiated ${hex(first)}` : `session(s) ${bad.map((x) => x.index + 1).join(', ')} negotiated other features than the first`;
        break;
      }
      default:
        verdict = 'not-checked';
        reason = NOT_CHECKED_EXPECT[st.what] ?? 'not observable on a real run';
    }
    this.expects.push({ ...base, verdict, reason, evidence });
    this.expectSteps.push(this.current);
  }

  // ---- logs -----------------------------------------------------------------------------------

  /** The back-ends' output in launch order, each cut where the scenario ended for it. */
  private backendLines(): (LogLine & { proc: string })[] {
    return this.bes.flatMap((b) => b.lines.slice(0, this.cut.get(b) ?? b.lines.length).map((l: OutputLine) => ({ text: l.text, t: l.t, proc: b.name })));
  }

  private backendLog(): ReturnType<typeof parseVhostLog> {
    return parseVhostLog(this.backendLines(), { ended: true });
  }

  private openedBy(t: number | undefined): { label: string; step?: number } {
    if (t === undefined) return { label: '?' };
    let found: { label: string; step?: number } = { label: '(before the first step)' };
    for (const s of this.stepStarts) if (s.t <= t) found = { label: s.label, step: s.index };
    return found;
  }

  async teardown(): Promise<void> {
    // Stats and log cut-off first: what the teardown makes the processes print is not the scenario's.
    for (const p of [this.be, this.fe, this.gen]) if (p?.running) await this.snapshotAll(p).catch(() => undefined);
    for (const b of this.bes) if (!this.cut.has(b)) this.cut.set(b, b.lines.length);
    this.elapsed = (performance.now() - this.wall0) / 1000;
    try {
      if (this.fe?.running && this.fe.prompts > 0) await this.fe.quit(10_000);
      if (this.be?.running) await this.be.quit(10_000);
      if (this.gen?.running && this.gen.prompts > 0) await this.gen.quit(10_000);
    } finally {
      await Promise.all([...this.fes, ...this.bes, ...(this.gen ? [this.gen] : [])].map((p) => p.kill()));
      this.veth?.delete();
      this.dir.dispose();
    }
  }
  private elapsed = 0;

  output(): RealRunOutput {
    const s = this.s;
    const lines = this.backendLines();
    const log = parseVhostLog(lines, { ended: true });
    const sessions: RealSessionReport[] = log.sessions.map((x, i) => {
      const bases: ObservedBase[] = [];
      for (const e of x.events) {
        if (e.kind === 'set-vring-base') bases.push({ request: 'SET_VRING_BASE', vring: e.index, value: e.lastAvailIdx });
        else if (e.kind === 'get-vring-base') bases.push({ request: 'GET_VRING_BASE', vring: e.index, value: e.num });
      }
      const first = x.events[0];
      const firstLine = first ? lines[first.line] : undefined;
      const opened = this.openedBy(first?.t);
      return {
        n: i + 1,
        process: firstLine?.proc ?? '?',
        openedBy: opened.label,
        ...(opened.step !== undefined ? { step: opened.step } : {}),
        startedBy: x.startedBy,
        end: x.end,
        ready: x.ready,
        ...(x.features !== undefined ? { features: hex(x.features)! } : {}),
        ...(x.protocolFeatures !== undefined ? { protocolFeatures: hex(x.protocolFeatures)! } : {}),
        requests: messageNames(x),
        bases,
        usedIdxResyncs: eventsOf(x, 'used-idx-mismatch').map((m) => ({ lastUsedIdx: m.lastUsedIdx, usedIdx: m.usedIdx })),
      };
    });
    const traceText = logToTraceText(lines, { ended: true });
    const traceRecords = traceText === '' ? 0 : traceText.trimEnd().split('\n').length;

    const portStats: RunResult['portStats'] = [];
    const last = (list: Testpmd[]): PortStats[] | undefined => {
      for (let i = list.length - 1; i >= 0; i--) {
        const st = this.lastStats.get(list[i]!);
        if (st) return st;
      }
      return undefined;
    };
    const hostStats = last(this.bes);
    const vmStats = last(this.fes);
    // PVP host: port 0 is the NIC, port 1 the vhost port; loopback: port 0 is the vhost port.
    if (hostStats) portStats.push({ instance: 'host', ports: hostStats.map((p) => counters(p, this.pvp && p.port === 0 ? 'nic' : 'vhost')) });
    if (vmStats) portStats.push({ instance: 'vm0', ports: vmStats.map((p) => counters(p, 'virtio')) });
    const genStats = this.gen ? this.lastStats.get(this.gen)?.[0] : undefined;

    const sent = this.traffic.reduce((n, t) => n + t.sent, 0);
    const through = this.traffic.reduce((n, t) => n + t.through, 0);
    const txDropped = this.traffic.reduce((n, t) => n + t.txDropped, 0);
    const featuresOk = log.sessions.filter((x) => x.features !== undefined).every((x, _i, all) => x.features === all[0]!.features);
    const restarts = this.restartOutcomes.length;
    const notReady = this.restartOutcomes.filter((r) => !r.ready);

    const result: RealRunResult = {
      format: RESULT_FORMAT,
      scenario: scenarioSummary(s, this.o.file),
      // A real run has no seed; 0 says so.
      seed: 0,
      expects: this.expects,
      invariants: MODEL_INVARIANTS.map((name) => ({ name, verdict: 'not-checked' as const, checks: 0, reason: NOT_CHECKED_INVARIANT[name] })),
      properties: PROTOCOL_PROPERTIES.map((name): PropertyResult => {
        if (name === 'features-stable') {
          return { name, verdict: featuresOk ? 'holds' : 'violated', checks: Math.max(0, log.sessions.length - 1), reason: featuresOk ? `every session negotiated the features of the first (back-end log)` : 'a session negotiated other features than the first (back-end log)' };
        }
        if (name === 'liveness') {
          const idle = this.traffic.filter((t) => !t.ok).length;
          const ok = notReady.length === 0 && idle === 0 && !this.error;
          return {
            name,
            verdict: ok ? 'holds' : 'violated',
            checks: restarts,
            reason: ok
              ? `${restarts} restart(s), each reached ready within the ${this.timeoutMs / 1000} s liveness bound; traffic flowed in every traffic step`
              : [this.error ? `run stopped (${this.error.split('\n')[0]})` : '', notReady.length ? `not ready after: ${notReady.map((r) => r.what).join(', ')}` : '', idle ? `${idle} traffic step(s) without packets through` : ''].filter(Boolean).join('; '),
          };
        }
        return { name, verdict: 'not-checked', checks: 0, reason: NOT_CHECKED_PROPERTY[name] ?? 'not observable on a real run' };
      }),
      portStats,
      counts: {
        reconnects: Math.max(0, log.sessions.length - 1),
        ...this.counts,
        packetsSent: sent,
        packetsThrough: through,
        // txonly frames carry no sequence numbers: duplicates are not observable (see properties).
        duplicates: 0,
        drops: [
          ...(txDropped > 0 ? [{ reason: 'ring-full', where: 'vm0 port 0 (virtio-user TX-dropped)', count: txDropped }] : []),
          // PVP: frames the generator sent that did not come back; where they were lost is not observed.
          ...(this.pvp && sent > through ? [{ reason: 'not-returned', where: 'generator → host → vm0 → host → generator', count: sent - through }] : []),
        ],
      },
      // No virtual time on a real run.
      virtualSeconds: 0,
      wallSeconds: this.elapsed,
      trace: { records: traceRecords, sha256: createHash('sha256').update(traceText).digest('hex') },
      real: {
        dpdk: { testpmd: this.o.testpmd, ...(this.o.version ? { version: this.o.version } : {}), memoryMb: this.memoryMb },
        commandLines: {
          frontend: shellQuote([this.o.testpmd, ...(this.fes[0]?.args ?? this.frontendArgs('PREFIX'))]),
          backend: shellQuote([this.o.testpmd, ...(this.bes[0]?.args ?? this.backendArgs('PREFIX'))]),
          ...(this.genArgs ? { generator: shellQuote([this.o.testpmd, ...this.genArgs]) } : {}),
        },
        ...(this.nic
          ? { nic: { description: this.nic, generator: this.gen ? ('testpmd' as const) : ('external' as const), ...(this.veth ? { veth: { a: this.veth.a, b: this.veth.b } } : {}), ...(genStats ? { generatorStats: counters(genStats, 'nic') } : {}) } }
          : {}),
        processes: [...this.fes, ...this.bes, ...(this.gen ? [this.gen] : [])].map((p) => ({ name: p.name, pid: p.pid, ...(p.exitInfo ? { exit: { code: p.exitInfo.code, signal: p.exitInfo.signal } } : {}) })),
        sessions,
        traffic: this.traffic,
        notes: [
          'virtualSeconds is 0: a real run has no virtual time (wallSeconds is real); seed is 0: a real run has none',
          'counts.duplicates is 0 because txonly frames carry no sequence numbers: duplicates are not observable',
          ...this.notes,
        ],
        ...(this.error ? { error: this.error } : {}),
      },
    };
    const observation: RunObservation = {
      side: 'real',
      expects: this.expects.map((e, i): ObservedExpect => ({ step: this.expectSteps[i], path: e.path, iteration: e.iteration, what: e.what, verdict: e.verdict, reason: e.reason })),
      sessions: sessions.map((x): ObservedSession => ({ n: x.n, requests: x.requests, bases: x.bases, ready: x.ready, openedBy: x.openedBy, ...(x.step !== undefined ? { step: x.step } : {}) })),
      traffic: this.traffic.map(({ step, path, iteration, direction: d, sent: se, through: th, ok }) => ({ ...(step !== undefined ? { step } : {}), path, iteration, direction: d, sent: se, through: th, ok })),
    };
    const logs = [...this.fes, ...this.bes, ...(this.gen ? [this.gen] : [])].map((p) => ({ name: p.name, text: p.text() }));
    return { result, observation, traceText, logs, backendLog: lines.map((l) => l.text).join('\n') + '\n' };
  }
}

/** PVP generator rounds: at most this many bursts each, this many a second, each waited at least this long. */
const ROUND_BURSTS = 8;
const ROUNDS_PER_SECOND = 4;
const MIN_ROUND_MS = 250;

function describeNic(n: NicDescription): string {
  switch (n.kind) {
    case 'pci':
      return `PCI ${n.address}`;
    case 'pcap':
      return `pcap ${n.iface ?? n.rxPcap ?? ''}`;
    default:
      return `${n.kind} ${n.iface}`;
  }
}

const NOT_CHECKED_INVARIANT: Record<(typeof MODEL_INVARIANTS)[number], string> = {
  'memory-safety': "a model invariant: it concerns vhostsim's own ring code, which a real run does not execute",
  'well-formed-messages': 'a model invariant: the real messages are not captured byte by byte (the back-end log names them but does not carry their bytes)',
  'trace-complete': 'a model invariant: the trace of a real run is made from the back-end log, which has no replies and partial payloads',
  deterministic: 'a model invariant: real runs are not seeded and not repeatable event for event',
};

const NOT_CHECKED_PROPERTY: Partial<Record<(typeof PROTOCOL_PROPERTIES)[number], string>> = {
  'ring-well-formed': 'needs the ring contents in guest memory, which the real processes do not expose',
  'no-duplicate-delivery': 'txonly frames carry no sequence numbers: duplicates are not observable',
  'bounded-loss': 'loss per packet is not observable with txonly (no sequence numbers) and real rates differ from the model',
  'ring-state-survives-reconnect': "the driver's ring position is not visible outside virtio-user; only the bases in the back-end log are (reported per session)",
};

const NOT_CHECKED_EXPECT: Partial<Record<string, string>> = {
  'no-duplicates': NOT_CHECKED_PROPERTY['no-duplicate-delivery'],
  'loss-within-bound': NOT_CHECKED_PROPERTY['bounded-loss'],
  'ring-resumed': NOT_CHECKED_PROPERTY['ring-state-survives-reconnect'],
};

function counters(p: PortStats, kind: PortCounters['kind']): PortCounters {
  return {
    port: p.port,
    kind,
    rxPackets: p.rxPackets,
    rxMissed: p.rxMissed,
    rxBytes: p.rxBytes,
    rxErrors: p.rxErrors,
    rxNombuf: p.rxNombuf,
    txPackets: p.txPackets,
    txErrors: p.txErrors,
    txBytes: p.txBytes,
  };
}
