/**
 * The result of one scenario run (DESIGN.md "Formats", "Invariants and properties"): every
 * `expect` with its verdict and evidence, every model invariant (a violation is a vhostsim bug),
 * every protocol property (a failure of the modelled real versions is a finding, reported with
 * its mechanism), testpmd-style port statistics, counts, times and a pointer to the trace.
 * Model invariants and protocol properties are kept in separate lists and never mixed.
 *
 * The TypeScript types are what runners write; `parseResult` reads a result back with zod.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { EXPECT_WHATS, RING_KINDS, TOPOLOGIES, FRONTENDS, BACKENDS, GUESTS, type ExpectWhat, type RingKind, type Scenario, type Topology } from './scenario.ts';

export const RESULT_FORMAT = 'vhostsim-result/1';

/**
 * - `holds`: the check passed;
 * - `fails-as-modelled`: it failed, and the model explains why: a modelled real version's
 *   behaviour (named in `mechanism`) causes it — a finding about DPDK or QEMU, not a vhostsim bug;
 * - `violated`: it failed and nothing modelled explains it;
 * - `not-checked`: the run could not judge it (a real run: no ring contents, no seed), `reason` says why.
 */
export const VERDICTS = ['holds', 'fails-as-modelled', 'violated', 'not-checked'] as const;
export type Verdict = (typeof VERDICTS)[number];

/** Hold in every run; a violation is a bug in vhostsim (DESIGN.md). */
export const MODEL_INVARIANTS = ['memory-safety', 'well-formed-messages', 'trace-complete', 'deterministic'] as const;
export type ModelInvariant = (typeof MODEL_INVARIANTS)[number];

/** What the test plan and users care about; the modelled versions may fail one (DESIGN.md). */
export const PROTOCOL_PROPERTIES = [
  'ring-well-formed',
  'no-duplicate-delivery',
  'bounded-loss',
  'ring-state-survives-reconnect',
  'features-stable',
  'liveness',
] as const;
export type ProtocolProperty = (typeof PROTOCOL_PROPERTIES)[number];

/** Where drops are attributed. Free text is allowed for causes a runner adds. */
export const DROP_REASONS = [
  /** Generator traffic arriving while no back-end polls the NIC (testpmd RX-missed). */
  'backend-down',
  /** The guest had no RX buffers posted (not started, or rebooting). */
  'guest-not-ready',
  /** Buffers in flight when a back-end died without inflight tracking (models/session.ts allowedLoss). */
  'in-flight-at-crash',
  /** Packed ring reset on reconnect (virtio-user). */
  'ring-reset',
  /** A ring resumed at the wrong position and the driver's buffers were skipped. */
  'ring-resume-mismatch',
  /** Ring full, back-pressure at the generator or NIC. */
  'ring-full',
  /** Link down during the restart window. */
  'link-down',
  /** Packets a VM held (RX ring unread, in its testpmd, TX not yet taken) when it was killed, and those the back-end put on its RX ring after. */
  'vm-killed',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

// ---- types --------------------------------------------------------------------------------------

/** A point in the run where something happened, for "first violation" and evidence. */
export interface EventRef {
  /** Virtual seconds. */
  t: number;
  /** What happened: `"b2f GET_VRING_BASE reply"`, `"kill-backend"`, `"pop vring 1"`. */
  event: string;
  /** 1-based line in the trace file, when the event is a trace record. */
  traceLine?: number;
  /** Sequence number of the scheduler event it happened in (src/sim/scheduler.ts), when known. */
  seq?: number;
  /** Scenario step path, when it happened in a step's own action rather than in a scheduler event. */
  step?: string;
}

/** When a check ran: after every scheduler event and step action, or once over the whole run. */
export const CHECK_TIMES = ['every-event', 'end-of-run'] as const;
export type CheckTime = (typeof CHECK_TIMES)[number];

/** Evidence that the per-event checks ran: how many events and step actions they covered. */
export interface Monitoring {
  /** Scheduler events after which every per-event check ran (all the events of the run). */
  checkedAfterEveryEvent: number;
  /** Step actions (launch, kill, …) run outside an event, checked after each as well. */
  checkedAfterSteps: number;
  /** Names of the invariants and properties checked after every event. */
  perEvent: string[];
  /** Those judged on the whole run (they need its end: loss, resumes, liveness). */
  endOfRun: string[];
}

/** One message value that explains a failure: "SET_VRING_BASE carried 0x8000 on vring 1". */
export interface MechanismMessage {
  dir: 'f2b' | 'b2f';
  request: string;
  vring?: number;
  field?: string;
  /** Numbers as numbers; features and other u64 values as hex strings. */
  value: number | string;
  /** Connection number (1 = first). */
  connection?: number;
  at?: EventRef;
}

/** Why a check fails as modelled: which state was lost, which message carried which value, which profile. */
export interface Mechanism {
  summary: string;
  /** The profile whose modelled behaviour causes it (`qemu-7.2`, `dpdk-22.11`, `virtio-user-22.11`). */
  profile: string;
  /** State that did not survive: `"last_avail_idx (packed, vring 1)"`. */
  lostState?: string[];
  messages?: MechanismMessage[];
  /** Fact-sheet section or upstream commit: `"facts §5.4"`, `"DPDK 6ebbf4109f"`. */
  reference?: string;
}

export interface ExpectResult {
  /** Scenario path of the step: `steps[5].repeat.steps[3]` (src/sim/scenario.ts stepPath). */
  path: string;
  /** 0-based iteration of each enclosing repeat, outermost first. */
  iteration: number[];
  what: ExpectWhat;
  vm?: number;
  planStep?: string;
  /** Virtual seconds when it was checked. */
  t: number;
  verdict: Verdict;
  reason: string;
  evidence: Record<string, unknown>;
  /** Required when the verdict is `fails-as-modelled`. */
  mechanism?: Mechanism;
}

export interface InvariantResult {
  name: ModelInvariant;
  verdict: 'holds' | 'violated' | 'not-checked';
  /** Why it was not checked (real runs). */
  reason?: string;
  /** How many times it was checked (0: nothing to check in this run). */
  checks: number;
  checkedAfter?: CheckTime;
  /** Required when violated: the first violation and the event that caused it. */
  firstViolation?: EventRef & { reason: string; evidence?: Record<string, unknown> };
}

export interface PropertyResult {
  name: ProtocolProperty;
  verdict: Verdict;
  checks: number;
  checkedAfter?: CheckTime;
  reason: string;
  evidence?: Record<string, unknown>;
  /** Required when the verdict is `fails-as-modelled`. */
  mechanism?: Mechanism;
  /** Where it first failed. */
  firstFailure?: EventRef;
}

/** One port's counters as testpmd's `show port stats` prints them, plus forward-engine drops. */
export interface PortCounters {
  port: number;
  /** What the port is: `nic`, `vhost` (net_vhost), `virtio` (virtio-pmd in a guest or virtio-user). */
  kind: 'nic' | 'vhost' | 'virtio';
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  /** "Forward statistics" RX-dropped / TX-dropped, when a forwarding engine ran. */
  rxDropped?: number;
  txDropped?: number;
  /** Multi-queue vhost ports: packets per queue over the whole run (every back-end instance), rx = from the guest, tx = to it. */
  queues?: { rx: number[]; tx: number[] };
}

/** One testpmd process's ports: `host` (the back-end) or `vm0`, `vm1`, … (guests). */
export interface TestpmdStats {
  instance: string;
  ports: PortCounters[];
}

export interface DropCount {
  reason: DropReason | string;
  /** Where: `host port 0`, `vm1 vring 0`, `vhost-user connection 3`. */
  where: string;
  count: number;
}

export interface RunCounts {
  /** vhost-user connections established after the first, summed over VMs. */
  reconnects: number;
  backendRestarts: number;
  vmRestarts: number;
  vmReboots: number;
  /** Packets the generator (or iperf sender) offered. */
  packetsSent: number;
  /** Packets that made it end to end. */
  packetsThrough: number;
  duplicates: number;
  drops: DropCount[];
}

export interface TraceRef {
  /** Path of the JSON Lines trace (DESIGN.md "Trace"), relative to the result file; absent if not kept. */
  path?: string;
  records: number;
  sha256?: string;
}

export interface ScenarioSummary {
  name: string;
  file?: string;
  ring: RingKind;
  topology: Topology;
  vms: number;
  queues: number;
  queueSize: number;
  frontend: string;
  backend: string;
  guest: string;
  plan?: { document: string; case: number; title: string };
}

/** What a result says about the scenario it ran (the same for model and real runs). */
export function scenarioSummary(s: Scenario, file?: string): ScenarioSummary {
  return {
    name: s.name,
    ...(file ? { file } : {}),
    ring: s.ring,
    topology: s.topology,
    vms: s.vms,
    queues: s.queues,
    queueSize: s.queueSize,
    frontend: s.frontend,
    backend: s.backend,
    guest: s.guest,
    ...(s.plan ? { plan: s.plan } : {}),
  };
}

export interface RunResult {
  format: typeof RESULT_FORMAT;
  scenario: ScenarioSummary;
  seed: number;
  expects: ExpectResult[];
  /** Exactly one entry per MODEL_INVARIANTS name. */
  invariants: InvariantResult[];
  /** Exactly one entry per PROTOCOL_PROPERTIES name. */
  properties: PropertyResult[];
  portStats: TestpmdStats[];
  counts: RunCounts;
  virtualSeconds: number;
  wallSeconds: number;
  trace: TraceRef;
  monitoring?: Monitoring;
}

// ---- zod schema for reading ---------------------------------------------------------------------

// Built on first use: runs that only write results skip constructing it.
function buildRunResultSchema() {
  const count = z.number().int().min(0);
  const EventRefSchema = z.object({ t: z.number().finite(), event: z.string(), traceLine: z.number().int().min(1).optional(), seq: z.number().int().min(0).optional(), step: z.string().optional() });
  const MechanismSchema = z.object({
    summary: z.string().min(1),
    profile: z.string().min(1),
    lostState: z.array(z.string()).optional(),
    messages: z
      .array(
        z.object({
          dir: z.enum(['f2b', 'b2f']),
          request: z.string(),
          vring: count.optional(),
          field: z.string().optional(),
          value: z.union([z.number(), z.string()]),
          connection: z.number().int().min(1).optional(),
          at: EventRefSchema.optional(),
        }),
      )
      .optional(),
    reference: z.string().optional(),
  });
  const evidence = z.record(z.string(), z.unknown());

  const needsMechanism = (r: { verdict: Verdict; mechanism?: unknown }): boolean => r.verdict !== 'fails-as-modelled' || r.mechanism !== undefined;
  const MECHANISM_MESSAGE = { message: "a 'fails-as-modelled' verdict names its mechanism", path: ['mechanism'] };

  const ExpectResultSchema = z
    .object({
      path: z.string().regex(/^steps\[\d+\](\.repeat\.steps\[\d+\])*$/),
      iteration: z.array(count),
      what: z.enum(EXPECT_WHATS),
      vm: count.optional(),
      planStep: z.string().optional(),
      t: z.number().finite().min(0),
      verdict: z.enum(VERDICTS),
      reason: z.string().min(1),
      evidence,
      mechanism: MechanismSchema.optional(),
    })
    .refine(needsMechanism, MECHANISM_MESSAGE);

  const InvariantResultSchema = z
    .object({
      name: z.enum(MODEL_INVARIANTS),
      verdict: z.enum(['holds', 'violated', 'not-checked']),
      checks: count,
      checkedAfter: z.enum(CHECK_TIMES).optional(),
      reason: z.string().min(1).optional(),
      firstViolation: EventRefSchema.extend({ reason: z.string().min(1), evidence: evidence.optional() }).optional(),
    })
    .refine((r) => r.verdict !== 'violated' || r.firstViolation !== undefined, { message: 'a violated invariant names its first violation', path: ['firstViolation'] });

  const PropertyResultSchema = z
    .object({
      name: z.enum(PROTOCOL_PROPERTIES),
      verdict: z.enum(VERDICTS),
      checks: count,
      checkedAfter: z.enum(CHECK_TIMES).optional(),
      reason: z.string().min(1),
      evidence: evidence.optional(),
      mechanism: MechanismSchema.optional(),
      firstFailure: EventRefSchema.optional(),
    })
    .refine(needsMechanism, MECHANISM_MESSAGE);

  const PortCountersSchema = z.object({
    port: count,
    kind: z.enum(['nic', 'vhost', 'virtio']),
    rxPackets: count,
    rxMissed: count,
    rxBytes: count,
    rxErrors: count,
    rxNombuf: count,
    txPackets: count,
    txErrors: count,
    txBytes: count,
    rxDropped: count.optional(),
    txDropped: count.optional(),
    queues: z.object({ rx: z.array(count), tx: z.array(count) }).optional(),
  });

  /** Each name of `names` exactly once in `items`. */
  function exactlyOnce(names: readonly string[], what: string) {
    return (items: readonly { name: string }[], ctx: z.RefinementCtx): void => {
      for (const n of names) {
        const k = items.filter((i) => i.name === n).length;
        if (k !== 1) ctx.addIssue({ code: 'custom', message: `${what} '${n}' appears ${k} times, expected once` });
      }
    };
  }

  const schema = z.object({
    format: z.literal(RESULT_FORMAT),
    scenario: z.object({
      name: z.string().min(1),
      file: z.string().optional(),
      ring: z.enum(RING_KINDS),
      topology: z.enum(TOPOLOGIES),
      vms: z.number().int().min(1),
      queues: z.number().int().min(1),
      queueSize: z.number().int().min(1),
      frontend: z.enum(FRONTENDS),
      backend: z.enum(BACKENDS),
      guest: z.enum(GUESTS),
      plan: z.object({ document: z.string(), case: z.number().int().min(1), title: z.string() }).optional(),
    }),
    seed: z.number().int().min(0),
    expects: z.array(ExpectResultSchema),
    invariants: z.array(InvariantResultSchema).superRefine(exactlyOnce(MODEL_INVARIANTS, 'model invariant')),
    properties: z.array(PropertyResultSchema).superRefine(exactlyOnce(PROTOCOL_PROPERTIES, 'protocol property')),
    portStats: z.array(z.object({ instance: z.string().regex(/^(host|vm\d+)$/), ports: z.array(PortCountersSchema) })),
    counts: z.object({
      reconnects: count,
      backendRestarts: count,
      vmRestarts: count,
      vmReboots: count,
      packetsSent: count,
      packetsThrough: count,
      duplicates: count,
      drops: z.array(z.object({ reason: z.string().min(1), where: z.string(), count })),
    }),
    virtualSeconds: z.number().finite().min(0),
    wallSeconds: z.number().finite().min(0),
    trace: z.object({ path: z.string().optional(), records: count, sha256: z.string().regex(/^[0-9a-f]{64}$/).optional() }),
    monitoring: z.object({ checkedAfterEveryEvent: count, checkedAfterSteps: count, perEvent: z.array(z.string()), endOfRun: z.array(z.string()) }).optional(),
  });
  return schema;
}

let runResultSchemaCache: ReturnType<typeof buildRunResultSchema> | undefined;
/** The zod schema `parseResult` checks a result against. */
export function runResultSchema(): ReturnType<typeof buildRunResultSchema> {
  return (runResultSchemaCache ??= buildRunResultSchema());
}

export class ResultFormatError extends Error {
  override readonly name = 'ResultFormatError';
  constructor(readonly issues: readonly { path: string; message: string }[]) {
    super(`invalid result:\n${issues.map((i) => `  ${i.path || '(document)'}: ${i.message}`).join('\n')}`);
  }
}

/** Reads a result (e.g. from JSON.parse); throws `ResultFormatError` naming every bad field. */
export function parseResult(json: unknown): RunResult {
  const r = runResultSchema().safeParse(json);
  if (!r.success) {
    throw new ResultFormatError(
      r.error.issues.map((i) => ({ path: i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, ''), message: i.message })),
    );
  }
  return r.data as RunResult;
}

export function loadResult(file: string): RunResult {
  return parseResult(JSON.parse(readFileSync(file, 'utf8')));
}

// ---- verdicts and the plan table ------------------------------------------------------------

// `not-checked` says nothing either way: it never makes a run worse than `holds`.
const RANK: Record<Verdict, number> = { 'not-checked': 0, holds: 0, 'fails-as-modelled': 1, violated: 2 };

/**
 * The run's verdict: a violated model invariant makes it `violated` (vhostsim is wrong, nothing
 * else can be trusted); otherwise the worst of the expects and the protocol properties, with the
 * reason of the first item that has that verdict.
 */
export function overallVerdict(r: RunResult): { verdict: Verdict; reason: string } {
  const broken = r.invariants.find((i) => i.verdict === 'violated');
  if (broken) {
    const v = broken.firstViolation;
    return { verdict: 'violated', reason: `model invariant ${broken.name} violated${v ? ` at t=${fmtSeconds(v.t)} (${v.event}${v.seq !== undefined ? ` #${v.seq}` : ''}): ${v.reason}` : ''}` };
  }
  const items: { verdict: Verdict; label: string; reason: string; mechanism?: Mechanism }[] = [
    ...r.expects.map((e) => ({ verdict: e.verdict, label: `expect ${e.what} at ${e.path}${e.iteration.length ? ` #${e.iteration.map((k) => k + 1).join('.')}` : ''}`, reason: e.reason, ...(e.mechanism ? { mechanism: e.mechanism } : {}) })),
    ...r.properties.map((p) => ({ verdict: p.verdict, label: p.name, reason: p.reason, ...(p.mechanism ? { mechanism: p.mechanism } : {}) })),
  ];
  const worst = items.reduce<Verdict>((w, i) => (RANK[i.verdict] > RANK[w] ? i.verdict : w), 'holds');
  if (worst === 'holds') {
    const unchecked = items.filter((i) => i.verdict === 'not-checked').length;
    const held = items.length - unchecked;
    return { verdict: 'holds', reason: unchecked ? `${held} of ${items.length} expects and properties hold, ${unchecked} not checked` : `${r.expects.length} expects and ${r.properties.length} properties hold` };
  }
  const first = items.find((i) => i.verdict === worst)!;
  const by = first.mechanism ? ` [${first.mechanism.profile}: ${first.mechanism.summary}]` : '';
  return { verdict: worst, reason: `${first.label}: ${first.reason}${by}` };
}

export const PLAN_TABLE_COLUMNS = ['case', 'ring', 'topology', 'reconnects', 'packets through', 'drops', 'virtual time', 'wall time', 'verdict'] as const;
export type PlanRow = Record<(typeof PLAN_TABLE_COLUMNS)[number], string>;

function fmtSeconds(s: number): string {
  if (s === 0) return '0 s';
  if (s < 1) return `${(s * 1000).toPrecision(3)} ms`;
  return `${s < 100 ? s.toFixed(2) : s.toFixed(0)} s`;
}

function fmtCount(n: number): string {
  return n.toLocaleString('en-US');
}

function describeTopology(s: ScenarioSummary): string {
  if (s.topology === 'vm2vm') return 'VM2VM';
  if (s.topology === 'loopback') return 'loopback';
  return s.vms === 1 ? 'PVP' : `PVP ×${s.vms}`;
}

/** One row of the plan table: case, ring, topology, reconnects, packets through, drops and why, times, verdict with reason. */
export function formatPlanRow(r: RunResult): PlanRow {
  const total = r.counts.drops.reduce((n, d) => n + d.count, 0);
  const byReason = new Map<string, number>();
  for (const d of r.counts.drops) byReason.set(d.reason, (byReason.get(d.reason) ?? 0) + d.count);
  const why = [...byReason].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([reason, n]) => `${reason} ${fmtCount(n)}`);
  const dup = r.counts.duplicates > 0 ? `, ${fmtCount(r.counts.duplicates)} duplicated` : '';
  const v = overallVerdict(r);
  return {
    case: r.scenario.plan ? `${r.scenario.plan.case}` : r.scenario.name,
    ring: r.scenario.ring,
    topology: describeTopology(r.scenario),
    reconnects: `${r.counts.reconnects}`,
    'packets through': `${fmtCount(r.counts.packetsThrough)} / ${fmtCount(r.counts.packetsSent)}`,
    drops: (total === 0 ? '0' : `${fmtCount(total)} (${why.join(', ')})`) + dup,
    'virtual time': fmtSeconds(r.virtualSeconds),
    'wall time': fmtSeconds(r.wallSeconds),
    verdict: v.verdict === 'holds' ? 'holds' : `${v.verdict}: ${v.reason}`,
  };
}

/** The rows as a Markdown table (`|` in cells escaped). */
export function formatPlanTable(results: readonly RunResult[]): string {
  const cell = (s: string): string => s.replace(/\|/g, '\\|');
  const lines = [`| ${PLAN_TABLE_COLUMNS.join(' | ')} |`, `|${PLAN_TABLE_COLUMNS.map(() => '---').join('|')}|`];
  for (const r of results) {
    const row = formatPlanRow(r);
    lines.push(`| ${PLAN_TABLE_COLUMNS.map((c) => cell(row[c])).join(' | ')} |`);
  }
  return lines.join('\n') + '\n';
}
