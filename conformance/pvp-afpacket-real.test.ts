/**
 * PVP on real DPDK 22.11 with stand-ins for the NIC and the traffic generator: a veth pair
 * made here, the host testpmd with `net_af_packet` on one end (port 0) and the vhost port
 * (`client=1`, port 1) in io forwarding, the VM stand-in virtio-user (`server=1`) in mac
 * forwarding, and a generator testpmd with `net_af_packet` on the other end that sends
 * exact rounds (`start tx_first N` in rxonly) and counts what comes back.
 *
 * Checked: every frame sent comes back, through the VM (returned frames carry the VM
 * stand-in's source MAC, as its mac forwarding writes it), with the host's and the VM's
 * counters agreeing; then the test plan's case 1 (split) / 10 (packed) on real DPDK: the
 * back-end quits (nothing comes back while it is down), is relaunched with the same
 * command line, virtio-user reconnects and traffic resumes. At the end nothing is left:
 * no process, veth pair, socket or EAL runtime dir.
 *
 * Skips, with the reason, when testpmd, root, `ip`/veth or the af_packet PMD is missing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import {
  dpdkAvailability,
  killAllTestpmds,
  liveTestpmds,
  pmdAvailability,
  PvpRig,
  RunDir,
  runtimeDirFor,
  vethAvailability,
  type PortStats,
  type Testpmd,
} from '../src/adapters/dpdk/index.ts';

const dpdk = dpdkAvailability();
const veth = dpdk.ok ? vethAvailability() : undefined;
const pmd = dpdk.ok && veth?.ok ? pmdAvailability(dpdk.testpmd, 'net_af_packet') : undefined;
const skip = !dpdk.ok ? `testpmd: ${dpdk.reason}` : !veth!.ok ? `veth: ${veth!.reason}` : !pmd!.ok ? `af_packet: ${pmd!.reason}` : undefined;
const title = skip ? `PVP with af_packet on veth (skipped: ${skip})` : `PVP on real ${dpdk.ok ? (dpdk.version ?? 'DPDK') : ''}: generator ⇄ af_packet/veth ⇄ host ⇄ vhost ⇄ virtio-user`;
if (skip) console.warn(`pvp-afpacket-real: skipped: ${skip}`);

const MEMORY_MB = Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);
/** Bursts per round (×32 frames): small, so three busy-polling testpmds on two cores keep up. */
const BURSTS = 4;
const ROUNDS = 3;

afterEach(async () => {
  await killAllTestpmds();
});

function linkExists(name: string): boolean {
  return spawnSync(veth?.ok ? veth.ip : 'ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

/** Source MACs of the frames rxonly printed with `set verbose 1`. */
function sourceMacs(p: Testpmd, since: number): string[] {
  const out: string[] = [];
  for (const l of p.lines.slice(since)) {
    const m = /\bsrc=([0-9A-Fa-f:]{17}) - dst=/.exec(l.text);
    if (m) out.push(m[1]!.toUpperCase());
  }
  return out;
}

function portMac(p: Testpmd, port: number): string {
  const l = p.lines.find((x) => x.text.startsWith(`Port ${port}: `));
  if (!l) throw new Error(`${p.name}: no "Port ${port}:" line`);
  return l.text.slice(`Port ${port}: `.length).trim().toUpperCase();
}

const byPort = (s: PortStats[], port: number): PortStats => {
  const x = s.find((p) => p.port === port);
  if (!x) throw new Error(`no stats for port ${port}`);
  return x;
};

describe.skipIf(skip !== undefined)(title, () => {
  it.each([
    { ring: 'split', packed: false, planCase: 1 },
    { ring: 'packed', packed: true, planCase: 10 },
  ])('$ring ring: frames go round the loop, plan case $planCase (back-end quit and relaunch), traffic resumes', async ({ ring, packed }) => {
    if (!dpdk.ok || !pmd?.ok) return;
    const run = RunDir.create(`pvp-${ring}`);
    let rig: PvpRig | undefined;
    onTestFailed(() => {
      if (!rig) return;
      const dir = join(process.env.VHOSTSIM_ARTIFACTS ?? tmpdir(), `vhostsim-pvp-afpacket-${ring}-${process.pid}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'virtio-user.log'), rig.vm.text());
      if (rig.generator) writeFileSync(join(dir, 'generator.log'), rig.generator.text());
      rig.pair.backends.forEach((b, i) => writeFileSync(join(dir, `host${i}.log`), b.text()));
      console.error(`pvp-afpacket-real: logs in ${dir}`);
    });
    try {
      rig = await PvpRig.start({ testpmd: dpdk.testpmd, stdbuf: dpdk.stdbuf, run, packed, memoryMb: MEMORY_MB, drivers: pmd.drivers });
      const gen = rig.generator!;
      const { a, b } = rig.veth!;
      expect(linkExists(a) && linkExists(b)).toBe(true);

      // ---- the host and the VM forwarding: every round comes back whole.
      const h0 = await rig.launchBackend();
      expect(h0.args.join(' ')).toMatch(new RegExp(`--vdev net_af_packet0,iface=${a} --vdev net_vhost0,iface=\\S+,client=1`));
      const first = [];
      for (let i = 0; i < ROUNDS; i++) first.push(await rig.round(BURSTS, { timeoutMs: 10_000 }));
      for (const r of first) expect(r).toMatchObject({ sent: BURSTS * 32, received: BURSTS * 32 });
      const total = ROUNDS * BURSTS * 32;
      const hs = await h0.portStats();
      // Port 0 (af_packet) in = port 1 (vhost) out, and back.
      expect([byPort(hs, 0).rxPackets, byPort(hs, 1).txPackets, byPort(hs, 1).rxPackets, byPort(hs, 0).txPackets]).toEqual([total, total, total, total]);
      const vs = byPort(await rig.vm.portStats(), 0);
      expect([vs.rxPackets, vs.txPackets]).toEqual([total, total]);

      // The frames went through the VM: its mac forwarding wrote its own MAC as source.
      await gen.command('set verbose 1');
      const since = gen.mark();
      const seen = await rig.round(1, { timeoutMs: 10_000 });
      await gen.command('set verbose 0');
      expect(seen.received).toBe(32);
      const macs = sourceMacs(gen, since);
      expect(macs).toHaveLength(32);
      expect(new Set(macs)).toEqual(new Set([portMac(rig.vm, 0)]));

      // ---- plan case 1 / 10: the back-end quits; nothing comes back while it is down.
      expect(await rig.quitBackend()).toEqual({ code: 0, signal: null });
      const down = await rig.round(1, { expectNone: true, timeoutMs: 1_000 });
      expect(down).toMatchObject({ sent: 32, received: 0 });

      // Relaunched with the same command line: virtio-user reconnects, traffic resumes.
      const vmSince = rig.vm.mark();
      const h1 = await rig.launchBackend();
      expect(h1.args).toEqual(h0.args);
      await rig.vm.waitFor('virtio-user reconnection succeeds', { since: vmSince, timeoutMs: 10_000 });
      if (packed) expect(rig.vm.text(vmSince)).toContain('Packets on the fly will be dropped when packed ring reconnecting');
      const after = [];
      for (let i = 0; i < ROUNDS; i++) after.push(await rig.round(BURSTS, { timeoutMs: 10_000 }));
      for (const r of after) expect(r).toMatchObject({ sent: BURSTS * 32, received: BURSTS * 32 });
      const hs1 = await h1.portStats();
      expect([byPort(hs1, 0).rxPackets, byPort(hs1, 1).txPackets, byPort(hs1, 1).rxPackets, byPort(hs1, 0).txPackets]).toEqual([total, total, total, total]);

      // ---- shut down: nothing left behind.
      const prefixes = [rig.pair.frontendPrefix, rig.pair.backendPrefix, gen.filePrefix!];
      const pids = [rig.vm.pid, gen.pid, ...rig.pair.backends.map((x) => x.pid)];
      await rig.close();
      expect(liveTestpmds()).toEqual([]);
      for (const pid of pids) expect(() => process.kill(pid, 0), `pid ${pid}`).toThrow();
      expect(linkExists(a) || linkExists(b)).toBe(false);
      expect(existsSync(rig.pair.socket)).toBe(false);
      for (const p of prefixes) expect(existsSync(runtimeDirFor(p)), p).toBe(false);

      console.info(
        `pvp-afpacket-real ${ring}: ${JSON.stringify({
          veth: [a, b],
          before: first.map((r) => `${r.received}/${r.sent} in ${r.ms} ms`),
          down: `${down.received}/${down.sent}`,
          after: after.map((r) => `${r.received}/${r.sent} in ${r.ms} ms`),
        })}`,
      );
    } finally {
      await rig?.kill();
      run.dispose();
    }
    expect(existsSync(run.dir)).toBe(false);
  }, 90_000);
});
