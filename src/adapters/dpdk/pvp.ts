/**
 * PVP on real DPDK without a NIC or a traffic generator: generator → NIC → host testpmd
 * (NIC port 0 ⇄ vhost port 1, io) → vhost-user → VM stand-in (virtio-user, mac) → back the
 * same way and out of the NIC, counted at the generator's RX.
 *
 * Here the NIC is `net_af_packet` on one end of a veth pair this rig creates, and the
 * generator a third testpmd with `net_af_packet` on the other end. The generator runs
 * `rxonly` and sends with `start tx_first N`: exactly N bursts of txonly frames, then it
 * only counts what comes back. txonly alone never polls RX (nothing returned would be
 * counted) and sends as fast as the core allows; io with tx_first would circulate the same
 * frames for ever; net_pcap replays a file once per start and needs libpcap files. Between
 * rounds the generator is stopped, so its lcore does not busy-poll a core shared with others.
 *
 * With `nic` (e.g. `{ kind: 'pci', address }`) and `generatorNic: false` the same rig drives
 * a lab's port and leaves traffic to an external generator.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { nicEal, placeForwarding, testpmdArgs, type NicDescription, type TestpmdOptions } from './options.ts';
import { VirtioUserPair } from './pair.ts';
import { runtimeDirFor, type RunDir } from './runtime.ts';
import { statsDelta, type PortStats } from './stats.ts';
import { Testpmd, type ExitInfo } from './testpmd.ts';
import { createVethPair, type VethPair } from './veth.ts';

/** Where distributions put DPDK's PMD plugins (Debian: /usr/lib/<triplet>/dpdk/pmds-23.0). */
function pluginDirs(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  if (env.VHOSTSIM_DPDK_PMD_DIR) out.push(env.VHOSTSIM_DPDK_PMD_DIR);
  for (const lib of ['/usr/lib', '/usr/lib64', '/usr/local/lib', '/usr/local/lib64']) {
    const roots = [lib];
    try {
      for (const d of readdirSync(lib)) if (d.endsWith('-linux-gnu')) roots.push(join(lib, d));
    } catch {
      continue;
    }
    for (const r of roots) {
      try {
        for (const d of readdirSync(join(r, 'dpdk'))) if (d.startsWith('pmds-')) out.push(join(r, 'dpdk', d));
      } catch {
        // no dpdk dir here
      }
    }
  }
  return out;
}

/** The shared object of a net PMD (`net_af_packet` → `librte_net_af_packet.so`), if installed. */
export function findPmd(driver: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const file = `librte_${driver}.so`;
  for (const d of pluginDirs(env)) if (existsSync(join(d, file))) return join(d, file);
  return undefined;
}

export type PmdAvailability = { ok: true; drivers: string[] } | { ok: false; reason: string };

const pmdCache = new Map<string, PmdAvailability>();

/**
 * Does this testpmd know vdev driver `driver` (e.g. `net_af_packet`)? EAL parses a `--vdev`
 * only when the driver is registered, so one `--help` run tells; when the driver is missing
 * but its PMD object is found, the run is repeated with `-d` and `drivers` says to pass it.
 */
export function pmdAvailability(testpmd: string, driver: string, env: NodeJS.ProcessEnv = process.env): PmdAvailability {
  const key = `${testpmd}\0${driver}`;
  const hit = pmdCache.get(key);
  if (hit) return hit;
  const tryWith = (drivers: string[]): { known: boolean; out: string } => {
    const prefix = `vhostsim-pmd-${process.pid}-${Date.now().toString(36)}`;
    // A nonexistent iface: the probe fails harmlessly after the driver lookup.
    const args = ['--no-huge', '-m', '64', '--no-pci', `--file-prefix=${prefix}`, '-l', '0,1'];
    for (const d of drivers) args.push('-d', d);
    args.push('--vdev', `${driver}0,iface=vhsnone0`, '--', '--help');
    const r = spawnSync(testpmd, args, { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'], env });
    rmSync(runtimeDirFor(prefix), { recursive: true, force: true });
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    return { known: !r.error && !/failed to parse device|Unable to parse device/.test(out), out };
  };
  let res: PmdAvailability;
  const plain = tryWith([]);
  if (plain.known) res = { ok: true, drivers: [] };
  else {
    const so = findPmd(driver, env);
    if (so === undefined) res = { ok: false, reason: `${testpmd} has no ${driver} driver and no librte_${driver}.so was found (set $VHOSTSIM_DPDK_PMD_DIR)` };
    else res = tryWith([so]).known ? { ok: true, drivers: [so] } : { ok: false, reason: `${driver}: ${so} does not load into ${testpmd}` };
  }
  pmdCache.set(key, res);
  return res;
}

/** The generator: one port (the NIC description's), rxonly, loop topology, sending only with `start tx_first`. */
export function generatorOptions(o: {
  filePrefix: string;
  nic: NicDescription;
  forwardLcore?: number;
  memoryMb?: number;
  drivers?: string[];
  burst?: number;
  txPkts?: number[];
}): TestpmdOptions {
  const n = nicEal(o.nic);
  const placement = placeForwarding(o.forwardLcore ?? 1);
  return {
    eal: {
      filePrefix: o.filePrefix,
      memoryMb: o.memoryMb,
      lcores: placement.lcores,
      mainLcore: placement.mainLcore,
      allow: n.allow,
      drivers: o.drivers,
      vdevs: n.vdev ? [n.vdev] : [],
    },
    app: {
      interactive: true,
      nbCores: 1,
      totalNumMbufs: 8192,
      portTopology: 'loop',
      forwardMode: 'rxonly',
      burst: o.burst,
      txPkts: o.txPkts,
    },
  };
}

export interface PvpOptions {
  testpmd: string;
  stdbuf: string | false;
  run: RunDir;
  /** The host's physical-side port; by default af_packet on end `a` of a veth pair made here. */
  nic?: NicDescription;
  /** The generator's port: by default af_packet on end `b`; `false` for an external generator. */
  generatorNic?: NicDescription | false;
  /** `-d` driver objects for host and generator (see `pmdAvailability`). */
  drivers?: string[];
  /** Host on hugepages: a lab's PCI NIC needs DMA-able memory (not needed for af_packet). */
  hugepages?: boolean;
  packed?: boolean;
  /** `-m` per testpmd. */
  memoryMb?: number;
  /**
   * Forwarding lcores; each process's main lcore is the other core. Defaults: host 0, VM 1,
   * generator 1 (it polls only during a round, so it shares with the VM stand-in, whose
   * work is light, and the host keeps its core).
   */
  lcores?: { host?: number; vm?: number; generator?: number };
  /** veth MTU. */
  mtu?: number;
  /** Frames per generator burst (testpmd `--burst`); 32 by default. */
  burst?: number;
  /** Liveness bound per start-up milestone; 30 s by default. */
  timeoutMs?: number;
  echo?: boolean;
}

export interface RoundResult {
  /** Frames the generator put on its port (port counters). */
  sent: number;
  /** Frames that came back to it. */
  received: number;
  ms: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function port0(p: Testpmd): Promise<PortStats> {
  const [s] = await p.portStats();
  if (s === undefined) throw new Error(`${p.name}: no port stats`);
  return s;
}

/**
 * One round on a generator testpmd (see `generatorOptions`): `start tx_first bursts`, count
 * returns until all came back or `timeoutMs` passed (with `expectNone` the whole window is
 * waited), then `stop`.
 */
export async function generatorRound(g: Testpmd, bursts: number, opts: { timeoutMs?: number; expectNone?: boolean } = {}): Promise<RoundResult> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const before = await port0(g);
  const t0 = Date.now();
  await g.start({ txFirst: bursts });
  let d: PortStats;
  for (;;) {
    [d] = statsDelta([before], [await port0(g)]) as [PortStats];
    if (!opts.expectNone && d.txPackets > 0 && d.rxPackets >= d.txPackets) break;
    if (Date.now() - t0 > timeoutMs) break;
    await sleep(50);
  }
  await g.stop();
  // Counters once more after stop: nothing is in flight on the generator side any more.
  [d] = statsDelta([before], [await port0(g)]) as [PortStats];
  return { sent: d.txPackets, received: d.rxPackets, ms: Date.now() - t0 };
}

export class PvpRig {
  readonly veth: VethPair | undefined;
  readonly pair: VirtioUserPair;
  readonly generator: Testpmd | undefined;
  readonly burst: number;
  private forwardingStarted = false;

  private constructor(veth: VethPair | undefined, pair: VirtioUserPair, generator: Testpmd | undefined, burst: number) {
    this.veth = veth;
    this.pair = pair;
    this.generator = generator;
    this.burst = burst;
  }

  /** The host back-end currently running, if any. */
  get host(): Testpmd | undefined {
    return this.pair.backend;
  }

  /** The VM stand-in. */
  get vm(): Testpmd {
    return this.pair.frontend;
  }

  /**
   * Veth pair (unless a NIC is given), VM stand-in listening, generator at its prompt. The
   * host is started by `launchBackend`, as the test plan does.
   */
  static async start(o: PvpOptions): Promise<PvpRig> {
    const timeoutMs = o.timeoutMs ?? 30_000;
    const burst = o.burst ?? 32;
    let veth: VethPair | undefined;
    let pair: VirtioUserPair | undefined;
    let gen: Testpmd | undefined;
    try {
      if (o.nic === undefined) veth = createVethPair({ mtu: o.mtu });
      const nic: NicDescription = o.nic ?? { kind: 'af_packet', iface: veth!.a };
      const genNic: NicDescription | false = o.generatorNic ?? (veth ? { kind: 'af_packet', iface: veth.b } : false);
      pair = await VirtioUserPair.start({
        testpmd: o.testpmd,
        stdbuf: o.stdbuf,
        run: o.run,
        packed: o.packed,
        memoryMb: o.memoryMb,
        frontendLcore: o.lcores?.vm ?? 1,
        backendLcore: o.lcores?.host ?? 0,
        timeoutMs,
        echo: o.echo,
        nic,
        backendDrivers: o.drivers,
        backendHugepages: o.hugepages,
        // One port each: the VM stand-in swaps its frames back out of the port they came in on.
        frontendApp: { portTopology: 'loop', forwardMode: 'mac', burst },
        backendApp: { forwardMode: 'io', burst },
      });
      if (genNic !== false) {
        gen = Testpmd.launch({
          testpmd: o.testpmd,
          stdbuf: o.stdbuf,
          args: testpmdArgs(generatorOptions({ filePrefix: o.run.prefix('gen'), nic: genNic, forwardLcore: o.lcores?.generator ?? 1, memoryMb: o.memoryMb, drivers: o.drivers, burst })),
          name: 'generator',
          echo: o.echo,
        });
        await gen.waitForPrompt(1, timeoutMs);
      }
      return new PvpRig(veth, pair, gen, burst);
    } catch (e) {
      await gen?.kill();
      await pair?.kill();
      veth?.delete();
      throw e;
    }
  }

  /** Launch the host (the same command line each time) and start forwarding on it (and, once, on the VM). */
  async launchBackend(): Promise<Testpmd> {
    const b = await this.pair.launchBackend();
    await b.start();
    if (!this.forwardingStarted) {
      await this.vm.start();
      this.forwardingStarted = true;
    }
    return b;
  }

  quitBackend(): Promise<ExitInfo> {
    return this.pair.quitBackend();
  }

  killBackend(): Promise<ExitInfo> {
    return this.pair.killBackend();
  }

  /**
   * One generator round: `start tx_first bursts` (bursts × `burst` frames), then count
   * returns until all came back or `timeoutMs` passed (a liveness bound; with `expectNone`
   * the whole window is waited), then `stop`.
   */
  async round(bursts = 4, opts: { timeoutMs?: number; expectNone?: boolean } = {}): Promise<RoundResult> {
    const g = this.generator;
    if (!g) throw new Error('no generator in this rig (external generator)');
    return generatorRound(g, bursts, opts);
  }

  /** Quit everything (VM first, as a VM shutting down), delete the veth pair. */
  async close(): Promise<void> {
    try {
      if (this.generator?.running) await this.generator.quit();
      await this.pair.close();
    } finally {
      this.veth?.delete();
    }
  }

  /** SIGKILL everything and delete the veth pair; for clean-up after a failure. */
  async kill(): Promise<void> {
    try {
      await Promise.all([this.generator?.kill(), this.pair.kill()]);
    } finally {
      this.veth?.delete();
    }
  }
}
