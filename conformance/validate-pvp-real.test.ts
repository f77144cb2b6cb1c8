/**
 * `vhostsim validate` on PVP: plan cases 1 and 10 with DPDK 22.11 virtio-user as the VM
 * (models/testplans/pvp-reconnect-virtio-user/), the NIC being af_packet on a veth pair made
 * for the run and the generator a testpmd on its other end (src/adapters/dpdk/pvp.ts). The
 * model and the real run must agree: expect verdicts, request names per session, ring bases
 * where the model says they do not depend on the amount of traffic, traffic back at the
 * generator in the same steps. Nothing is left afterwards: no veth pair, no testpmd.
 *
 * Skips, with the reason, when testpmd, root, `ip`/veth or the af_packet PMD is missing.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { dpdkAvailability, killAllTestpmds, liveTestpmds, pmdAvailability, vethAvailability } from '../src/adapters/dpdk/index.ts';
import { validateCommand } from '../src/cli/validate.ts';

const dpdk = dpdkAvailability();
const veth = dpdk.ok ? vethAvailability() : undefined;
const pmd = dpdk.ok && veth?.ok ? pmdAvailability(dpdk.testpmd, 'net_af_packet') : undefined;
const skip = !dpdk.ok ? `testpmd: ${dpdk.reason}` : !veth!.ok ? `veth: ${veth!.reason}` : !pmd!.ok ? `af_packet: ${pmd!.reason}` : undefined;
const title = skip ? `validate PVP on real DPDK (skipped: ${skip})` : `validate on real ${dpdk.ok ? (dpdk.version ?? 'DPDK') : ''}: PVP plan cases, virtio-user as the VM, af_packet/veth as the NIC`;
if (skip) console.warn(`validate-pvp-real: skipped: ${skip}`);

const CASES = ['case01-pvp-virtio-user-split-reconnect-from-vhost-user.json', 'case10-pvp-virtio-user-packed-reconnect-from-vhost-user.json'].map((f) =>
  fileURLToPath(new URL(`../models/testplans/pvp-reconnect-virtio-user/${f}`, import.meta.url)),
);

afterEach(async () => {
  await killAllTestpmds();
});

function linkExists(name: string): boolean {
  return spawnSync(veth?.ok ? veth.ip : 'ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

describe.skipIf(skip !== undefined)(title, () => {
  it.each(CASES.map((file) => ({ file, name: file.split('/').pop()!.replace(/\.json$/, '') })))('$name: model and real agree', async ({ file }) => {
    const lines: string[] = [];
    const t0 = performance.now();
    const { cases, exitCode } = await validateCommand([file], { ...(dpdk.ok ? { testpmd: dpdk.testpmd } : {}), write: (l) => lines.push(l), progress: false });
    console.log(`${lines.join('\n')}\n(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    const c = cases[0]!;
    const r = c.real.result;
    expect(r.real.error).toBeUndefined();
    // The stand-ins were used and are gone.
    expect(r.real.nic?.generator).toBe('testpmd');
    expect(r.real.nic?.description.kind).toBe('af_packet');
    const v = r.real.nic!.veth!;
    expect(linkExists(v.a) || linkExists(v.b)).toBe(false);
    expect(liveTestpmds()).toHaveLength(0);
    // Every round's frames came back through the VM, and the host's ports saw them both ways.
    for (const t of r.real.traffic) {
      expect(t.sent, t.reason).toBeGreaterThan(0);
      expect(t.through, t.reason).toBe(t.sent);
      expect(t.host!.vhostTx, t.reason).toBeGreaterThanOrEqual(t.sent);
      expect(t.host!.nicTx, t.reason).toBeGreaterThanOrEqual(t.sent);
    }
    expect(r.portStats.find((p) => p.instance === 'host')!.ports.map((p) => p.kind)).toEqual(['nic', 'vhost']);
    // Same verdicts, sessions, requests and bases as the model.
    expect(c.real.observation.expects.map((e) => [e.path, e.iteration, e.verdict])).toEqual(c.model.expects.map((e) => [e.path, e.iteration, e.verdict]));
    expect(c.model.expects.every((e) => e.verdict === 'holds')).toBe(true);
    expect(c.real.observation.sessions).toHaveLength(c.model.sessions.length);
    c.model.sessions.forEach((m, k) => {
      const s = c.real.observation.sessions[k]!;
      expect(s.ready, `session ${k + 1} ready`).toBe(true);
      if (m.requestsDetermined) expect(s.requests, `session ${k + 1} requests`).toEqual(m.requests);
      expect(s.bases.map((b) => [b.request, b.vring]), `session ${k + 1} bases`).toEqual(m.bases.map((b) => [b.request, b.vring]));
      m.bases.forEach((b, j) => {
        if (b.determined) expect(s.bases[j]!.value, `session ${k + 1} ${b.request} vring ${b.vring}`).toBe(b.value);
      });
    });
    expect(c.real.observation.traffic.map((t) => t.ok)).toEqual(c.model.traffic.map((t) => t.ok));
    expect(c.comparison.differ).toBe(0);
    expect(exitCode).toBe(0);
  }, 60_000);
});
