import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SCHEMA_FILE,
  ScenarioError,
  loadScenario,
  parseScenario,
  scenarioJsonSchema,
  walkSteps,
  type RepeatStep,
  type Scenario,
  type Step,
} from '../../src/sim/scenario.ts';

/**
 * The 18 cases of the vhost-user/virtio pvp reconnect test plan, held to the plan's structure:
 * which side restarts and how often, split or packed, one or two VMs, PVP or VM2VM, and a check
 * after every restart.
 */

const DIR = fileURLToPath(new URL('./pvp-reconnect/', import.meta.url));
const FILES = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();
const README = readFileSync(`${DIR}README.md`, 'utf8');

type Who = 'vhost-user' | 'vm' | 'stability';
interface Expected {
  ring: 'split' | 'packed';
  topology: 'pvp' | 'vm2vm';
  vms: number;
  who: Who;
}

/** The plan's layout: cases 1-9 split, 10-18 packed; in each nine, three PVP 1 VM, three PVP 2 VMs, three VM2VM. */
function expected(n: number): Expected {
  const k = (n - 1) % 9;
  return {
    ring: n <= 9 ? 'split' : 'packed',
    topology: k < 6 ? 'pvp' : 'vm2vm',
    vms: k < 3 ? 1 : 2,
    who: (['vhost-user', 'vm', 'stability'] as const)[k % 3],
  };
}

const BACKEND_OPS = new Set(['quit-backend', 'kill-backend', 'launch-backend']);
const VM_RESTART_OPS = new Set(['reboot-vm', 'quit-vm', 'kill-vm']);

const scenarios = FILES.map((file) => ({ file, s: loadScenario(`${DIR}${file}`), n: Number(/^case(\d\d)-/.exec(file)?.[1]) }));
const topLevelRepeats = (s: Scenario): RepeatStep[] => s.steps.filter((x): x is RepeatStep => x.op === 'repeat');
const ops = (steps: readonly Step[]): string[] => [...walkSteps(steps)].map((w) => w.step.op);
const count = (steps: readonly Step[], op: string, vm?: number): number =>
  [...walkSteps(steps)].filter((w) => w.step.op === op && (vm === undefined || ('vm' in w.step && w.step.vm === vm))).length;

describe('pvp reconnect test plan: the files', () => {
  it('has the 18 cases, named caseNN-<topology>-<ring>[-multi-vm]-<who>.json', () => {
    expect(FILES).toHaveLength(18);
    const pattern = /^case(\d\d)-(pvp|vm2vm)-(split|packed)(-multi-vm)?-(reconnect-from-vhost-user|reconnect-from-vms?|reconnect-stability)\.json$/;
    FILES.forEach((f, i) => {
      const m = pattern.exec(f);
      expect(m, f).not.toBeNull();
      const n = i + 1;
      expect(Number(m![1])).toBe(n);
      const e = expected(n);
      expect(m![2]).toBe(e.topology);
      expect(m![3]).toBe(e.ring);
      expect(m![4] !== undefined).toBe(e.topology === 'pvp' && e.vms === 2);
      expect(m![5]).toBe({ 'vhost-user': 'reconnect-from-vhost-user', vm: e.vms === 1 ? 'reconnect-from-vm' : 'reconnect-from-vms', stability: 'reconnect-stability' }[e.who]);
    });
  });

  it('all parse, and every step says which plan step it implements', () => {
    for (const { file, s, n } of scenarios) {
      expect(s.plan?.case, file).toBe(n);
      expect(s.plan?.document).toBe('vhost-user/virtio pvp reconnect test plan');
      for (const w of walkSteps(s.steps)) expect(w.step.planStep, `${file} ${w.step.op}`).toMatch(/^\d+( \(rerun \d+\))?$/);
      for (const r of topLevelRepeats(s)) expect(r.planStep).toMatch(/^\d+$/);
    }
  });

  it('the README maps every file to its case', () => {
    for (const { file, n } of scenarios) expect(README).toMatch(new RegExp(`\\| \`${file.replace(/\./g, '\\.')}\` \\| ${n} \\|`));
  });

  it('the committed JSON Schema is up to date', () => {
    expect(JSON.parse(readFileSync(DEFAULT_SCHEMA_FILE, 'utf8'))).toEqual(scenarioJsonSchema());
  });
});

describe.each(scenarios.map((x) => [x.n, x] as const))('case %i', (n, { file, s }) => {
  const e = expected(n);

  it('uses the plan’s set-up: ring, topology, VMs, guest, queue size 1024, mrg_rxbuf, QEMU server + DPDK client', () => {
    expect(s).toMatchObject({ ring: e.ring, topology: e.topology, vms: e.vms, queues: 1, queueSize: 1024, mrgRxbuf: true, frontend: 'qemu-7.2', backend: 'dpdk-22.11' });
    expect(s.guest).toBe(e.topology === 'vm2vm' ? 'virtio-net' : 'virtio-pmd');
    expect(s.hostPortTopology).toBe(e.topology === 'pvp' && e.vms === 2 ? 'chained' : 'paired');
    expect(s.options?.backend?.client).toBe(true);
    expect(s.options?.frontend?.server).toBe(true);
    expect(s.plan!.title).toContain(`${e.ring} ring`);
    expect(s.plan!.title.includes('multi VMs')).toBe(e.topology === 'pvp' && e.vms === 2);
    expect(s.plan!.title.includes('VM2VM')).toBe(e.topology === 'vm2vm');
    expect(file).toContain(e.ring);
  });

  it('starts the back-end, every VM (and every guest testpmd), then checks traffic before any restart', () => {
    const walked = ops(s.steps);
    const firstRestart = walked.findIndex((o) => o === 'quit-backend' || VM_RESTART_OPS.has(o));
    const before = walked.slice(0, firstRestart);
    expect(before[0]).toBe('launch-backend');
    expect(before.filter((o) => o === 'launch-vm')).toHaveLength(e.vms);
    if (e.topology === 'pvp') expect(before.filter((o) => o === 'start-forwarding')).toHaveLength(1 + e.vms);
    expect(before.slice(-2)).toEqual(['traffic', 'expect']);
  });

  it('restarts the side the plan names, as often as it says', () => {
    const repeats = topLevelRepeats(s);
    if (e.who === 'vhost-user') {
      expect(repeats).toHaveLength(0);
      expect(count(s.steps, 'quit-backend')).toBe(1);
      expect(count(s.steps, 'launch-backend')).toBe(2);
      for (const op of VM_RESTART_OPS) expect(count(s.steps, op)).toBe(0);
    } else if (e.who === 'vm') {
      expect(repeats).toHaveLength(0);
      expect(count(s.steps, 'quit-backend') + count(s.steps, 'kill-backend')).toBe(0);
      for (let vm = 0; vm < e.vms; vm++) {
        expect(count(s.steps, 'reboot-vm', vm)).toBe(1);
        expect(count(s.steps, 'quit-vm', vm)).toBe(1);
        expect(count(s.steps, 'launch-vm', vm)).toBe(2);
      }
    } else {
      // "Quit vhost-user, then re-launch, repeat it 5-8 times" then "Reboot VM(s), then re-launch, repeat it 3-5 times".
      expect(repeats).toHaveLength(2);
      const [backend, vmSide] = repeats as [RepeatStep, RepeatStep];
      expect(s.steps.indexOf(backend)).toBeLessThan(s.steps.indexOf(vmSide));
      expect(backend.times).toBeGreaterThanOrEqual(5);
      expect(backend.times).toBeLessThanOrEqual(8);
      expect(ops(backend.steps).slice(0, 2)).toEqual(['quit-backend', 'launch-backend']);
      expect(ops(backend.steps).some((o) => VM_RESTART_OPS.has(o) || o === 'launch-vm')).toBe(false);
      expect(vmSide.times).toBeGreaterThanOrEqual(3);
      expect(vmSide.times).toBeLessThanOrEqual(5);
      for (let vm = 0; vm < e.vms; vm++) {
        expect(count(vmSide.steps, 'reboot-vm', vm)).toBe(1);
        expect(count(vmSide.steps, 'launch-vm', vm)).toBe(1);
      }
      expect(ops(vmSide.steps).some((o) => BACKEND_OPS.has(o))).toBe(false);
      // The description says which counts were taken from the plan's ranges.
      expect(s.description).toContain(`${backend.times} times (plan: 5-8)`);
      expect(s.description).toContain(`${vmSide.times} times (plan: 3-5)`);
    }
    expect(count(s.steps, 'kill-backend') + count(s.steps, 'kill-vm')).toBe(0);
  });

  it('checks the reconnection and the traffic after every restart', () => {
    // Split the unrolled run at each restart; every part after one must bring the restarted side
    // back, expect reconnected, and see traffic flow.
    const walked = [...walkSteps(s.steps)].map((w) => w.step);
    const parts: Step[][] = [[]];
    for (let i = 0; i < walked.length; i++) {
      const op = walked[i]!.op;
      const restartBegins = (op === 'quit-backend' || op === 'reboot-vm') && !VM_RESTART_OPS.has(walked[i - 1]?.op ?? '');
      if (restartBegins) parts.push([]);
      parts[parts.length - 1]!.push(walked[i]!);
    }
    const restarts = parts.slice(1);
    const expectedRestarts = e.who === 'stability' ? topLevelRepeats(s).reduce((k, r) => k + r.times, 0) : 1;
    expect(restarts).toHaveLength(expectedRestarts);
    for (const part of restarts) {
      const o = part.map((x) => (x.op === 'expect' ? `expect ${x.what}` : x.op));
      expect(o).toContain('expect reconnected');
      const t = o.lastIndexOf('traffic');
      expect(t).toBeGreaterThan(0);
      expect(o.slice(t + 1)).toContain('expect traffic-flows');
      if (o[0] === 'quit-backend') expect(o.slice(1, 3)).toEqual(['launch-backend', 'start-forwarding']);
      if (e.topology === 'pvp' && o[0] === 'reboot-vm') expect(part.filter((x) => x.op === 'start-forwarding' && x.side === 'guest')).toHaveLength(e.vms);
    }
  });

  it('forwards as the plan sets it: mac for PVP, testpmd’s default io for VM2VM; traffic as the plan runs it', () => {
    for (const w of walkSteps(s.steps)) {
      const st = w.step;
      if (st.op === 'start-forwarding') expect(st.fwd).toBe(e.topology === 'pvp' ? 'mac' : 'io');
      if (st.op === 'traffic' && e.topology === 'vm2vm') expect(st).toMatchObject({ seconds: 60, from: 1, to: 0 });
    }
  });
});

describe('bad scenarios name the offending path', () => {
  const read = (name: string): Record<string, any> => JSON.parse(readFileSync(`${DIR}${name}`, 'utf8'));
  const problems = (json: unknown): string[] => {
    try {
      parseScenario(json);
    } catch (err) {
      expect(err).toBeInstanceOf(ScenarioError);
      return (err as ScenarioError).issues.map((i) => `${i.path}: ${i.message}`);
    }
    return [];
  };

  it('a VM index out of range inside a repeat', () => {
    const j = read('case03-pvp-split-reconnect-stability.json');
    j.steps[7].steps[0].vm = 1;
    expect(problems(j)).toEqual(['steps[7].repeat.steps[0].vm: expected 0..0 (vms = 1), got 1']);
  });

  it('a repeat count of zero and a misspelt field', () => {
    const j = read('case06-pvp-split-multi-vm-reconnect-stability.json');
    j.steps[8].times = 0;
    j.steps[9].steps[8].wat = 'reconnected';
    expect(problems(j)).toEqual(['steps[8].times: Too small: expected number to be >=1, got 0', 'steps[9].repeat.steps[8].wat: unknown field']);
  });

  it('an unknown expectation and an unknown op', () => {
    const j = read('case01-pvp-split-reconnect-from-vhost-user.json');
    j.steps[5].what = 'works';
    j.steps[6].op = 'restart-backend';
    const p = problems(j);
    expect(p[0]).toMatch(/^steps\[5\]\.what: Invalid option: expected one of "traffic-flows"\|.*, got "works"$/);
    expect(p[1]).toMatch(/^steps\[6\]\.op: unknown op "restart-backend"/);
  });

  it('VM2VM with the PVP guest, a split ring of size 1000, and a repeat body that does not restore the back-end', () => {
    const j = read('case09-vm2vm-split-reconnect-stability.json');
    j.guest = 'virtio-pmd';
    j.queueSize = 1000;
    j.steps[6].steps.splice(1, 1); // drop launch-backend from the body
    expect(problems(j)).toEqual([
      "queueSize: a split ring's size must be a power of two ≤ 32768, got 1000",
      "guest: topology 'vm2vm' runs the kernel driver and iperf: expected 'virtio-net', got 'virtio-pmd'",
      'steps[6].repeat.steps[1]: start-forwarding on the host while the back-end is not running',
      'steps[6].repeat.steps[0]: quit-backend while the back-end is not running (on the second iteration)',
    ]);
  });

  it('two VMs in PVP without the chained topology', () => {
    const j = read('case13-pvp-packed-multi-vm-reconnect-from-vhost-user.json');
    j.hostPortTopology = 'paired';
    expect(problems(j)).toEqual(["hostPortTopology: pvp with 2 VMs needs 'chained' (NIC → VM1 → … → NIC), got 'paired'"]);
  });
});
