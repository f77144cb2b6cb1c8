import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  EXPECT_WHATS,
  STEP_OPS,
  ScenarioError,
  loadScenario,
  parseScenario,
  scenarioJsonSchema,
  stepPath,
  unrolledLength,
  walkSteps,
  type ScenarioIssue,
} from './scenario.ts';

/** The example of DESIGN.md "Formats", completed. */
const DESIGN_EXAMPLE = {
  name: 'pvp split reconnect from vhost-user',
  ring: 'split',
  topology: 'pvp',
  vms: 1,
  queues: 1,
  queueSize: 1024,
  frontend: 'qemu-7.2',
  backend: 'dpdk-22.11',
  guest: 'virtio-pmd',
  steps: [
    { op: 'launch-backend' },
    { op: 'launch-vm', vm: 0 },
    { op: 'traffic', seconds: 1 },
    { op: 'expect', what: 'traffic-flows' },
    { op: 'quit-backend' },
    { op: 'launch-backend' },
    { op: 'expect', what: 'reconnected' },
    { op: 'repeat', times: 8, steps: [{ op: 'quit-backend' }, { op: 'launch-backend' }, { op: 'expect', what: 'reconnected' }] },
  ],
};

type Json = Record<string, unknown>;
const base = (over: Json = {}): Json => ({ ...structuredClone(DESIGN_EXAMPLE), ...over });
const vm2vm = (over: Json = {}): Json => base({ topology: 'vm2vm', vms: 2, guest: 'virtio-net', steps: [{ op: 'launch-backend' }], ...over });

function issuesOf(json: unknown): ScenarioIssue[] {
  try {
    parseScenario(json);
  } catch (e) {
    expect(e).toBeInstanceOf(ScenarioError);
    return [...(e as ScenarioError).issues];
  }
  throw new Error('expected the scenario to be refused');
}

describe('parseScenario: structure', () => {
  it('accepts DESIGN.md’s example and fills the defaults', () => {
    const s = parseScenario(DESIGN_EXAMPLE);
    expect(s.hostPortTopology).toBe('paired');
    expect(s.mrgRxbuf).toBe(true);
    expect(s.steps).toHaveLength(8);
  });

  it('accepts every op and every expect kind, and a $schema key for editors', () => {
    const s = parseScenario(
      base({
        $schema: '../scenario.schema.json',
        steps: [
          { op: 'launch-backend', planStep: '1' },
          { op: 'start-forwarding', side: 'host', fwd: 'mac' },
          { op: 'launch-vm', vm: 0 },
          { op: 'start-forwarding', side: 'guest', vm: 0, fwd: 'io' },
          { op: 'traffic', seconds: 0.5, rate: 1e6, size: 1518, flows: 4 },
          { op: 'wait', seconds: 2 },
          ...EXPECT_WHATS.map((what) => ({ op: 'expect', what })),
          { op: 'expect', what: 'reconnected', within: 3, vm: 0 },
          { op: 'stop-forwarding', side: 'guest', vm: 0 },
          { op: 'reboot-vm', vm: 0 },
          { op: 'kill-vm', vm: 0 },
          { op: 'launch-vm', vm: 0 },
          { op: 'quit-vm', vm: 0 },
          { op: 'stop-forwarding', side: 'host' },
          { op: 'kill-backend' },
          { op: 'launch-backend' },
          { op: 'quit-backend' },
        ],
      }),
    );
    const ops = new Set([...walkSteps(s.steps)].map((w) => w.step.op));
    expect([...ops].sort()).toEqual(STEP_OPS.filter((o) => o !== 'repeat').sort());
  });

  it('names the path of every structural problem at once', () => {
    const issues = issuesOf(
      base({
        ring: 'triangle',
        vms: 0,
        extra: true,
        steps: [
          { op: 'launch-backend' },
          { op: 'fly' },
          { op: 'repeat', times: 0, steps: [{ op: 'expect', what: 'nope', time: 3 }] },
          { op: 'traffic' },
        ],
      }),
    );
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    expect(Object.keys(byPath).sort()).toEqual(
      ['extra', 'ring', 'vms', 'steps[1].op', 'steps[2].times', 'steps[2].repeat.steps[0].what', 'steps[2].repeat.steps[0].time', 'steps[3].seconds'].sort(),
    );
    expect(byPath['extra']).toBe('unknown field');
    expect(byPath['steps[1].op']).toMatch(/^unknown op "fly"; expected one of launch-backend, /);
    expect(byPath['steps[2].times']).toMatch(/got 0$/);
    expect(byPath['steps[2].repeat.steps[0].what']).toMatch(/got "nope"$/);
    expect(byPath['steps[3].seconds']).toBe('missing (expected number)');
  });

  it('renders nested repeat bodies as .repeat.steps[i]', () => {
    const issues = issuesOf(
      base({
        steps: [{ op: 'launch-backend' }, { op: 'repeat', times: 2, steps: [{ op: 'repeat', times: 2, steps: [{ op: 'wait', seconds: 1 }, { op: 'wait', seconds: 1 }, { op: 'reboot-vm', vm: -1 }] }] }],
      }),
    );
    expect(issues.map((i) => i.path)).toEqual(['steps[1].repeat.steps[0].repeat.steps[2].vm']);
  });

  it('refuses an empty step list, a repeat with no body, and absurd numbers', () => {
    expect(issuesOf(base({ steps: [] }))[0]!.path).toBe('steps');
    expect(issuesOf(base({ steps: [{ op: 'repeat', times: 2, steps: [] }] }))[0]!.path).toBe('steps[0].repeat.steps');
    expect(issuesOf(base({ steps: [{ op: 'repeat', times: 1e9, steps: [{ op: 'wait', seconds: 1 }] }] }))[0]!.path).toBe('steps[0].times');
    expect(issuesOf(base({ steps: [{ op: 'traffic', seconds: 1, size: 10 }] }))[0]!.path).toBe('steps[0].size');
    expect(issuesOf(base({ queues: 9 }))[0]!.path).toBe('queues');
  });
});

describe('parseScenario: cross-field rules', () => {
  it('vm indices must be below vms, wherever they are', () => {
    const issues = issuesOf(
      base({
        vms: 2,
        hostPortTopology: 'chained',
        steps: [
          { op: 'launch-backend' },
          { op: 'launch-vm', vm: 0 },
          { op: 'launch-vm', vm: 1 },
          { op: 'wait', seconds: 1 },
          { op: 'repeat', times: 3, steps: [{ op: 'expect', what: 'reconnected', vm: 5 }, { op: 'reboot-vm', vm: 2 }] },
        ],
      }),
    );
    expect(issues).toEqual([
      { path: 'steps[4].repeat.steps[0].vm', message: 'expected 0..1 (vms = 2), got 5' },
      { path: 'steps[4].repeat.steps[1].vm', message: 'expected 0..1 (vms = 2), got 2' },
    ]);
  });

  it('topology and guest agree: pvp ↔ virtio-pmd, vm2vm ↔ virtio-net with 2 VMs, loopback ↔ virtio-user', () => {
    expect(issuesOf(base({ guest: 'virtio-net' }))).toContainEqual({ path: 'guest', message: "topology 'pvp' forwards with testpmd in the guest: expected 'virtio-pmd', got 'virtio-net'" });
    expect(issuesOf(vm2vm({ guest: 'virtio-pmd' })).map((i) => i.path)).toEqual(['guest']);
    expect(issuesOf(vm2vm({ vms: 3 }))).toEqual([{ path: 'vms', message: "topology 'vm2vm' needs exactly 2 VMs, got 3" }]);
    expect(parseScenario(vm2vm()).topology).toBe('vm2vm');
    expect(issuesOf(base({ topology: 'loopback' })).map((i) => i.path)).toEqual(['frontend']);
    expect(parseScenario(base({ topology: 'loopback', frontend: 'virtio-user-22.11' })).frontend).toBe('virtio-user-22.11');
    expect(issuesOf(vm2vm({ frontend: 'virtio-user-22.11' })).map((i) => i.path)).toEqual(['guest']);
    // virtio-user has no kernel driver: its VM2VM runs testpmd in the two "VMs".
    expect(parseScenario(vm2vm({ frontend: 'virtio-user-22.11', guest: 'virtio-pmd' })).guest).toBe('virtio-pmd');
  });

  it('queueSize fits the ring: split a power of two up to 32768, packed any size up to 32768', () => {
    expect(issuesOf(base({ queueSize: 1000 }))).toEqual([{ path: 'queueSize', message: "a split ring's size must be a power of two ≤ 32768, got 1000" }]);
    expect(parseScenario(base({ queueSize: 32768 })).queueSize).toBe(32768);
    expect(parseScenario(base({ ring: 'packed', queueSize: 1000 })).queueSize).toBe(1000);
    expect(issuesOf(base({ ring: 'packed', queueSize: 65536 })).map((i) => i.path)).toEqual(['queueSize']);
  });

  it('multi-VM PVP needs the chained host topology', () => {
    const twoVms = { vms: 2, steps: [{ op: 'launch-backend' }] };
    expect(issuesOf(base(twoVms)).map((i) => i.path)).toEqual(['hostPortTopology']);
    expect(parseScenario(base({ ...twoVms, hostPortTopology: 'chained' })).hostPortTopology).toBe('chained');
  });

  it('one side listens and the other connects', () => {
    expect(issuesOf(base({ options: { backend: { client: false } } }))).toEqual([
      { path: 'options.backend.client', message: 'the back-end listens (client=0), so the front-end must connect (server: false)' },
    ]);
    expect(issuesOf(base({ options: { frontend: { server: false } } })).map((i) => i.path)).toEqual(['options.frontend.server']);
    expect(parseScenario(base({ options: { backend: { client: false }, frontend: { server: false } } })).options?.backend?.client).toBe(false);
    expect(issuesOf(base({ options: { frontend: { inOrder: true } } })).map((i) => i.path)).toEqual(['options.frontend.inOrder']);
  });

  it('forwarding: guest side needs a vm and a testpmd guest; host side takes no vm', () => {
    const issues = issuesOf(
      vm2vm({
        steps: [
          { op: 'launch-backend' },
          { op: 'launch-vm', vm: 0 },
          { op: 'start-forwarding', side: 'guest', vm: 0 },
          { op: 'start-forwarding', side: 'host', vm: 0 },
          { op: 'stop-forwarding', side: 'guest' },
        ],
      }),
    );
    expect(issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      "steps[2].side: guest 'virtio-net' runs no testpmd; forwarding in the guest needs 'virtio-pmd'",
      "steps[3].vm: only side 'guest' takes a vm",
      "steps[4].vm: side 'guest' needs the vm whose testpmd it drives",
      "steps[4].side: guest 'virtio-net' runs no testpmd; forwarding in the guest needs 'virtio-pmd'",
    ]);
  });

  it('traffic: from/to only for vm2vm, two different running VMs', () => {
    expect(issuesOf(base({ steps: [{ op: 'traffic', seconds: 1, from: 0 }] }))).toEqual([{ path: 'steps[0].from', message: "'from' is for vm2vm streams; topology is 'pvp'" }]);
    const up = [{ op: 'launch-vm', vm: 0 }, { op: 'launch-vm', vm: 1 }];
    expect(issuesOf(vm2vm({ steps: [...up, { op: 'traffic', seconds: 1, from: 1, to: 1 }] })).map((i) => i.path)).toEqual(['steps[2].to']);
    expect(issuesOf(vm2vm({ steps: [{ op: 'launch-vm', vm: 0 }, { op: 'traffic', seconds: 1 }] }))).toEqual([
      { path: 'steps[1]', message: 'traffic between VMs while VM 1 is not running' },
    ]);
    expect(parseScenario(vm2vm({ steps: [...up, { op: 'traffic', seconds: 60, from: 1, to: 0 }] })).steps).toHaveLength(3);
  });

  it('expect: within only bounds reconnected', () => {
    expect(issuesOf(base({ steps: [{ op: 'expect', what: 'traffic-flows', within: 2 }] }))).toEqual([
      { path: 'steps[0].within', message: "'within' bounds 'reconnected' only, not 'traffic-flows'" },
    ]);
  });
});

describe('parseScenario: process lifecycle', () => {
  it('refuses launching what runs and stopping what does not', () => {
    const issues = issuesOf(
      base({
        steps: [
          { op: 'quit-backend' },
          { op: 'launch-backend' },
          { op: 'launch-backend' },
          { op: 'reboot-vm', vm: 0 },
          { op: 'launch-vm', vm: 0 },
          { op: 'launch-vm', vm: 0 },
          { op: 'kill-vm', vm: 0 },
          { op: 'quit-vm', vm: 0 },
          { op: 'start-forwarding', side: 'guest', vm: 0 },
        ],
      }),
    );
    expect(issues).toEqual([
      { path: 'steps[0]', message: 'quit-backend while the back-end is not running' },
      { path: 'steps[2]', message: 'launch-backend while the back-end is running' },
      { path: 'steps[3]', message: 'reboot-vm 0 while VM 0 is not running' },
      { path: 'steps[5]', message: 'launch-vm 0 while VM 0 is running' },
      { path: 'steps[7]', message: 'quit-vm 0 while VM 0 is not running' },
      { path: 'steps[8]', message: 'start-forwarding in VM 0 while it is not running' },
    ]);
  });

  it('a repeat body must leave the processes as it found them, or its second pass fails', () => {
    const issues = issuesOf(base({ steps: [{ op: 'launch-backend' }, { op: 'repeat', times: 3, steps: [{ op: 'quit-backend' }] }] }));
    expect(issues).toEqual([{ path: 'steps[1].repeat.steps[0]', message: 'quit-backend while the back-end is not running (on the second iteration)' }]);
    // Once is fine.
    expect(parseScenario(base({ steps: [{ op: 'launch-backend' }, { op: 'repeat', times: 1, steps: [{ op: 'quit-backend' }] }] })).steps).toHaveLength(2);
  });

  it('a reboot keeps the VM running; forwarding in the guest after it is fine', () => {
    const s = parseScenario(
      base({ steps: [{ op: 'launch-backend' }, { op: 'launch-vm', vm: 0 }, { op: 'reboot-vm', vm: 0 }, { op: 'start-forwarding', side: 'guest', vm: 0, fwd: 'mac' }] }),
    );
    expect(s.steps).toHaveLength(4);
  });
});

describe('walking, paths, files, schema', () => {
  it('walkSteps unrolls repeats with indices and iterations; stepPath renders them', () => {
    const s = parseScenario(base({ steps: [{ op: 'launch-backend' }, { op: 'repeat', times: 2, steps: [{ op: 'quit-backend' }, { op: 'launch-backend' }] }] }));
    const walked = [...walkSteps(s.steps)].map((w) => `${stepPath(w.indices)}#${w.iteration.join('.')}:${w.step.op}`);
    expect(walked).toEqual([
      'steps[0]#:launch-backend',
      'steps[1].repeat.steps[0]#0:quit-backend',
      'steps[1].repeat.steps[1]#0:launch-backend',
      'steps[1].repeat.steps[0]#1:quit-backend',
      'steps[1].repeat.steps[1]#1:launch-backend',
    ]);
    expect(unrolledLength(s.steps)).toBe(5);
    expect(unrolledLength(parseScenario(DESIGN_EXAMPLE).steps)).toBe(7 + 8 * 3);
  });

  const dir = mkdtempSync(join(tmpdir(), 'vhostsim-scenario-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loadScenario reads a file and names it in errors', () => {
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify(DESIGN_EXAMPLE));
    expect(loadScenario(good).name).toBe(DESIGN_EXAMPLE.name);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{ "name": ');
    expect(() => loadScenario(bad)).toThrow(ScenarioError);
    expect(() => loadScenario(bad)).toThrow(/bad\.json: invalid scenario \(1 problem\):\n {2}\(document\): not readable as JSON/);
    const wrong = join(dir, 'wrong.json');
    writeFileSync(wrong, JSON.stringify(base({ vms: 2, hostPortTopology: 'chained', steps: [{ op: 'launch-vm', vm: 3 }] })));
    expect(() => loadScenario(wrong)).toThrow(/wrong\.json: invalid scenario \(1 problem\):\n {2}steps\[0\]\.vm: expected 0\.\.1 \(vms = 2\), got 3/);
  });

  it('exports a JSON Schema with the recursive step definition', () => {
    const schema = scenarioJsonSchema() as { $defs: { Step: { oneOf: { properties: { op: { const: string } } }[] } }; required: string[]; additionalProperties: boolean };
    expect(schema.$defs.Step.oneOf.map((o) => o.properties.op.const).sort()).toEqual([...STEP_OPS].sort());
    expect(JSON.stringify(schema)).toContain('"$ref":"#/$defs/Step"');
    expect(schema.required).not.toContain('hostPortTopology'); // has a default
    expect(schema.required).toContain('steps');
    expect(schema.additionalProperties).toBe(false);
  });
});
