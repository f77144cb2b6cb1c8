/**
 * Each pvp-reconnect plan case pinned to the reconnect mechanisms its verdict rests on: the case
 * runs with a profile broken on purpose in one mechanism (src/sim/profile-hooks.ts), and the
 * verdict must move away from the one conformance/plan.test.ts pins for the real profiles, with
 * the property or check that fails naming the broken thing. A model that got the mechanism wrong
 * (or a case that does not exercise it) would leave the verdict where it was and fail here.
 *
 * Some mechanisms back each other up (QEMU's split restore and DPDK's used->idx re-base); those
 * rows break both and pin the single ones as "changes nothing alone". The table of cases and
 * hooks is in models/testplans/pvp-reconnect/README.md ("Which mechanism each case rests on").
 */
import { describe, expect, it } from 'vitest';
import { planFiles } from '../src/cli/plan.ts';
import { overallVerdict, type RunResult, type Verdict } from '../src/sim/results.ts';
import { loadScenario, parseScenario, type FrontendName, type Scenario } from '../src/sim/scenario.ts';
import { runScenario } from '../src/sim/runner.ts';
import { PROFILE_HOOKS, type ProfileHooks } from '../src/sim/profile-hooks.ts';

const DIR = new URL('../models/testplans/pvp-reconnect/', import.meta.url).pathname;
const ALL = Array.from({ length: 18 }, (_, i) => i + 1);
const SPLIT_BACKEND_RESTART = [1, 3, 4, 6, 7, 9];
const PACKED_BACKEND_RESTART = [10, 12, 13, 15, 16, 18];
/**
 * The single-restart cases of each kind. The stability cases (3, 6, 9, 12, 15, 18) take seconds
 * each and repeat the same restarts, so most rows sample one of them.
 */
const SPLIT_BE_ONCE = [1, 4, 7];
const SPLIT_VM_ONCE = [2, 5, 8];
const PACKED_BE_ONCE = [10, 13, 16];
const PACKED_VM_ONCE = [11, 14, 17];

/** The verdicts conformance/plan.test.ts pins for the unbroken profiles. */
function realVerdict(frontend: FrontendName, n: number): Verdict {
  return frontend === 'qemu-7.2' && PACKED_BACKEND_RESTART.includes(n) ? 'fails-as-modelled' : 'holds';
}

const scenarios = new Map<number, { file: string; scenario: Scenario }>();
for (const file of planFiles(DIR)) {
  const scenario = loadScenario(file);
  scenarios.set(scenario.plan!.case, { file, scenario });
}

/** A case as `vhostsim plan --frontend` runs it (virtio-user VM2VM runs testpmd instead of iperf). */
function run(n: number, frontend: FrontendName, hooks: ProfileHooks): RunResult {
  const { file, scenario } = scenarios.get(n)!;
  let s = scenario;
  if (frontend !== s.frontend) {
    const { $schema: _s, ...rest } = s as Scenario & { $schema?: string };
    s = parseScenario({ ...rest, frontend, ...(s.guest === 'virtio-net' ? { guest: 'virtio-pmd' } : {}) }, file);
  }
  return runScenario(s, { file, hooks }).result;
}

const prop = (r: RunResult, name: RunResult['properties'][number]['name']) => r.properties.find((p) => p.name === name)!;
const firstFailedExpect = (r: RunResult) => r.expects.find((e) => e.verdict !== 'holds');

// ---- what each broken mechanism must show ---------------------------------------------------

/** The new back-end took a split ring at 0 while the driver was elsewhere. */
function splitRingAtZero(r: RunResult): void {
  const ring = prop(r, 'ring-state-survives-reconnect');
  expect(ring.verdict).toBe('violated');
  expect(ring.reason).toMatch(/vm\d vring \d: resumed at 0; the old back-end stopped at (\d+) and the reference model expects \1 /);
  expect(prop(r, 'ring-well-formed').reason).toMatch(/avail\.idx \d+ is \d+ entries ahead of 0,/);
}

/** The reconnected session negotiated other features than the VM's first one: only bit 30, the acked set forgotten. */
function featuresRenegotiated(r: RunResult): void {
  const f = prop(r, 'features-stable');
  expect(f.verdict).toBe('violated');
  expect(f.reason).toMatch(/vm\d connection \d+ negotiated 0x40000000, first 0x[0-9a-f]+/);
}

/** After a guest reset the back-end did not start the ring again at 0 (0/wrap 1 packed). */
function ringNotResetWithGuest(r: RunResult): void {
  const ring = prop(r, 'ring-state-survives-reconnect');
  expect(ring.verdict).toBe('violated');
  expect(ring.reason).toMatch(/vm\d vring \d: after a guest reset the back-end resumed at [1-9]\d*(\/wrap [01])?, expected 0(\/wrap 1)?$/);
}

/** The packed ring resumed where the old back-end stopped: nothing fails and nothing is lost. */
function packedRingResumed(r: RunResult): void {
  for (const p of r.properties) expect(p.verdict, `${p.name}: ${p.reason}`).toBe('holds');
  expect(prop(r, 'ring-state-survives-reconnect').reason).toMatch(/[1-9]\d* ring resumes after a back-end restart, .* all where the driver is/);
  expect(r.counts.packetsThrough).toBe(r.counts.packetsSent);
}

/** The restored packed base never reached the ring: back to QEMU 7.2's stale-base failure, 0/wrap 1. */
function packedBaseNotApplied(r: RunResult): void {
  const ring = prop(r, 'ring-state-survives-reconnect');
  expect(ring.verdict).toBe('fails-as-modelled');
  expect(ring.reason).toMatch(/resumed at 0\/wrap 1 instead of \d+\/wrap [01]/);
}

/** The back-end, started before the VM listens, never connects: the plan's first traffic check fails. */
function neverConnected(r: RunResult): void {
  expect(prop(r, 'liveness').reason).toMatch(/^vm\d restarted at t=0\.000 s and was not ready within \d+ s$/);
  const e = firstFailedExpect(r)!;
  expect(e.what).toBe('traffic-flows');
  expect(r.expects.indexOf(e)).toBe(0);
}

/** virtio-user kept its packed rings on the back-end reconnect: no ring reset, and the new back-end (at 0/wrap 1) finds nothing. */
function packedRingsNotReset(r: RunResult): void {
  const loss = prop(r, 'bounded-loss').evidence as { droppedByRingReset?: unknown };
  expect(loss.droppedByRingReset).toBeUndefined();
  const e = firstFailedExpect(r)!;
  expect(e.what).toBe('traffic-flows');
  expect(e.reason).toMatch(/^traffic did not flow/);
  expect(prop(r, 'liveness').reason).toMatch(/^back-end restarted at t=[\d.]+ s: ready, but traffic did not resume$/);
}

/** A VM restart found the back-end's vrings where the previous connection left them. */
function stateKeptAcrossVmRestart(r: RunResult): void {
  expect(prop(r, 'liveness').reason).toMatch(/^vm\d reboot restarted at t=[\d.]+ s: ready, but traffic did not resume$/);
  expect(firstFailedExpect(r)!.what).toBe('traffic-flows');
}

/** A broken mechanism another one covers: the verdict stays the real one. */
function unchanged(r: RunResult, frontend: FrontendName, n: number): void {
  const v = overallVerdict(r);
  expect(v.verdict, v.reason).toBe(realVerdict(frontend, n));
}

// ---- the table -------------------------------------------------------------------------------

interface Row {
  frontend: FrontendName;
  cases: readonly number[];
  hooks: ProfileHooks;
  /** The mechanism broken, as the test title says it. */
  what: string;
  /** The verdict expected with the mechanism broken; `unchanged` for a mechanism covered by another. */
  verdict: Verdict | 'unchanged';
  /** The verdict it moves from when that is not the real profiles' (a row that breaks a fix another row makes). */
  from?: { verdict: Verdict; with: string };
  check: (r: RunResult, n: number) => void;
}

const Q: FrontendName = 'qemu-7.2';
const VU: FrontendName = 'virtio-user-22.11';

const ROWS: Row[] = [
  // split rings, back-end restart: the new back-end must resume where the guest is.
  { frontend: Q, cases: SPLIT_BACKEND_RESTART, hooks: { backendForgetsSplitRebase: true }, what: 'back-end data path starts split rings at 0', verdict: 'violated', check: splitRingAtZero },
  { frontend: Q, cases: [...SPLIT_BE_ONCE, 9], hooks: { qemuKeepsStaleSplitBase: true, backendSkipsUsedIdxResync: true }, what: 'neither QEMU restores the split base from used->idx nor DPDK re-bases to it', verdict: 'violated', check: splitRingAtZero },
  { frontend: Q, cases: SPLIT_BE_ONCE, hooks: { qemuKeepsStaleSplitBase: true }, what: 'QEMU keeps a stale split base (DPDK re-bases to used->idx anyway)', verdict: 'unchanged', check: () => {} },
  { frontend: Q, cases: SPLIT_BE_ONCE, hooks: { backendSkipsUsedIdxResync: true }, what: 'DPDK does not re-base to used->idx (QEMU sends used->idx anyway)', verdict: 'unchanged', check: () => {} },
  { frontend: VU, cases: [...SPLIT_BE_ONCE, 3, 6], hooks: { backendSkipsUsedIdxResync: true }, what: 'DPDK does not re-base to used->idx (virtio-user sends base 0)', verdict: 'violated', check: splitRingAtZero },
  // features across a back-end restart.
  { frontend: Q, cases: [...SPLIT_BE_ONCE, ...PACKED_BE_ONCE, 6], hooks: { qemuForgetsAckedFeatures: true }, what: 'QEMU forgets its acked features when the back-end is lost', verdict: 'violated', check: featuresRenegotiated },
  { frontend: Q, cases: [2, 5, 8, 11, 14, 17], hooks: { qemuForgetsAckedFeatures: true }, what: 'QEMU forgets acked features (a restarted guest acks them again)', verdict: 'unchanged', check: () => {} },
  // guest reboot: the ring starts again at 0 on both sides.
  { frontend: Q, cases: [...SPLIT_VM_ONCE, 3], hooks: { qemuKeepsRingIndicesOnReset: true, backendSkipsUsedIdxResync: true }, what: 'QEMU keeps ring indices on a guest reset and DPDK does not re-base to used->idx', verdict: 'violated', check: ringNotResetWithGuest },
  { frontend: Q, cases: [...PACKED_VM_ONCE, 12], hooks: { qemuKeepsRingIndicesOnReset: true }, what: 'QEMU keeps ring indices on a guest reset', verdict: 'violated', check: ringNotResetWithGuest },
  { frontend: Q, cases: [...PACKED_VM_ONCE, 15], hooks: { backendIgnoresVringBase: true }, what: 'DPDK ignores SET_VRING_BASE', verdict: 'violated', check: ringNotResetWithGuest },
  // Under QEMU the plan reboots the guest before each VM restart, which puts the rings back at 0
  // first: kept state only shows in the stability cases, at the reboot after a relaunch.
  { frontend: Q, cases: [3, 18], hooks: { backendKeepsVringState: true }, what: 'DPDK keeps vring state across a VM restart', verdict: 'violated', check: ringNotResetWithGuest },
  { frontend: Q, cases: [2, 11], hooks: { backendKeepsVringState: true }, what: 'DPDK keeps vring state across a VM restart (the guest reboot before it resets the rings)', verdict: 'unchanged', check: () => {} },
  { frontend: VU, cases: [...SPLIT_VM_ONCE, ...PACKED_VM_ONCE, 9, 18], hooks: { backendKeepsVringState: true }, what: 'DPDK keeps vring state across a VM restart', verdict: 'violated', check: stateKeptAcrossVmRestart },
  // packed rings, back-end restart: QEMU 7.2's stale base is the whole failure.
  { frontend: Q, cases: PACKED_BACKEND_RESTART, hooks: { qemuRestoresPackedBase: true }, what: 'QEMU restores the packed ring position (7.2 cannot)', verdict: 'holds', check: packedRingResumed },
  { frontend: Q, cases: PACKED_BE_ONCE, hooks: { qemuRestoresPackedBase: true, backendIgnoresVringBase: true }, what: 'QEMU restores the packed position but DPDK ignores SET_VRING_BASE', verdict: 'fails-as-modelled', from: { verdict: 'holds', with: 'qemuRestoresPackedBase alone' }, check: packedBaseNotApplied },
  { frontend: VU, cases: [...PACKED_BE_ONCE, 12, 15], hooks: { virtioUserKeepsPackedRings: true }, what: 'virtio-user keeps packed rings on reconnect (no reset)', verdict: 'violated', check: packedRingsNotReset },
  // the client retry: the plan starts the back-end before the VM listens.
  { frontend: Q, cases: ALL.filter((n) => n % 3 !== 0), hooks: { backendNoReconnect: true }, what: 'DPDK client does not retry or reconnect', verdict: 'violated', check: neverConnected },
  { frontend: VU, cases: [2, 11], hooks: { backendNoReconnect: true }, what: 'DPDK client does not retry or reconnect', verdict: 'violated', check: neverConnected },
];

const hookNames = (h: ProfileHooks): string => Object.keys(h).join(' + ');

describe('pvp-reconnect plan: every case rests on a named reconnect mechanism', () => {
  for (const row of ROWS) {
    describe(`${row.frontend}, ${hookNames(row.hooks)}`, () => {
      for (const n of row.cases) {
        const was = row.from?.verdict ?? realVerdict(row.frontend, n);
        const to = row.verdict === 'unchanged' ? was : row.verdict;
        it(`case ${n}: ${row.what}: ${was}${row.from ? ` (${row.from.with})` : ''}${to === was ? ' stays' : ` → ${to}`}`, { timeout: 30_000 }, () => {
          const r = run(n, row.frontend, row.hooks);
          // A broken profile is a protocol finding, never a model bug.
          for (const inv of r.invariants) expect(inv.verdict, `${inv.name}: ${inv.firstViolation?.reason}`).toBe('holds');
          if (row.verdict === 'unchanged') return unchanged(r, row.frontend, n);
          expect(row.verdict).not.toBe(was);
          const v = overallVerdict(r);
          expect(v.verdict, v.reason).toBe(row.verdict);
          row.check(r, n);
        });
      }
    });
  }

  it('every case changes its verdict under some broken mechanism, with either front-end', () => {
    for (const fe of [Q, VU]) {
      const pinned = new Set(ROWS.filter((r) => r.frontend === fe && r.verdict !== 'unchanged').flatMap((r) => r.cases));
      expect([...pinned].sort((a, b) => a - b), fe).toEqual(ALL);
    }
  });

  it('every hook is used by a row that changes a verdict', () => {
    const used = new Set(ROWS.filter((r) => r.verdict !== 'unchanged').flatMap((r) => Object.keys(r.hooks)));
    for (const h of PROFILE_HOOKS) expect(used.has(h), h).toBe(true);
  });
});
