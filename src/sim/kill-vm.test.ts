/**
 * `kill-vm` with `at`: QEMU killed in the middle of a traffic step. The packets the dead guest
 * held are lost, counted and attributed (drop reason `vm-killed`), the bounded-loss property holds
 * with them in its evidence, and traffic flows again once the VM is relaunched.
 */
import { describe, expect, it } from 'vitest';
import { overallVerdict } from './results.ts';
import { parseScenario, ScenarioError, type Scenario } from './scenario.ts';
import { runScenario } from './runner.ts';

function killDuringTraffic(ring: 'split' | 'packed', frontend: 'qemu-7.2' | 'virtio-user-22.11', vms = 1, at = 0.2502): Scenario {
  const guest = (vm: number) => [{ op: 'launch-vm', vm }, { op: 'start-forwarding', side: 'guest', vm, fwd: 'mac' }];
  return parseScenario({
    name: `kill-vm during traffic (${ring}, ${frontend})`,
    seed: 3,
    ring,
    topology: 'pvp',
    vms,
    queues: 1,
    queueSize: 256,
    frontend,
    backend: 'dpdk-22.11',
    guest: 'virtio-pmd',
    hostPortTopology: vms > 1 ? 'chained' : 'paired',
    steps: [
      { op: 'launch-backend' },
      { op: 'start-forwarding', side: 'host', fwd: 'mac' },
      ...Array.from({ length: vms }, (_, i) => guest(i)).flat(),
      { op: 'traffic', seconds: 0.5 },
      { op: 'expect', what: 'traffic-flows' },
      { op: 'traffic', seconds: 0.5 },
      { op: 'kill-vm', vm: 0, at },
      ...guest(0),
      { op: 'expect', what: 'reconnected' },
      { op: 'traffic', seconds: 0.5 },
      { op: 'expect', what: 'traffic-flows' },
      { op: 'expect', what: 'loss-within-bound' },
    ],
  });
}

describe('kill-vm during traffic', () => {
  for (const ring of ['split', 'packed'] as const) {
    for (const frontend of ['qemu-7.2', 'virtio-user-22.11'] as const) {
      it(`${ring}, ${frontend}: loss bounded and attributed to the kill, traffic resumes after relaunch`, () => {
        // Two instants of the same step: what the guest holds depends on where its poll loop is.
        let held = 0;
        for (const at of [0.2502, 0.2504, 0.25065]) {
          const { result } = runScenario(killDuringTraffic(ring, frontend, 1, at));
          const v = overallVerdict(result);
          expect(v.verdict, v.reason).toBe('holds');
          for (const inv of result.invariants) expect(inv.verdict, inv.firstViolation?.reason).toBe('holds');
          const killed = result.counts.drops.filter((d) => d.reason === 'vm-killed');
          expect(killed.length).toBeLessThanOrEqual(1);
          held += killed[0]?.count ?? 0;
          if (killed[0]) {
            expect(killed[0].where).toMatch(/^vm0 killed at t=[\d.]+ s during traffic: \d+ unread on its RX ring, \d+ in its testpmd, \d+ on its TX ring not yet taken by the back-end, \d+ put on its RX ring by the back-end before it saw the socket close$/);
          }
          // The rest of the step found no VM behind host port 1: testpmd dropped it (fwd_dropped).
          const down = result.counts.drops.find((d) => d.reason === 'guest-not-ready' && /while vm0 was down after its kill/.test(d.where));
          expect(down!.count).toBeGreaterThan(2000);
          // Every packet that did not come back is a counted drop, no more, no less.
          const drops = result.counts.drops.reduce((n, d) => n + d.count, 0);
          expect(result.counts.packetsSent - result.counts.packetsThrough).toBe(drops);
          const loss = result.properties.find((p) => p.name === 'bounded-loss')!;
          expect(loss.verdict).toBe('holds');
          const ev = loss.evidence as { unattributedLoss: number; vmKilledDuringTraffic: { vm: number; t: number; lost: number }[] };
          expect(ev.unattributedLoss).toBe(0);
          expect(ev.vmKilledDuringTraffic).toHaveLength(1);
          expect(ev.vmKilledDuringTraffic[0]).toMatchObject({ vm: 0, lost: killed[0]?.count ?? 0, droppedWhileDown: down!.count });
          // The kill landed `at` into the traffic step, not after it.
          const step2 = result.expects[0]!.t;
          expect(ev.vmKilledDuringTraffic[0]!.t).toBeCloseTo(step2 + at, 6);
          // After the relaunch the last traffic step flowed.
          const flows = result.expects.filter((e) => e.what === 'traffic-flows');
          expect(flows.at(-1)!.verdict).toBe('holds');
          expect((flows.at(-1)!.evidence as { through: number }).through).toBeGreaterThan(4000);
        }
        // Packets were on the way through the guest at some of those instants (10 kpps, ~0.5 ms per hop).
        expect(held).toBeGreaterThan(0);
      });
    }
  }

  it('two VMs chained: the survivor keeps its ring, only the killed VM loses packets', () => {
    for (const at of [0.2502, 0.2504]) {
      const { result } = runScenario(killDuringTraffic('split', 'qemu-7.2', 2, at));
      expect(overallVerdict(result).verdict).toBe('holds');
      const killed = result.counts.drops.filter((d) => d.reason === 'vm-killed');
      expect(killed.every((d) => d.where.startsWith('vm0 '))).toBe(true);
      const drops = result.counts.drops.reduce((n, d) => n + d.count, 0);
      expect(result.counts.packetsSent - result.counts.packetsThrough).toBe(drops);
    }
  });

  it('the scenario rules: `at` lands inside the traffic step right before, pvp only', () => {
    const base = killDuringTraffic('split', 'qemu-7.2');
    const withSteps = (steps: unknown[]) => () => parseScenario({ ...base, steps });
    const pre = [{ op: 'launch-backend' }, { op: 'launch-vm', vm: 0 }];
    expect(withSteps([...pre, { op: 'traffic', seconds: 1 }, { op: 'kill-vm', vm: 0, at: 0.5 }])).not.toThrow();
    expect(withSteps([...pre, { op: 'wait', seconds: 1 }, { op: 'kill-vm', vm: 0, at: 0.5 }])).toThrow(/steps\[3\]\.at: 'at' places the crash inside the traffic step right before it; the step before is 'wait'/);
    expect(withSteps([...pre, { op: 'traffic', seconds: 1 }, { op: 'kill-vm', vm: 0, at: 1 }])).toThrow(ScenarioError);
    expect(withSteps([...pre, { op: 'traffic', seconds: 1 }, { op: 'kill-vm', vm: 0, at: 1 }])).toThrow(/expected less than the traffic step's 1 s, got 1/);
  });
});
