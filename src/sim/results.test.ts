import { describe, expect, it } from 'vitest';
import {
  MODEL_INVARIANTS,
  PLAN_TABLE_COLUMNS,
  PROTOCOL_PROPERTIES,
  RESULT_FORMAT,
  ResultFormatError,
  formatPlanRow,
  formatPlanTable,
  overallVerdict,
  parseResult,
  type RunResult,
} from './results.ts';

/** A plausible result of plan case 10 (PVP, packed, one back-end restart). */
function sample(): RunResult {
  return {
    format: RESULT_FORMAT,
    scenario: {
      name: 'case 10: pvp packed reconnect from vhost-user',
      file: 'models/testplans/pvp-reconnect/case10-pvp-packed-reconnect-from-vhost-user.json',
      ring: 'packed',
      topology: 'pvp',
      vms: 1,
      queues: 1,
      queueSize: 1024,
      frontend: 'qemu-7.2',
      backend: 'dpdk-22.11',
      guest: 'virtio-pmd',
      plan: { document: 'vhost-user/virtio pvp reconnect test plan', case: 10, title: 'vhost-user/virtio-pmd pvp packed ring reconnect from vhost-user' },
    },
    seed: 10,
    expects: [
      { path: 'steps[5]', iteration: [], what: 'traffic-flows', planStep: '4', t: 4.2, verdict: 'holds', reason: 'RX and TX on every port', evidence: { hostPort0: { rx: 1000, tx: 1000 } } },
      { path: 'steps[9]', iteration: [], what: 'reconnected', planStep: '6', t: 6.1, verdict: 'holds', reason: 'ready 0.8 s after launch', evidence: { readyAfter: 0.8 } },
    ],
    invariants: MODEL_INVARIANTS.map((name) => ({ name, verdict: 'holds' as const, checks: 120 })),
    properties: PROTOCOL_PROPERTIES.map((name) => ({ name, verdict: 'holds' as const, checks: 4, reason: 'no failure' })),
    portStats: [
      {
        instance: 'host',
        ports: [
          { port: 0, kind: 'nic', rxPackets: 2000, rxMissed: 12, rxBytes: 128000, rxErrors: 0, rxNombuf: 0, txPackets: 1988, txErrors: 0, txBytes: 127232 },
          { port: 1, kind: 'vhost', rxPackets: 1988, rxMissed: 0, rxBytes: 127232, rxErrors: 0, rxNombuf: 0, txPackets: 1988, txErrors: 0, txBytes: 127232, txDropped: 0 },
        ],
      },
      { instance: 'vm0', ports: [{ port: 0, kind: 'virtio', rxPackets: 1988, rxMissed: 0, rxBytes: 127232, rxErrors: 0, rxNombuf: 0, txPackets: 1988, txErrors: 0, txBytes: 127232 }] },
    ],
    counts: {
      reconnects: 1,
      backendRestarts: 1,
      vmRestarts: 0,
      vmReboots: 0,
      packetsSent: 2000,
      packetsThrough: 1988,
      duplicates: 0,
      drops: [
        { reason: 'backend-down', where: 'host port 0', count: 10 },
        { reason: 'in-flight-at-crash', where: 'vm0 vring 0', count: 2 },
      ],
    },
    virtualSeconds: 7.25,
    wallSeconds: 0.412,
    trace: { path: 'case10.trace.jsonl', records: 431 },
  };
}

const MECHANISM = {
  summary: 'QEMU 7.2 kept a stale packed base across the back-end restart',
  profile: 'qemu-7.2',
  lostState: ['last_avail_idx (packed, vring 1)'],
  messages: [{ dir: 'f2b' as const, request: 'SET_VRING_BASE', vring: 1, field: 'num', value: 0x8000, connection: 2 }],
  reference: 'facts §5.4',
};

function issuesOf(json: unknown): { path: string; message: string }[] {
  try {
    parseResult(json);
  } catch (e) {
    expect(e).toBeInstanceOf(ResultFormatError);
    return [...(e as ResultFormatError).issues];
  }
  throw new Error('expected the result to be refused');
}

describe('result format', () => {
  it('round-trips through JSON', () => {
    const r = sample();
    expect(parseResult(JSON.parse(JSON.stringify(r)))).toEqual(r);
  });

  it('needs a mechanism for every fails-as-modelled verdict', () => {
    const r = sample();
    r.properties[3] = { name: 'ring-state-survives-reconnect', verdict: 'fails-as-modelled', checks: 2, reason: 'vring 1 resumed at 0, driver at 300' };
    expect(issuesOf(r)).toEqual([{ path: 'properties[3].mechanism', message: "a 'fails-as-modelled' verdict names its mechanism" }]);
    r.properties[3].mechanism = MECHANISM;
    expect(parseResult(r).properties[3]!.mechanism!.profile).toBe('qemu-7.2');
    const e = sample();
    e.expects[1] = { ...e.expects[1]!, verdict: 'fails-as-modelled' };
    expect(issuesOf(e).map((i) => i.path)).toEqual(['expects[1].mechanism']);
  });

  it('lists every model invariant and every protocol property exactly once, and keeps them apart', () => {
    const r = sample();
    r.invariants = r.invariants.slice(1);
    expect(issuesOf(r)).toEqual([{ path: 'invariants', message: "model invariant 'memory-safety' appears 0 times, expected once" }]);
    const p = sample();
    p.properties.push(p.properties[0]!);
    expect(issuesOf(p)).toEqual([{ path: 'properties', message: "protocol property 'ring-well-formed' appears 2 times, expected once" }]);
    // A protocol property in the invariant list is not a model invariant.
    const mixed = sample() as unknown as { invariants: { name: string }[] };
    mixed.invariants[0] = { ...mixed.invariants[0]!, name: 'bounded-loss' };
    expect(issuesOf(mixed).map((i) => i.path)).toContain('invariants[0].name');
  });

  it('a violated invariant names its first violation; invariants cannot fail "as modelled"', () => {
    const r = sample();
    r.invariants[0] = { name: 'memory-safety', verdict: 'violated', checks: 7 };
    expect(issuesOf(r)).toEqual([{ path: 'invariants[0].firstViolation', message: 'a violated invariant names its first violation' }]);
    const m = sample() as unknown as { invariants: { verdict: string }[] };
    m.invariants[0]!.verdict = 'fails-as-modelled';
    expect(issuesOf(m).map((i) => i.path)).toEqual(['invariants[0].verdict']);
  });

  it('checks paths, instances and counts', () => {
    const r = sample() as unknown as Record<string, any>;
    r.expects[0].path = 'steps[1].steps[2]';
    r.portStats[1].instance = 'guest0';
    r.counts.reconnects = -1;
    r.trace.sha256 = 'xyz';
    expect(issuesOf(r).map((i) => i.path).sort()).toEqual(['counts.reconnects', 'expects[0].path', 'portStats[1].instance', 'trace.sha256']);
  });
});

describe('verdicts and the plan table', () => {
  it('holds when everything holds', () => {
    expect(overallVerdict(sample())).toEqual({ verdict: 'holds', reason: '2 expects and 6 properties hold' });
  });

  it('takes the worst of expects and properties, with the first such item’s reason and mechanism', () => {
    const r = sample();
    r.properties[3] = { name: 'ring-state-survives-reconnect', verdict: 'fails-as-modelled', checks: 2, reason: 'vring 1 resumed at 0, driver at 300', mechanism: MECHANISM };
    expect(overallVerdict(r)).toEqual({
      verdict: 'fails-as-modelled',
      reason: 'ring-state-survives-reconnect: vring 1 resumed at 0, driver at 300 [qemu-7.2: QEMU 7.2 kept a stale packed base across the back-end restart]',
    });
    r.expects[1] = { ...r.expects[1]!, iteration: [2], verdict: 'violated', reason: 'not ready after 30 s' };
    expect(overallVerdict(r)).toEqual({ verdict: 'violated', reason: 'expect reconnected at steps[9] #3: not ready after 30 s' });
  });

  it('a violated model invariant decides the verdict: vhostsim itself is wrong', () => {
    const r = sample();
    r.expects[0] = { ...r.expects[0]!, verdict: 'violated', reason: 'x' };
    r.invariants[2] = { name: 'trace-complete', verdict: 'violated', checks: 431, firstViolation: { t: 3.5, event: 'f2b SET_MEM_TABLE', reason: 'message not in the trace' } };
    expect(overallVerdict(r)).toEqual({ verdict: 'violated', reason: 'model invariant trace-complete violated at t=3.50 s (f2b SET_MEM_TABLE): message not in the trace' });
  });

  it('formats a plan row: case, ring, topology, reconnects, packets, drops and why, times, verdict', () => {
    expect(formatPlanRow(sample())).toEqual({
      case: '10',
      ring: 'packed',
      topology: 'PVP',
      reconnects: '1',
      'packets through': '1,988 / 2,000',
      drops: '12 (backend-down 10, in-flight-at-crash 2)',
      'virtual time': '7.25 s',
      'wall time': '412 ms',
      verdict: 'holds',
    });
    const r = sample();
    r.scenario = { ...r.scenario, topology: 'pvp', vms: 2 };
    delete r.scenario.plan;
    r.counts = { ...r.counts, drops: [], duplicates: 3 };
    r.properties[1] = { name: 'no-duplicate-delivery', verdict: 'violated', checks: 1, reason: '3 packets delivered twice' };
    const row = formatPlanRow(r);
    expect(row.case).toBe(r.scenario.name);
    expect(row.topology).toBe('PVP ×2');
    expect(row.drops).toBe('0, 3 duplicated');
    expect(row.verdict).toBe('violated: no-duplicate-delivery: 3 packets delivered twice');
  });

  it('formats a Markdown table with every column, pipes escaped', () => {
    const r = sample();
    r.properties[0] = { name: 'ring-well-formed', verdict: 'violated', checks: 1, reason: 'used id 5 | not available' };
    const table = formatPlanTable([sample(), r]).trimEnd().split('\n');
    expect(table).toHaveLength(4);
    expect(table[0]).toBe(`| ${PLAN_TABLE_COLUMNS.join(' | ')} |`);
    expect(table[3]).toContain('used id 5 \\| not available');
    expect(table[2]!.split(' | ')).toHaveLength(PLAN_TABLE_COLUMNS.length);
  });
});
