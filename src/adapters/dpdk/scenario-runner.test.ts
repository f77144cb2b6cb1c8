import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadScenario, parseScenario } from '../../sim/scenario.ts';
import { overallVerdict, parseResult, formatPlanRow } from '../../sim/results.ts';
import { parseNicSpec, realUnsupported, runScenarioReal, ScenarioRun } from './scenario-runner.ts';

const file = (dir: string, f: string): string => fileURLToPath(new URL(`../../../models/testplans/${dir}/${f}`, import.meta.url));

describe('realUnsupported', () => {
  it('accepts the loopback plan', () => {
    for (const f of ['case01-loopback-split-reconnect-from-vhost-user.json', 'case03-loopback-split-reconnect-stability.json', 'case10-loopback-packed-reconnect-from-vhost-user.json', 'case12-loopback-packed-reconnect-stability.json']) {
      expect(realUnsupported(loadScenario(file('pvp-reconnect-loopback', f))), f).toBeUndefined();
    }
  });

  it('accepts pvp with virtio-user as the VM and loopback with up to 4 queue pairs', () => {
    for (const f of ['case01-pvp-virtio-user-split-reconnect-from-vhost-user.json', 'case10-pvp-virtio-user-packed-reconnect-from-vhost-user.json']) {
      expect(realUnsupported(loadScenario(file('pvp-reconnect-virtio-user', f))), f).toBeUndefined();
    }
    const mq = loadScenario(file('pvp-reconnect-loopback', 'case01-loopback-split-reconnect-2queues.json'));
    expect(realUnsupported(mq)).toBeUndefined();
    expect(realUnsupported({ ...mq, queues: 4 })).toBeUndefined();
    expect(realUnsupported({ ...mq, queues: 5 })).toMatch(/1–4 queue pairs/);
  });

  it('names why qemu-7.2, multi-VM pvp and vm2vm cannot run here', () => {
    const pvp = loadScenario(file('pvp-reconnect', 'case01-pvp-split-reconnect-from-vhost-user.json'));
    expect(realUnsupported(pvp)).toMatch(/qemu-7\.2.*QEMU/);
    expect(realUnsupported({ ...pvp, topology: 'loopback' })).toMatch(/QEMU/);
    const multi = loadScenario(file('pvp-reconnect', 'case04-pvp-split-multi-vm-reconnect-from-vhost-user.json'));
    expect(realUnsupported({ ...multi, frontend: 'virtio-user-22.11' })).toMatch(/VMs/);
    const vm2vm = loadScenario(file('pvp-reconnect', 'case07-vm2vm-split-reconnect-from-vhost-user.json'));
    expect(realUnsupported(vm2vm)).toMatch(/vm2vm/);
  });

  it('refuses model-only switches', () => {
    const s = parseScenario({
      name: 'x', ring: 'split', topology: 'loopback', vms: 1, queues: 1, queueSize: 256, frontend: 'virtio-user-22.11', backend: 'dpdk-22.11', guest: 'virtio-pmd',
      options: { backend: { inflight: true } },
      steps: [{ op: 'launch-vm', vm: 0 }],
    });
    expect(realUnsupported(s)).toMatch(/inflight/);
  });

  it('throws before starting anything', async () => {
    const pvp = loadScenario(file('pvp-reconnect', 'case01-pvp-split-reconnect-from-vhost-user.json'));
    await expect(runScenarioReal(pvp, { testpmd: '/nonexistent/dpdk-testpmd', stdbuf: false })).rejects.toThrow(/cannot run .* on real DPDK here: frontend 'qemu-7.2'/);
  });
});

describe('parseNicSpec', () => {
  it('reads veth and a lab NIC with an external generator', () => {
    expect(parseNicSpec('veth')).toEqual({ kind: 'veth' });
    expect(parseNicSpec('pci:0000:af:00.0')).toEqual({ kind: 'external', nic: { kind: 'pci', address: '0000:af:00.0' } });
    expect(parseNicSpec('af_packet:eth1')).toEqual({ kind: 'external', nic: { kind: 'af_packet', iface: 'eth1' } });
    expect(() => parseNicSpec('pci:nope')).toThrow(/PCI address/);
    expect(() => parseNicSpec('usb:x')).toThrow(/unknown kind/);
  });
});

describe('a real run result', () => {
  it('passes parseResult, with not-checked verdicts (no DPDK: no process is started)', async () => {
    const s = parseScenario({
      name: 'stub', ring: 'split', topology: 'loopback', vms: 1, queues: 1, queueSize: 256, frontend: 'virtio-user-22.11', backend: 'dpdk-22.11', guest: 'virtio-pmd',
      steps: [
        { op: 'traffic', seconds: 0.01 },
        { op: 'expect', what: 'traffic-flows' },
        { op: 'expect', what: 'no-duplicates' },
        { op: 'wait', seconds: 0.01 },
      ],
    });
    const run = new ScenarioRun(s, { testpmd: '/nonexistent/dpdk-testpmd', stdbuf: false });
    await run.setUp();
    await run.run();
    await run.teardown();
    const { result } = run.output();
    expect(result.invariants.every((i) => i.verdict === 'not-checked' && i.reason)).toBe(true);
    expect(result.expects.map((e) => e.verdict)).toEqual(['violated', 'not-checked']);
    const parsed = parseResult(JSON.parse(JSON.stringify(result)));
    expect(parsed.invariants[0]!.reason).toMatch(/model invariant/);
    expect(parsed.properties.find((p) => p.name === 'ring-well-formed')!.verdict).toBe('not-checked');
    expect(overallVerdict(parsed).verdict).toBe('violated');
    // not-checked alone never makes a run fail.
    const fine = { ...parsed, expects: parsed.expects.filter((e) => e.verdict === 'not-checked'), properties: parsed.properties.map((p) => ({ ...p, verdict: p.verdict === 'violated' ? ('holds' as const) : p.verdict })) };
    expect(overallVerdict(fine)).toMatchObject({ verdict: 'holds', reason: expect.stringMatching(/not checked/) });
    expect(formatPlanRow(fine).verdict).toBe('holds');
  });

  it('pvp with a lab NIC: the host takes the PCI port on hugepages, traffic is the NIC counters (no process started)', async () => {
    const base = loadScenario(file('pvp-reconnect-virtio-user', 'case01-pvp-virtio-user-split-reconnect-from-vhost-user.json'));
    const s = { ...base, steps: [{ op: 'traffic' as const, seconds: 0.01 }, { op: 'expect' as const, what: 'traffic-flows' as const }] };
    const run = new ScenarioRun(s, { testpmd: '/nonexistent/dpdk-testpmd', stdbuf: false, nic: parseNicSpec('pci:0000:af:00.0') });
    await run.setUp();
    await run.run();
    await run.teardown();
    const { result } = run.output();
    expect(result.real.commandLines.backend).toMatch(/-a 0000:af:00\.0 .*--vdev net_vhost0,iface=[^ ]*,client=1,queues=1/);
    expect(result.real.commandLines.backend).not.toMatch(/--no-huge/);
    expect(result.real.commandLines.frontend).toMatch(/--port-topology=loop/);
    expect(result.real.nic).toMatchObject({ description: { kind: 'pci', address: '0000:af:00.0' }, generator: 'external' });
    expect(result.expects[0]).toMatchObject({ verdict: 'violated', reason: expect.stringMatching(/external generator/) });
    expect(() => parseResult(JSON.parse(JSON.stringify(result)))).not.toThrow();
  });
});
