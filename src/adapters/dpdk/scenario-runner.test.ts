import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadScenario, parseScenario } from '../../sim/scenario.ts';
import { realUnsupported, runScenarioReal } from './scenario-runner.ts';

const file = (dir: string, f: string): string => fileURLToPath(new URL(`../../../models/testplans/${dir}/${f}`, import.meta.url));

describe('realUnsupported', () => {
  it('accepts the loopback plan', () => {
    for (const f of ['case01-loopback-split-reconnect-from-vhost-user.json', 'case03-loopback-split-reconnect-stability.json', 'case10-loopback-packed-reconnect-from-vhost-user.json', 'case12-loopback-packed-reconnect-stability.json']) {
      expect(realUnsupported(loadScenario(file('pvp-reconnect-loopback', f))), f).toBeUndefined();
    }
  });

  it('names why pvp, qemu-7.2 and vm2vm cannot run here', () => {
    const pvp = loadScenario(file('pvp-reconnect', 'case01-pvp-split-reconnect-from-vhost-user.json'));
    expect(realUnsupported(pvp)).toMatch(/pvp.*NIC/);
    expect(realUnsupported({ ...pvp, topology: 'loopback' })).toMatch(/QEMU/);
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
    await expect(runScenarioReal(pvp, { testpmd: '/nonexistent/dpdk-testpmd', stdbuf: false })).rejects.toThrow(/cannot run .* on real DPDK here: topology 'pvp'/);
  });
});
