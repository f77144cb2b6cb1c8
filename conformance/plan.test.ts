/**
 * The 18 cases of the pvp-reconnect test plan run in the model, each verdict pinned to what the
 * modelled real versions (QEMU 7.2 front-end, DPDK 22.11 back-end) produce. The packed cases
 * that restart the back-end fail as modelled: QEMU 7.2 cannot read a packed ring's state back
 * from a back-end that is gone and resends the base it held at the last start, which DPDK 22.11
 * takes for both halves of the ring (models/session.ts expectedResumeIndex, facts §5.4/§5.6).
 * conformance/plan-mechanisms.test.ts shows which mechanism each verdict rests on, by breaking it.
 */
import { describe, expect, it } from 'vitest';
import { planFiles, runPlan } from '../src/cli/plan.ts';
import { overallVerdict, parseResult, type RunResult } from '../src/sim/results.ts';
import { loadScenario } from '../src/sim/scenario.ts';
import { runScenario } from '../src/sim/runner.ts';

const DIR = new URL('../models/testplans/pvp-reconnect/', import.meta.url).pathname;

/** Cases whose back-end restarts on a packed ring: QEMU's stale packed base. */
const STALE_PACKED_BASE = new Set([10, 12, 13, 15, 16, 18]);

const files = planFiles(DIR);

describe('pvp-reconnect plan in the model', () => {
  it('has the 18 cases', () => {
    expect(files).toHaveLength(18);
  });

  for (const file of files) {
    const s = loadScenario(file);
    const n = s.plan!.case;
    it(`case ${n}: ${STALE_PACKED_BASE.has(n) ? 'fails as modelled (stale packed base)' : 'holds'}`, { timeout: 30_000 }, () => {
      const { result } = runScenario(s, { file });
      parseResult(JSON.parse(JSON.stringify(result)));
      // Model invariants hold in every run.
      for (const inv of result.invariants) expect(inv.verdict, `${inv.name}: ${inv.firstViolation?.reason}`).toBe('holds');
      const v = overallVerdict(result);
      const reconnected = result.expects.filter((e) => e.what === 'reconnected');
      expect(reconnected.length).toBeGreaterThan(0);
      // Every restart reconnects, packed or split: the control plane works in all 18.
      for (const e of reconnected) expect(e.verdict, e.reason).toBe('holds');
      const prop = (name: string): RunResult['properties'][number] => result.properties.find((p) => p.name === name)!;
      expect(prop('features-stable').verdict).toBe('holds');
      expect(prop('ring-well-formed').verdict).toBe('holds');
      expect(prop('no-duplicate-delivery').verdict).toBe('holds');
      if (!STALE_PACKED_BASE.has(n)) {
        expect(v.verdict, v.reason).toBe('holds');
        expect(result.counts.packetsThrough).toBe(result.counts.packetsSent);
        return;
      }
      expect(v.verdict, v.reason).toBe('fails-as-modelled');
      const ring = prop('ring-state-survives-reconnect');
      expect(ring.verdict).toBe('fails-as-modelled');
      expect(ring.mechanism!.profile).toBe('qemu-7.2');
      expect(ring.mechanism!.lostState!.join(' ')).toMatch(/last_avail_idx\/avail_wrap_counter \(packed, vring \d\)/);
      const msg = ring.mechanism!.messages![0]!;
      expect(msg).toMatchObject({ dir: 'f2b', request: 'SET_VRING_BASE', field: 'num' });
      // The stale base is the one QEMU started with: slot 0, wrap counter 1.
      expect(msg.value).toBe(0x8000);
      expect(prop('liveness').verdict).toBe('fails-as-modelled');
      // The first traffic check after the first back-end restart is the one that fails.
      const failed = result.expects.filter((e) => e.verdict !== 'holds');
      expect(failed.every((e) => e.what === 'traffic-flows' && e.verdict === 'fails-as-modelled' && e.mechanism?.profile === 'qemu-7.2')).toBe(true);
    });
  }
});

/**
 * The same 18 cases with DPDK 22.11 virtio-user (`server=1`) as each "VM" — what
 * `vhostsim plan DIR --frontend virtio-user-22.11` runs. All 18 hold:
 * - split: virtio-user sends base 0 on reconnect, but DPDK re-bases both indices to used->idx,
 *   and a graceful `quit` leaves nothing popped-but-unused, so the ring resumes where it was;
 * - packed: virtio-user does not need to restore anything — it rebuilds its packed rings on every
 *   reconnect ("Packets on the fly will be dropped"), sends base 0 / wrap 1, and the back-end
 *   starts there too. After a graceful quit what the reset drops is RX buffers posted empty and
 *   TX buffers already sent but not yet reclaimed, so no packet is lost; the bound it allows
 *   (every TX buffer dropped) is counted in the bounded-loss evidence;
 * - VM2VM: virtio-user has no kernel driver for iperf, so testpmd txonly → rxonly stands in.
 */
const PACKED_BACKEND_RESTART = new Set([10, 12, 13, 15, 16, 18]);

describe('pvp-reconnect plan with virtio-user-22.11 as the VM', () => {
  const out = runPlan(DIR, { frontend: 'virtio-user-22.11' });
  for (const result of out.results) {
    const n = result.scenario.plan!.case;
    it(`case ${n}: holds${PACKED_BACKEND_RESTART.has(n) ? ' (packed rings reset on each back-end reconnect, nothing lost)' : ''}`, () => {
      parseResult(JSON.parse(JSON.stringify(result)));
      expect(result.scenario.frontend).toBe('virtio-user-22.11');
      for (const inv of result.invariants) expect(inv.verdict, `${inv.name}: ${inv.firstViolation?.reason}`).toBe('holds');
      const v = overallVerdict(result);
      expect(v.verdict, v.reason).toBe('holds');
      expect(result.counts.packetsThrough).toBe(result.counts.packetsSent);
      expect(result.counts.packetsSent).toBeGreaterThan(0);
      const loss = result.properties.find((p) => p.name === 'bounded-loss')!;
      const ev = loss.evidence as { droppedByRingReset?: { tx: number; rx: number }; allowed: { lost: number | null } };
      if (PACKED_BACKEND_RESTART.has(n)) {
        // Every back-end reconnect rebuilt the rings: the RX rings dropped the buffers the driver
        // had posted, and the bound allows for every TX buffer dropped.
        expect(ev.droppedByRingReset!.rx).toBeGreaterThan(0);
        expect(ev.allowed.lost).toBe(ev.droppedByRingReset!.tx);
      } else {
        expect(ev.droppedByRingReset).toBeUndefined();
        expect(ev.allowed.lost).toBe(0);
      }
      if (result.scenario.topology === 'vm2vm') {
        expect(result.scenario.guest).toBe('virtio-pmd');
        for (const e of result.expects.filter((x) => x.what === 'traffic-flows')) expect(e.reason).toMatch(/testpmd txonly vm1 → rxonly vm0 \(virtio-user has no kernel driver for iperf\)/);
      }
    });
  }

  it('the table says what stood in for iperf', () => {
    expect(out.table).toMatch(/VM2VM cases 7, 8, 9, 16, 17, 18 under virtio-user-22\.11: testpmd txonly → rxonly/);
  });
});
