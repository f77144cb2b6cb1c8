import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCommand } from '../cli/run.ts';
import { runPlan } from '../cli/plan.ts';
import { MODEL_INVARIANTS, PROTOCOL_PROPERTIES, overallVerdict, parseResult } from './results.ts';
import { parseScenario, type ScenarioInput, type Step } from './scenario.ts';
import { runScenario } from './runner.ts';
import { parseTrace } from './trace.ts';

const PLAN = new URL('../../models/testplans/pvp-reconnect/', import.meta.url).pathname;
const CASE1 = join(PLAN, 'case01-pvp-split-reconnect-from-vhost-user.json');

function pvp(steps: Step[], o: Partial<ScenarioInput> = {}) {
  return parseScenario({ name: 't', seed: 5, ring: 'split', topology: 'pvp', vms: 1, queues: 1, queueSize: 256, frontend: 'qemu-7.2', backend: 'dpdk-22.11', guest: 'virtio-pmd', steps, ...o });
}
const UP: Step[] = [
  { op: 'launch-backend' },
  { op: 'start-forwarding', side: 'host', fwd: 'mac' },
  { op: 'launch-vm', vm: 0 },
  { op: 'start-forwarding', side: 'guest', vm: 0, fwd: 'mac' },
];

describe('runScenario', () => {
  it('runs a PVP scenario end to end: expects, invariants, properties, port stats, trace', () => {
    const s = pvp([...UP, { op: 'traffic', seconds: 0.1 }, { op: 'expect', what: 'traffic-flows' }]);
    const { result, trace, traceText } = runScenario(s);
    expect(parseResult(JSON.parse(JSON.stringify(result)))).toBeTruthy();
    expect(result.expects).toHaveLength(1);
    expect(result.expects[0]).toMatchObject({ what: 'traffic-flows', verdict: 'holds', path: 'steps[5]' });
    expect(result.invariants.map((i) => i.name)).toEqual([...MODEL_INVARIANTS]);
    expect(result.properties.map((p) => p.name)).toEqual([...PROTOCOL_PROPERTIES]);
    expect(result.counts.packetsThrough).toBe(result.counts.packetsSent);
    expect(result.counts.packetsSent).toBeGreaterThan(900);
    const host = result.portStats.find((p) => p.instance === 'host')!;
    expect(host.ports.map((p) => p.kind)).toEqual(['nic', 'vhost']);
    expect(result.portStats.find((p) => p.instance === 'vm0')!.ports[0]!.rxPackets).toBe(result.counts.packetsSent);
    // The whole handshake is in the trace, in one session.
    expect(parseTrace(traceText)).toEqual(trace);
    expect(trace[0]).toMatchObject({ event: 'session', n: 1 });
    expect(trace.filter((r) => 'dir' in r).length).toBeGreaterThan(20);
    expect(overallVerdict(result).verdict).toBe('holds');
  });

  it('is deterministic: the same seed gives the same trace; the invariant is checked on request', () => {
    const s = pvp([...UP, { op: 'traffic', seconds: 0.05 }, { op: 'quit-backend' }, { op: 'launch-backend' }, { op: 'expect', what: 'reconnected' }]);
    const a = runScenario(s).result;
    const b = runScenario(s).result;
    expect(a.trace.sha256).toBe(b.trace.sha256);
    expect(a.invariants.find((i) => i.name === 'deterministic')).toMatchObject({ verdict: 'holds', checks: 0 });
    const c = runScenario(s, { checkDeterminism: true }).result;
    expect(c.invariants.find((i) => i.name === 'deterministic')).toMatchObject({ verdict: 'holds', checks: 1 });
  });

  it('a back-end crash: reconnects, reports the in-flight counts the detach saw, and traffic resumes (split)', () => {
    const s = pvp([...UP, { op: 'traffic', seconds: 0.05 }, { op: 'kill-backend' }, { op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'mac' }, { op: 'expect', what: 'reconnected', within: 2 }, { op: 'traffic', seconds: 0.05 }, { op: 'expect', what: 'traffic-flows' }, { op: 'expect', what: 'ring-resumed' }, { op: 'expect', what: 'features-stable' }]);
    const { result } = runScenario(s);
    for (const e of result.expects) expect(e.verdict, `${e.what}: ${e.reason}`).toBe('holds');
    expect(result.counts.reconnects).toBe(1);
    expect(result.counts.backendRestarts).toBe(1);
    expect(result.properties.find((p) => p.name === 'bounded-loss')!.evidence).toMatchObject({ inFlightAtCrash: { tx: 0, rx: 0 } });
  });

  it('expect reconnected without a restart is violated, with a reason', () => {
    const { result } = runScenario(pvp([{ op: 'launch-backend' }, { op: 'expect', what: 'reconnected' }]));
    expect(result.expects[0]).toMatchObject({ verdict: 'violated', reason: 'no restart happened before this check' });
  });

  it('refuses what it does not model yet with a clear error', () => {
    expect(() => runScenario(pvp([{ op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'csum' }]))).toThrow(/forwarding mode 'csum' is not modelled/);
  });
});

describe('vhostsim run / plan', () => {
  it('run prints expects, invariants and properties, and exits 0', () => {
    const out = runCommand(CASE1, { seed: 3 });
    expect(out.exitCode).toBe(0);
    expect(out.result.seed).toBe(3);
    const text = out.lines.join('\n');
    expect(text).toMatch(/model invariants:\n {2}memory-safety +holds/);
    expect(text).toMatch(/protocol properties:/);
    expect(text).toMatch(/\| 1 \| split \| PVP \| 1 \|/);
    expect(JSON.parse(runCommand(CASE1, { json: true }).lines[0]!).format).toBe('vhostsim-result/1');
  });

  it('plan writes a result and a trace per case and exits 0 whatever the verdicts', { timeout: 60_000 }, () => {
    const out = mkdtempSync(join(tmpdir(), 'vhostsim-plan-'));
    try {
      const p = runPlan(PLAN, { out });
      expect(p.results).toHaveLength(18);
      expect(p.exitCode).toBe(0);
      expect(p.table.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| case')).length).toBe(18);
      const r = parseResult(JSON.parse(readFileSync(join(out, 'case10-pvp-packed-reconnect-from-vhost-user.result.json'), 'utf8')));
      expect(r.trace.path).toBe('case10-pvp-packed-reconnect-from-vhost-user.trace.jsonl');
      expect(parseTrace(readFileSync(join(out, r.trace.path!), 'utf8'))).toHaveLength(r.trace.records);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

describe('a back-end killed during traffic (kill-backend at)', () => {
  const crash = (frontend: 'qemu-7.2' | 'virtio-user-22.11', ring: 'split' | 'packed', at: number) =>
    runScenario(
      parseScenario({
        name: 'crash', seed: 5, ring, topology: 'pvp', vms: 1, queues: 1, queueSize: 256, frontend, backend: 'dpdk-22.11', guest: 'virtio-pmd',
        steps: [
          { op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'mac' }, { op: 'launch-vm', vm: 0 }, { op: 'start-forwarding', side: 'guest', vm: 0, fwd: 'mac' },
          { op: 'traffic', seconds: 0.1 }, { op: 'kill-backend', at },
          { op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'mac' }, { op: 'traffic', seconds: 0.1 }, { op: 'expect', what: 'traffic-flows' },
        ],
      }),
    ).result;
  const prop = (r: ReturnType<typeof crash>, name: string) => r.properties.find((p) => p.name === name)!;

  it('qemu-7.2 split, RX buffers in flight: the packets written into them are lost, within the bound', () => {
    const r = crash('qemu-7.2', 'split', 0.0502);
    expect(r.counts.backendRestarts).toBe(1);
    expect(prop(r, 'bounded-loss')).toMatchObject({ verdict: 'holds', evidence: { unattributedLoss: 10, inFlightAtCrash: { tx: 0, rx: 10 }, allowed: { lost: 10 } } });
    // The resume at used->idx re-offers the 10 popped RX buffers: the modelled split limitation.
    expect(prop(r, 'ring-state-survives-reconnect').mechanism!.summary).toMatch(/split resume at used->idx 490 re-consumes 10 buffers popped but not used/);
  });

  it('qemu-7.2 split, TX buffers in flight: re-sent after the resume, duplicates within the bound', () => {
    const r = crash('qemu-7.2', 'split', 0.0507);
    expect(r.counts.duplicates).toBe(10);
    expect(prop(r, 'no-duplicate-delivery')).toMatchObject({ verdict: 'holds', evidence: { duplicates: 10, inFlightAtCrash: { tx: 10, rx: 0 }, allowed: { duplicates: 10 } } });
    expect(prop(r, 'bounded-loss').verdict).toBe('holds');
  });

  it('virtio-user-22.11 packed: the ring reset drops the TX packets in flight, loss bounded and counted', () => {
    const r = crash('virtio-user-22.11', 'packed', 0.05);
    expect(prop(r, 'bounded-loss')).toMatchObject({ verdict: 'holds', evidence: { unattributedLoss: 10, droppedByRingReset: { tx: 10 }, allowed: { lost: 10 } } });
    expect(r.counts.drops).toContainEqual({ reason: 'ring-reset', where: 'virtio-user packed ring reset (guest TX)', count: 10 });
    expect(overallVerdict(r).verdict).toBe('holds');
  });

  it('qemu-7.2 packed: fails as modelled (stale base), not violated', () => {
    const r = crash('qemu-7.2', 'packed', 0.05);
    expect(prop(r, 'bounded-loss').verdict).toBe('fails-as-modelled');
    for (const inv of r.invariants) expect(inv.verdict).toBe('holds');
  });

  it('at must fall inside the traffic step right before the kill', () => {
    const base = { name: 'x', ring: 'split', topology: 'pvp', vms: 1, queues: 1, queueSize: 256, frontend: 'qemu-7.2', backend: 'dpdk-22.11', guest: 'virtio-pmd' } as const;
    expect(() => parseScenario({ ...base, steps: [{ op: 'launch-backend' }, { op: 'launch-vm', vm: 0 }, { op: 'traffic', seconds: 0.1 }, { op: 'kill-backend', at: 0.2 }] })).toThrow(/steps\[3\]\.at: expected less than the traffic step's 0\.1 s, got 0\.2/);
    expect(() => parseScenario({ ...base, steps: [{ op: 'launch-backend' }, { op: 'kill-backend', at: 0.01 }] })).toThrow(/steps\[1\]\.at: 'at' places the crash inside the traffic step right before it; the step before is 'launch-backend'/);
  });
});

describe('loopback (virtio-user ↔ vhost, no NIC)', () => {
  for (const ring of ['split', 'packed'] as const) {
    it(`${ring}: txonly on virtio-user reaches the host's rxonly, before and after a back-end quit and a crash`, () => {
      const s = parseScenario({
        name: `loopback ${ring}`, seed: 3, ring, topology: 'loopback', vms: 1, queues: 1, queueSize: 1024, frontend: 'virtio-user-22.11', backend: 'dpdk-22.11', guest: 'virtio-pmd',
        steps: [
          { op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'rxonly' }, { op: 'launch-vm', vm: 0 },
          { op: 'traffic', seconds: 0.2 }, { op: 'expect', what: 'traffic-flows' },
          { op: 'quit-backend' }, { op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'rxonly' }, { op: 'expect', what: 'reconnected' },
          { op: 'traffic', seconds: 0.2 }, { op: 'expect', what: 'traffic-flows' },
          { op: 'kill-backend' }, { op: 'launch-backend' }, { op: 'start-forwarding', side: 'host', fwd: 'rxonly' },
          { op: 'traffic', seconds: 0.2 }, { op: 'expect', what: 'traffic-flows' },
        ],
      });
      const { result } = runScenario(s);
      for (const inv of result.invariants) expect(inv.verdict).toBe('holds');
      expect(overallVerdict(result).verdict, overallVerdict(result).reason).toBe('holds');
      expect(result.counts.reconnects).toBe(2);
      expect(result.counts.packetsThrough).toBe(result.counts.packetsSent);
      expect(result.expects[0]!.reason).toMatch(/^testpmd txonly on virtio-user → host vhost port: \d+ of \d+ packets received by the host$/);
    });
  }
});
