import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadScenario } from '../sim/scenario.ts';
import { prepareReal, progressReporter } from './real-run.ts';

const PVP = fileURLToPath(new URL('../../models/testplans/pvp-reconnect/case01-pvp-split-reconnect-from-vhost-user.json', import.meta.url));

describe('real run command helpers', () => {
  it('refuses an unsupported scenario before looking for DPDK', () => {
    expect(() => prepareReal([{ file: 'case01.json', scenario: loadScenario(PVP) }], '/nonexistent/dpdk-testpmd')).toThrow(/case01.json: cannot run on real DPDK here: frontend 'qemu-7.2' needs QEMU/);
  });

  it('refuses a bad --nic before anything else', () => {
    expect(() => prepareReal([{ file: 'case01.json', scenario: loadScenario(PVP) }], '/nonexistent/dpdk-testpmd', 'pci:xyz')).toThrow(/--nic pci:xyz: not a PCI address/);
  });

  it('reports progress one line per finished step when not on a terminal', () => {
    const out: string[] = [];
    const stream = { isTTY: false, write: (s: string) => out.push(s) } as unknown as NodeJS.WriteStream;
    const p = progressReporter('case01', stream);
    p.onProgress({ index: 1, total: 2, label: 'steps[0] launch-vm 0', phase: 'start' });
    p.onProgress({ index: 1, total: 2, label: 'steps[0] launch-vm 0', phase: 'end', seconds: 0.25 });
    p.onProgress({ index: 2, total: 2, label: 'steps[1] wait 20 s', phase: 'end', seconds: 10, note: 'wait 20 s cut to 10 s of real time' });
    p.done();
    expect(out).toEqual(['case01 [1/2] steps[0] launch-vm 0 (0.25 s)\n', 'case01 [2/2] steps[1] wait 20 s (10.00 s) — wait 20 s cut to 10 s of real time\n']);
  });
});
