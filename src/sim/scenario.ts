/**
 * The scenario format (DESIGN.md "Formats"): a JSON description of a test run — which ring,
 * topology, front-end and back-end profiles, and a list of steps (launch, quit, kill, reboot,
 * forwarding, traffic, wait, expect, repeat). `parseScenario` validates structure with zod and
 * then the rules zod cannot express (vm indices against `vms`, topology against guest, queue size
 * against ring kind, process lifecycle), and reports every problem with the path of the offending
 * field: `steps[3].repeat.steps[1].vm: expected 0..1 (vms = 2), got 2`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

// ---- vocabulary ---------------------------------------------------------------------------

export const RING_KINDS = ['split', 'packed'] as const;
export const TOPOLOGIES = ['pvp', 'vm2vm', 'loopback'] as const;
export const FRONTENDS = ['qemu-7.2', 'virtio-user-22.11'] as const;
export const BACKENDS = ['dpdk-22.11'] as const;
export const GUESTS = ['virtio-pmd', 'virtio-net'] as const;
export const PORT_TOPOLOGIES = ['paired', 'chained'] as const;
/** testpmd forwarding engines a scenario may select (`set fwd …`); `io` is testpmd's default. */
export const FWD_MODES = ['io', 'mac', 'macswap', 'flowgen', 'rxonly', 'txonly', 'csum', 'icmpecho'] as const;

/**
 * What an `expect` step checks, at the moment it runs:
 * - `traffic-flows`: the last `traffic` step moved packets through every port on the path, in
 *   both directions where the topology has two (testpmd's `show port stats all`);
 * - `reconnected`: since the last restart of either side, every affected vhost-user connection
 *   was re-established and the back-end reached ready ("virtio is now ready for processing"),
 *   within `within` virtual seconds if given;
 * - `no-duplicates`: no packet was delivered twice so far;
 * - `loss-within-bound`: packets lost so far are no more than the protocol allows
 *   (models/session.ts `allowedLoss`);
 * - `features-stable`: every reconnected session negotiated the features of the first one;
 * - `ring-resumed`: after the last reconnect each ring resumed where its driver is.
 */
export const EXPECT_WHATS = [
  'traffic-flows',
  'reconnected',
  'no-duplicates',
  'loss-within-bound',
  'features-stable',
  'ring-resumed',
] as const;

export type RingKind = (typeof RING_KINDS)[number];
export type Topology = (typeof TOPOLOGIES)[number];
export type FrontendName = (typeof FRONTENDS)[number];
export type BackendName = (typeof BACKENDS)[number];
export type GuestKind = (typeof GUESTS)[number];
export type PortTopology = (typeof PORT_TOPOLOGIES)[number];
export type FwdMode = (typeof FWD_MODES)[number];
export type ExpectWhat = (typeof EXPECT_WHATS)[number];

/** Largest `queues` (queue pairs) a scenario may ask for. */
export const MAX_QUEUES = 8;
/** Largest virtqueue size (split and packed, virtio 1.2; DPDK's SET_VRING_NUM limit). */
export const MAX_QUEUE_SIZE = 32768;
/** Largest `repeat.times`: a guard against a typo turning a run into days. */
export const MAX_REPEAT = 10000;

// ---- steps ----------------------------------------------------------------------------------

/** Every step may say which step of a test plan it implements ("5", "2-4", "6 (rerun 3)"). */
interface StepBase {
  planStep?: string;
}

export interface LaunchBackendStep extends StepBase {
  op: 'launch-backend';
}
/** testpmd's graceful `quit`: forwarding stops, ports close, the socket is closed. */
export interface QuitBackendStep extends StepBase {
  op: 'quit-backend';
}
/** A crash: the process vanishes mid-whatever, no cleanup. */
export interface KillBackendStep extends StepBase {
  op: 'kill-backend';
  /**
   * The crash lands `at` virtual seconds into the `traffic` step right before this one (pvp),
   * with packets in flight; absent: after that step, once its traffic drained.
   */
  at?: number;
}
export interface LaunchVmStep extends StepBase {
  op: 'launch-vm';
  vm: number;
}
/** The VM process exits cleanly (QEMU on SIGINT / `quit`): the front-end closes the socket. */
export interface QuitVmStep extends StepBase {
  op: 'quit-vm';
  vm: number;
}
/** The VM process is killed: the socket closes with no stop sequence. */
export interface KillVmStep extends StepBase {
  op: 'kill-vm';
  vm: number;
  /**
   * QEMU is killed `at` virtual seconds into the `traffic` step right before this one (pvp), with
   * packets in the guest; absent: after that step, once its traffic drained.
   */
  at?: number;
}
/** Guest reboot: the device is reset and the rings rebuilt, the socket is kept. */
export interface RebootVmStep extends StepBase {
  op: 'reboot-vm';
  vm: number;
}
export interface StartForwardingStep extends StepBase {
  op: 'start-forwarding';
  /** `host`: the back-end's testpmd; `guest`: the testpmd in VM `vm` (virtio-pmd guests only). */
  side: 'host' | 'guest';
  vm?: number;
  /** `set fwd <mode>` before `start`; absent: keep the process's current mode. */
  fwd?: FwdMode;
}
export interface StopForwardingStep extends StepBase {
  op: 'stop-forwarding';
  side: 'host' | 'guest';
  vm?: number;
}
/**
 * Offered load for `seconds` virtual seconds. PVP and loopback: the generator on the NIC (or
 * the virtio-user side); VM2VM: an iperf-like stream from VM `from` to VM `to`.
 */
export interface TrafficStep extends StepBase {
  op: 'traffic';
  seconds: number;
  /** Packets per second offered; absent: the runner's default. */
  rate?: number;
  /** Frame size in bytes (64..9728). */
  size?: number;
  /** Distinct flows (5-tuples). */
  flows?: number;
  /** VM2VM only: sender and receiver VM (default 1 → 0: the plan's iperf client runs in VM2). */
  from?: number;
  to?: number;
}
export interface WaitStep extends StepBase {
  op: 'wait';
  seconds: number;
}
export interface ExpectStep extends StepBase {
  op: 'expect';
  what: ExpectWhat;
  /** Restrict the check to one VM's connection and ports. */
  vm?: number;
  /** For `reconnected`: the bound in virtual seconds since the restart. */
  within?: number;
}
export interface RepeatStep extends StepBase {
  op: 'repeat';
  times: number;
  steps: Step[];
}

export type Step =
  | LaunchBackendStep
  | QuitBackendStep
  | KillBackendStep
  | LaunchVmStep
  | QuitVmStep
  | KillVmStep
  | RebootVmStep
  | StartForwardingStep
  | StopForwardingStep
  | TrafficStep
  | WaitStep
  | ExpectStep
  | RepeatStep;

export type StepOp = Step['op'];

// ---- zod schemas ----------------------------------------------------------------------------

const planStep = z.string().min(1).optional();
const vmIndex = z.number().int().min(0);
const seconds = z.number().positive().finite();
const op = <T extends string>(name: T) => z.literal(name);

const LaunchBackendSchema = z.strictObject({ op: op('launch-backend'), planStep });
const QuitBackendSchema = z.strictObject({ op: op('quit-backend'), planStep });
const KillBackendSchema = z.strictObject({ op: op('kill-backend'), at: seconds.optional(), planStep });
const LaunchVmSchema = z.strictObject({ op: op('launch-vm'), vm: vmIndex, planStep });
const QuitVmSchema = z.strictObject({ op: op('quit-vm'), vm: vmIndex, planStep });
const KillVmSchema = z.strictObject({ op: op('kill-vm'), vm: vmIndex, at: seconds.optional(), planStep });
const RebootVmSchema = z.strictObject({ op: op('reboot-vm'), vm: vmIndex, planStep });
const StartForwardingSchema = z.strictObject({
  op: op('start-forwarding'),
  side: z.enum(['host', 'guest']),
  vm: vmIndex.optional(),
  fwd: z.enum(FWD_MODES).optional(),
  planStep,
});
const StopForwardingSchema = z.strictObject({
  op: op('stop-forwarding'),
  side: z.enum(['host', 'guest']),
  vm: vmIndex.optional(),
  planStep,
});
const TrafficSchema = z.strictObject({
  op: op('traffic'),
  seconds,
  rate: z.number().positive().finite().optional(),
  size: z.number().int().min(64).max(9728).optional(),
  flows: z.number().int().min(1).max(65536).optional(),
  from: vmIndex.optional(),
  to: vmIndex.optional(),
  planStep,
});
const WaitSchema = z.strictObject({ op: op('wait'), seconds, planStep });
const ExpectSchema = z.strictObject({
  op: op('expect'),
  what: z.enum(EXPECT_WHATS),
  vm: vmIndex.optional(),
  within: seconds.optional(),
  planStep,
});
const RepeatSchema = z.strictObject({
  op: op('repeat'),
  times: z.number().int().min(1).max(MAX_REPEAT),
  // A getter makes the recursion lazy; zod 4 turns it into a `$ref` in the JSON Schema.
  get steps(): z.ZodArray<z.ZodType<Step>> {
    return z.array(StepSchema).min(1);
  },
  planStep,
});

export const StepSchema: z.ZodType<Step> = z
  .discriminatedUnion('op', [
    LaunchBackendSchema,
    QuitBackendSchema,
    KillBackendSchema,
    LaunchVmSchema,
    QuitVmSchema,
    KillVmSchema,
    RebootVmSchema,
    StartForwardingSchema,
    StopForwardingSchema,
    TrafficSchema,
    WaitSchema,
    ExpectSchema,
    RepeatSchema,
  ])
  .meta({ id: 'Step' }) as z.ZodType<Step>;

/** net_vhost devargs and model switches of the `dpdk-22.11` profile (src/endpoint/backend/profile.ts). */
const BackendOptionsSchema = z.strictObject({
  /** `client=1`. Scenario default true: the reconnect arrangement (QEMU listens, DPDK connects). */
  client: z.boolean().optional(),
  reconnect: z.boolean().optional(),
  reconnectPeriod: z.number().positive().finite().optional(),
  tso: z.boolean().optional(),
  iommuSupport: z.boolean().optional(),
  postcopySupport: z.boolean().optional(),
  linearBuffer: z.boolean().optional(),
  extBuffer: z.boolean().optional(),
  inflight: z.boolean().optional(),
  patch: z.number().int().min(0).optional(),
});

const FrontendOptionsSchema = z.strictObject({
  /** QEMU `-chardev socket,server` / virtio-user `server=1`. Scenario default true. */
  server: z.boolean().optional(),
  /** virtio-user `in_order` devarg. */
  inOrder: z.boolean().optional(),
  /** virtio-user `cq` devarg. */
  cq: z.boolean().optional(),
});

const TestpmdOptionsSchema = z.strictObject({
  nbCores: z.number().int().min(1).optional(),
  txd: z.number().int().min(1).max(MAX_QUEUE_SIZE).optional(),
  rxd: z.number().int().min(1).max(MAX_QUEUE_SIZE).optional(),
  portTopology: z.enum(PORT_TOPOLOGIES).optional(),
});

const OptionsSchema = z.strictObject({
  backend: BackendOptionsSchema.optional(),
  frontend: FrontendOptionsSchema.optional(),
  /** testpmd command-line options as the plan gives them (host: the back-end; guest: inside each VM). */
  testpmd: z.strictObject({ host: TestpmdOptionsSchema.optional(), guest: TestpmdOptionsSchema.optional() }).optional(),
});

const PlanRefSchema = z.strictObject({
  /** The test plan's title. */
  document: z.string().min(1),
  case: z.number().int().min(1),
  title: z.string().min(1),
});

export const ScenarioSchema = z
  .strictObject({
    /** Lets editors find scenario.schema.json; ignored otherwise. */
    $schema: z.string().optional(),
    name: z.string().min(1),
    description: z.string().optional(),
    plan: PlanRefSchema.optional(),
    seed: z.number().int().min(0).max(0xffffffff).optional(),
    ring: z.enum(RING_KINDS),
    topology: z.enum(TOPOLOGIES),
    vms: z.number().int().min(1).max(64),
    queues: z.number().int().min(1).max(MAX_QUEUES),
    queueSize: z.number().int().min(1).max(MAX_QUEUE_SIZE),
    frontend: z.enum(FRONTENDS),
    backend: z.enum(BACKENDS),
    guest: z.enum(GUESTS),
    /** The back-end testpmd's `--port-topology`; testpmd's default is `paired`. */
    hostPortTopology: z.enum(PORT_TOPOLOGIES).default('paired'),
    /** virtio-net `mrg_rxbuf` (QEMU device property / virtio-user devarg); on by default in both. */
    mrgRxbuf: z.boolean().default(true),
    options: OptionsSchema.optional(),
    steps: z.array(StepSchema).min(1),
  })
  .meta({ title: 'vhostsim scenario', description: 'A vhostsim run: ring, topology, profiles and steps (src/sim/scenario.ts).' });

export type Scenario = z.output<typeof ScenarioSchema>;
export type ScenarioInput = z.input<typeof ScenarioSchema>;
export type ScenarioOptions = NonNullable<Scenario['options']>;

// ---- errors and paths -----------------------------------------------------------------------

export interface ScenarioIssue {
  /** `steps[3].repeat.steps[1].vm`; the empty string for the document itself. */
  path: string;
  message: string;
}

export class ScenarioError extends Error {
  override readonly name = 'ScenarioError';
  constructor(
    readonly issues: readonly ScenarioIssue[],
    /** The file the scenario came from, when known. */
    readonly file?: string,
  ) {
    super(
      `${file ? `${file}: ` : ''}invalid scenario (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n` +
        issues.map((i) => `  ${i.path || '(document)'}: ${i.message}`).join('\n'),
    );
  }
}

/**
 * Renders a zod-style path against the input it refers to: array indices as `[i]`, and a repeat
 * step's body as `.repeat.steps[i]` so that a path reads like the step it names.
 */
function renderPath(input: unknown, path: readonly PropertyKey[]): string {
  let out = '';
  let node: unknown = input;
  for (const seg of path) {
    if (typeof seg === 'number') {
      out += `[${seg}]`;
    } else {
      const key = String(seg);
      const isRepeatBody = key === 'steps' && isRecord(node) && node.op === 'repeat';
      out += (out === '' ? '' : '.') + (isRepeatBody ? 'repeat.steps' : key);
    }
    node = isRecord(node) || Array.isArray(node) ? (node as Record<PropertyKey, unknown>)[seg as never] : undefined;
  }
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The path of a step given its index at each nesting level: `[3, 1]` → `steps[3].repeat.steps[1]`. */
export function stepPath(indices: readonly number[]): string {
  return indices.map((i, d) => (d === 0 ? `steps[${i}]` : `.repeat.steps[${i}]`)).join('');
}

function zodIssues(input: unknown, error: z.ZodError): ScenarioIssue[] {
  const out: ScenarioIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      // One issue per key, so each names its own field.
      for (const key of issue.keys) out.push({ path: renderPath(input, [...issue.path, key]), message: 'unknown field' });
    } else if (issue.code === 'invalid_union' && 'discriminator' in issue) {
      const got = lookup(input, issue.path);
      out.push({ path: renderPath(input, issue.path), message: `unknown op ${JSON.stringify(got)}; expected one of ${STEP_OPS.join(', ')}` });
    } else {
      const got = lookup(input, issue.path);
      let message = issue.message;
      if (issue.code === 'invalid_type' && got === undefined) message = `missing (expected ${issue.expected})`;
      else if (['invalid_value', 'invalid_type', 'too_small', 'too_big', 'not_multiple_of', 'invalid_format'].includes(issue.code) && got !== undefined) message += `, got ${JSON.stringify(got)}`;
      out.push({ path: renderPath(input, issue.path), message });
    }
  }
  return out;
}

function lookup(input: unknown, path: readonly PropertyKey[]): unknown {
  let node = input;
  for (const seg of path) {
    if (!(isRecord(node) || Array.isArray(node))) return undefined;
    node = (node as Record<PropertyKey, unknown>)[seg as never];
  }
  return node;
}

export const STEP_OPS: readonly StepOp[] = [
  'launch-backend',
  'quit-backend',
  'kill-backend',
  'launch-vm',
  'quit-vm',
  'kill-vm',
  'reboot-vm',
  'start-forwarding',
  'stop-forwarding',
  'traffic',
  'wait',
  'expect',
  'repeat',
];

// ---- walking --------------------------------------------------------------------------------

export interface WalkedStep {
  step: Exclude<Step, RepeatStep>;
  /** Index at each nesting level (see `stepPath`). */
  indices: number[];
  /** 0-based iteration of each enclosing repeat, outermost first. */
  iteration: number[];
}

/** Every leaf step in execution order, repeats unrolled. */
export function* walkSteps(steps: readonly Step[], indices: number[] = [], iteration: number[] = []): Generator<WalkedStep> {
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]!;
    if (s.op === 'repeat') {
      for (let k = 0; k < s.times; k++) yield* walkSteps(s.steps, [...indices, i], [...iteration, k]);
    } else {
      yield { step: s, indices: [...indices, i], iteration };
    }
  }
}

/** How many leaf steps a run executes (repeats unrolled). */
export function unrolledLength(steps: readonly Step[]): number {
  let n = 0;
  for (const s of steps) n += s.op === 'repeat' ? s.times * unrolledLength(s.steps) : 1;
  return n;
}

// ---- cross-field rules ----------------------------------------------------------------------

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** What each process is doing, as far as the step list says (for the lifecycle rules). */
interface LifeState {
  backend: boolean;
  vms: boolean[];
}

function crossCheck(s: Scenario): ScenarioIssue[] {
  const issues: ScenarioIssue[] = [];
  const add = (path: string, message: string): void => {
    // A repeat's second pass may find again what its first found: report each problem once.
    if (!issues.some((i) => i.path === path && message.startsWith(i.message))) issues.push({ path, message });
  };

  if (s.ring === 'split' && !isPowerOfTwo(s.queueSize)) {
    add('queueSize', `a split ring's size must be a power of two ≤ ${MAX_QUEUE_SIZE}, got ${s.queueSize}`);
  }
  if (s.topology === 'pvp' && s.guest !== 'virtio-pmd') add('guest', `topology 'pvp' forwards with testpmd in the guest: expected 'virtio-pmd', got '${s.guest}'`);
  // virtio-user has no kernel driver to run iperf over: its VM2VM runs testpmd txonly → rxonly.
  const vm2vmPmd = s.topology === 'vm2vm' && s.guest === 'virtio-pmd' && s.frontend === 'virtio-user-22.11';
  if (s.topology === 'vm2vm' && s.guest !== 'virtio-net' && !vm2vmPmd) add('guest', `topology 'vm2vm' runs the kernel driver and iperf: expected 'virtio-net', got '${s.guest}'`);
  if (s.topology === 'vm2vm' && s.vms !== 2) add('vms', `topology 'vm2vm' needs exactly 2 VMs, got ${s.vms}`);
  if (s.topology === 'loopback' && s.frontend !== 'virtio-user-22.11') add('frontend', `topology 'loopback' has no VM: expected 'virtio-user-22.11', got '${s.frontend}'`);
  if (s.topology === 'loopback' && s.vms !== 1) add('vms', `topology 'loopback' has one virtio-user port, got vms = ${s.vms}`);
  if (s.guest === 'virtio-net' && s.frontend !== 'qemu-7.2') add('guest', `a kernel virtio-net guest needs a VM: frontend must be 'qemu-7.2', got '${s.frontend}'`);
  // With paired ports, testpmd pairs NIC 0 with vhost 1 and leaves vhost 2 to itself: the
  // generator's packets would never reach the second VM.
  if (s.topology === 'pvp' && s.vms > 1 && s.hostPortTopology !== 'chained') {
    add('hostPortTopology', `pvp with ${s.vms} VMs needs 'chained' (NIC → VM1 → … → NIC), got '${s.hostPortTopology}'`);
  }
  const client = s.options?.backend?.client ?? true;
  const server = s.options?.frontend?.server ?? true;
  if (client !== server) {
    add(
      client ? 'options.frontend.server' : 'options.backend.client',
      client
        ? 'the back-end connects (client=1), so the front-end must listen (server: true)'
        : 'the back-end listens (client=0), so the front-end must connect (server: false)',
    );
  }
  if (s.frontend === 'qemu-7.2') {
    for (const k of ['inOrder', 'cq'] as const) {
      if (s.options?.frontend?.[k] !== undefined) add(`options.frontend.${k}`, `'${k}' is a virtio-user devarg; frontend is 'qemu-7.2'`);
    }
  }

  const vmRange = (path: string, v: number | undefined): void => {
    if (v !== undefined && v >= s.vms) add(path, `expected 0..${s.vms - 1} (vms = ${s.vms}), got ${v}`);
  };
  const life: LifeState = { backend: false, vms: Array.from({ length: s.vms }, () => false) };
  const up = (v: number): boolean => life.vms[v] ?? false;

  const visit = (steps: readonly Step[], indices: number[], iterationNote: string): void => {
    steps.forEach((st, i) => {
      const at = [...indices, i];
      const p = stepPath(at);
      const lifecycle = (message: string): void => add(p, message + iterationNote);
      if ((st.op === 'kill-backend' || st.op === 'kill-vm') && st.at !== undefined) {
        // A crash during traffic lands inside the traffic step just before it.
        const prev = steps[i - 1];
        if (s.topology !== 'pvp') add(`${p}.at`, `a crash during traffic is modelled for topology 'pvp' only, got '${s.topology}'`);
        else if (prev?.op !== 'traffic') add(`${p}.at`, `'at' places the crash inside the traffic step right before it; the step before is ${prev ? `'${prev.op}'` : 'none'}`);
        else if (st.at >= prev.seconds) add(`${p}.at`, `expected less than the traffic step's ${prev.seconds} s, got ${st.at}`);
      }
      switch (st.op) {
        case 'launch-backend':
          if (life.backend) lifecycle('launch-backend while the back-end is running');
          life.backend = true;
          break;
        case 'quit-backend':
        case 'kill-backend':
          if (!life.backend) lifecycle(`${st.op} while the back-end is not running`);
          life.backend = false;
          break;
        case 'launch-vm':
        case 'quit-vm':
        case 'kill-vm':
        case 'reboot-vm': {
          vmRange(`${p}.vm`, st.vm);
          if (st.vm >= s.vms) break;
          if (s.topology === 'loopback' && st.op === 'reboot-vm') lifecycle('reboot-vm: a loopback virtio-user port has no guest to reboot');
          if (st.op === 'launch-vm') {
            if (up(st.vm)) lifecycle(`launch-vm ${st.vm} while VM ${st.vm} is running`);
            life.vms[st.vm] = true;
          } else {
            if (!up(st.vm)) lifecycle(`${st.op} ${st.vm} while VM ${st.vm} is not running`);
            if (st.op !== 'reboot-vm') life.vms[st.vm] = false;
          }
          break;
        }
        case 'start-forwarding':
        case 'stop-forwarding':
          if (st.side === 'host') {
            if (st.vm !== undefined) add(`${p}.vm`, "only side 'guest' takes a vm");
            if (!life.backend) lifecycle(`${st.op} on the host while the back-end is not running`);
          } else {
            if (st.vm === undefined) add(`${p}.vm`, "side 'guest' needs the vm whose testpmd it drives");
            else vmRange(`${p}.vm`, st.vm);
            if (s.guest !== 'virtio-pmd') add(`${p}.side`, `guest '${s.guest}' runs no testpmd; forwarding in the guest needs 'virtio-pmd'`);
            if (st.vm !== undefined && st.vm < s.vms && !up(st.vm)) lifecycle(`${st.op} in VM ${st.vm} while it is not running`);
          }
          break;
        case 'traffic':
          vmRange(`${p}.from`, st.from);
          vmRange(`${p}.to`, st.to);
          if (s.topology === 'vm2vm') {
            if (st.from !== undefined && st.to !== undefined && st.from === st.to) add(`${p}.to`, `the stream needs two VMs, got from = to = ${st.to}`);
            for (const v of [st.from ?? 1, st.to ?? 0]) if (v < s.vms && !up(v)) lifecycle(`traffic between VMs while VM ${v} is not running`);
          } else {
            for (const k of ['from', 'to'] as const) if (st[k] !== undefined) add(`${p}.${k}`, `'${k}' is for vm2vm streams; topology is '${s.topology}'`);
          }
          break;
        case 'expect':
          vmRange(`${p}.vm`, st.vm);
          if (st.within !== undefined && st.what !== 'reconnected') add(`${p}.within`, `'within' bounds 'reconnected' only, not '${st.what}'`);
          break;
        case 'wait':
          break;
        case 'repeat': {
          // Lifecycle rules must hold on every iteration. Two passes suffice: a body that leaves
          // the processes as it found them repeats exactly; one that does not shows it on pass 2.
          const before: LifeState = { backend: life.backend, vms: [...life.vms] };
          visit(st.steps, at, '');
          if (st.times > 1 && (before.backend !== life.backend || before.vms.some((v, k) => v !== life.vms[k]))) {
            visit(st.steps, at, ' (on the second iteration)');
          }
          break;
        }
      }
    });
  };
  visit(s.steps, [], '');
  return issues;
}

// ---- entry points ---------------------------------------------------------------------------

/** Validates a parsed JSON value; throws `ScenarioError` listing every problem with its path. */
export function parseScenario(json: unknown, file?: string): Scenario {
  const r = ScenarioSchema.safeParse(json);
  if (!r.success) throw new ScenarioError(zodIssues(json, r.error), file);
  const issues = crossCheck(r.data);
  if (issues.length > 0) throw new ScenarioError(issues, file);
  return r.data;
}

/** Reads and validates a scenario file. */
export function loadScenario(file: string): Scenario {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ScenarioError([{ path: '', message: `not readable as JSON: ${(e as Error).message}` }], file);
  }
  return parseScenario(json, file);
}

/** The JSON Schema of the scenario format (structure only: the cross-field rules are in `parseScenario`). */
export function scenarioJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(ScenarioSchema, { io: 'input' }) as Record<string, unknown>;
}

export const DEFAULT_SCHEMA_FILE = fileURLToPath(new URL('../../models/testplans/scenario.schema.json', import.meta.url));

/** Writes the JSON Schema for editors (`models/testplans/scenario.schema.json` by default). */
export function writeScenarioJsonSchema(file: string = DEFAULT_SCHEMA_FILE): string {
  const text = JSON.stringify(scenarioJsonSchema(), null, 2) + '\n';
  writeFileSync(file, text);
  return text;
}
