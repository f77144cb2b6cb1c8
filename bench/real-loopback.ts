/**
 * Packets per second round a real vhost back-end, side by side in one run:
 *
 * - model: the model front-end (`RealModelFrontend`, virtio-user-22.11 profile, server) on a
 *   real socket, served by real DPDK vhost (`client=1`) io-forwarding port 0 to itself; the
 *   model keeps `window` 64-byte frames in flight: posts TX, reads them back on RX, as fast
 *   as one Node thread can;
 * - DPDK: a vhost testpmd with the same options serving DPDK's own virtio-user testpmd in io
 *   forwarding, `start tx_first 4` (4 × 32 = 128 frames circulating, the model's default
 *   window).
 *
 * Both rates are frames back on the guest's RX per second. Split and packed; both set-ups are
 * up at once but only one forwards at a time, windows alternating model, DPDK, model, …, and
 * the ratio is taken per neighbouring pair, because core-to-core latency on these hosts
 * changes state for tens of seconds at a time. vhost forwards on core 0; the guest side
 * (Node's main thread, pinned, or virtio-user's forwarding lcore) runs on core 1.
 *
 *   npx tsx bench/real-loopback.ts [--seconds N] [--runs N] [--window N]   (npm run bench:real)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  backendOptions,
  dpdkAvailability,
  killAllTestpmds,
  placeForwarding,
  RunDir,
  statsDelta,
  Testpmd,
  testpmdArgs,
  VirtioUserPair,
  which,
  type PortStats,
} from '../src/adapters/dpdk/index.ts';
import { RealModelFrontend, numberedPacket, verifyPacket } from '../src/endpoint/real/frontend/index.ts';
import { realTransportAvailability } from '../src/transport/real/index.ts';

export interface RealLoopbackOptions {
  seconds?: number;
  runs?: number;
  /** Frames in flight for the model; DPDK circulates `tx_first` bursts of 32 (window / 32). */
  window?: number;
  memoryMb?: number;
  log?: (s: string) => void;
}

export interface Sample {
  ring: 'split' | 'packed';
  model: number;
  dpdk: number;
  /** What the vhost testpmd counted during the model's window (rx = guest TX, tx = guest RX). */
  modelVhost: { rxPps: number; txPps: number };
  /** Frames back per pass of the model's loop, and passes per second (low when the thread is starved of CPU). */
  perPass: number;
  passesPerSec: number;
  /** Frames that failed the spot check or did not come back (should be 0). */
  bad: number;
}

const FRAME = 64;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const mpps = (n: number): string => `${(n / 1e6).toFixed(3)} M`;

async function port0(p: Testpmd): Promise<PortStats> {
  const [s] = await p.portStats();
  if (s === undefined) throw new Error(`${p.name}: no port stats`);
  return s;
}

/** Pin this process's main thread (`taskset -p`, not the whole process); undefined to restore all cores. */
function pinMainThread(cpus: string | undefined): void {
  const taskset = which('taskset');
  if (!taskset) return;
  spawnSync(taskset, ['-p', '-c', cpus ?? '0-1023', String(process.pid)], { stdio: 'ignore' });
}

/** dpdk-testpmd processes on this machine that are not ours (noise for the figures). */
function otherTestpmds(): number {
  let n = 0;
  // Ours are children of this process (setpriv and stdbuf exec testpmd: same pid).
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'dpdk-testpmd') continue;
      const ppid = Number(/^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
      if (ppid !== process.pid) n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

interface Av {
  testpmd: string;
  stdbuf: string;
}

/** The model front-end and its vhost testpmd, set up once; `measure` runs one window. */
class ModelSide {
  private constructor(
    private readonly run: RunDir,
    readonly fe: RealModelFrontend,
    readonly vhost: Testpmd,
    private readonly window: number,
  ) {}

  static async open(av: Av, ring: Sample['ring'], window: number, memoryMb: number): Promise<ModelSide> {
    const run = RunDir.create(`bench-model-${ring}`);
    const socket = run.socket('vhost-net.sock');
    const fe = new RealModelFrontend({ path: socket, packedVq: ring === 'packed' });
    if (window > fe.cfg.queueSize / 2) throw new RangeError(`window ${window} > half the ring (${fe.cfg.queueSize / 2}): the back-end would drop for want of RX buffers`);
    fe.listen();
    const vhost = Testpmd.launch({
      testpmd: av.testpmd,
      stdbuf: av.stdbuf,
      name: 'vhost(model)',
      args: testpmdArgs(backendOptions({ filePrefix: run.prefix('vhost'), sockets: socket, memoryMb, placement: placeForwarding(0), app: { portTopology: 'loop', forwardMode: 'io' } })),
    });
    const side = new ModelSide(run, fe, vhost, window);
    try {
      await vhost.waitFor('virtio is now ready for processing', { timeoutMs: 30_000 });
      await vhost.waitForPrompt(1, 30_000);
      await fe.waitForRunning(1, 30_000);
    } catch (e) {
      await side.close();
      throw e;
    }
    return side;
  }

  private readonly packets = new Map<number, Uint8Array[]>();
  private inflight = 0;
  /** Loop passes in the last measured window (frames per pass ≪ 1: waiting on the back-end). */
  passes = 0;
  bad = 0;
  /** Frames not back after a window (should stay 0). */
  lost = 0;

  private batch(k: number): Uint8Array[] {
    let b = this.packets.get(k);
    if (b === undefined) {
      b = Array.from({ length: k }, (_, i) => numberedPacket(i, FRAME));
      this.packets.set(k, b);
    }
    return b;
  }

  /** The guest loop for `ms`: keep `window` frames in flight (none with `drain`), count what comes back. */
  private async loop(ms: number, drain = false): Promise<number> {
    const fe = this.fe;
    const q = fe.cfg.queueSize;
    let back = 0;
    const end = performance.now() + ms;
    let nextYield = performance.now() + 10;
    this.passes = 0;
    for (;;) {
      this.passes++;
      fe.reclaimTx();
      const got = fe.receive();
      if (got.length) {
        back += got.length;
        this.inflight -= got.length;
        // Spot check one frame per batch: byte-exact verification is the conformance test's job.
        if (!verifyPacket(got[0]!).ok) this.bad++;
      }
      fe.postRx(q);
      const room = Math.min(32, this.window - this.inflight);
      if (room > 0 && !drain) this.inflight += fe.send(this.batch(room));
      const now = performance.now();
      if (now >= end || (drain && this.inflight === 0)) return back;
      if (now >= nextYield) {
        // Let socket events and timers in now and then.
        await new Promise((r) => setImmediate(r));
        nextYield = performance.now() + 10;
      }
    }
  }

  async measure(seconds: number, warmupMs: number): Promise<{ pps: number; vhost: { rxPps: number; txPps: number }; perPass: number; passesPerSec: number }> {
    await this.vhost.start();
    pinMainThread('1');
    try {
      await this.loop(warmupMs);
      const before = await port0(this.vhost);
      const t0 = performance.now();
      const back = await this.loop(seconds * 1000);
      const dt = (performance.now() - t0) / 1000;
      const [d] = statsDelta([before], [await port0(this.vhost)]);
      return { pps: back / dt, vhost: { rxPps: d!.rxPackets / dt, txPps: d!.txPackets / dt }, perPass: back / Math.max(1, this.passes), passesPerSec: this.passes / dt };
    } finally {
      // Everything back before vhost stops: its next start flushes what waits on its RX queue.
      await this.loop(1000, true);
      this.lost += this.inflight;
      this.inflight = 0;
      pinMainThread(undefined);
      // Stopped, vhost no longer polls: the other side's window has the cores.
      await this.vhost.stop();
    }
  }

  async close(): Promise<void> {
    await this.fe.quit().catch(() => undefined);
    this.fe.shutdown();
    await this.vhost.quit();
    this.run.dispose();
  }
}

/** DPDK's own pair: virtio-user io with `tx_first` bursts circulating through vhost io. */
class DpdkSide {
  private constructor(
    private readonly run: RunDir,
    readonly pair: VirtioUserPair,
    private readonly window: number,
  ) {}

  static async open(av: Av, ring: Sample['ring'], window: number, memoryMb: number): Promise<DpdkSide> {
    const run = RunDir.create(`bench-dpdk-${ring}`);
    try {
      const pair = await VirtioUserPair.start({
        testpmd: av.testpmd,
        stdbuf: av.stdbuf,
        run,
        packed: ring === 'packed',
        memoryMb,
        frontendLcore: 1,
        backendLcore: 0,
        frontendApp: { portTopology: 'loop', forwardMode: 'io' },
        backendApp: { portTopology: 'loop', forwardMode: 'io' },
      });
      const side = new DpdkSide(run, pair, window);
      await pair.launchBackend().catch(async (e) => {
        await pair.kill();
        throw e;
      });
      return side;
    } catch (e) {
      run.dispose();
      throw e;
    }
  }

  async measure(seconds: number, warmupMs: number): Promise<number> {
    const b = this.pair.backend!;
    const f = this.pair.frontend;
    await b.start();
    // testpmd's start flushes RX queues, so each window injects its frames afresh.
    await f.start({ txFirst: Math.max(1, Math.round(this.window / 32)) });
    try {
      await sleep(warmupMs);
      const before = await port0(f);
      const t0 = performance.now();
      await sleep(seconds * 1000);
      const after = await port0(f);
      return (after.rxPackets - before.rxPackets) / ((performance.now() - t0) / 1000);
    } finally {
      await f.stop();
      await b.stop();
    }
  }

  async close(): Promise<void> {
    await this.pair.close().catch(() => this.pair.kill());
    this.run.dispose();
  }
}

export async function runRealLoopback(o: RealLoopbackOptions = {}): Promise<Sample[] | undefined> {
  const log = o.log ?? ((s: string) => console.log(s));
  const seconds = o.seconds ?? 3;
  const runs = o.runs ?? 5;
  const window = o.window ?? 128;
  const memoryMb = o.memoryMb ?? Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);
  const av = dpdkAvailability();
  const rt = realTransportAvailability();
  if (!av.ok || !rt.ok) {
    log(`real-loopback: skipped: ${!av.ok ? av.reason : !rt.ok ? rt.reason : ''}`);
    return undefined;
  }
  const others = otherTestpmds();
  const load = loadavg()[0]!.toFixed(1);
  log(
    `real-loopback: ${av.version ?? 'DPDK'}, ${seconds} s windows, ${runs} runs, ${FRAME}-byte frames, window ${window}; load average ${load}` +
      (others ? `; ${others} other dpdk-testpmd process(es) running here: figures are noisy` : ''),
  );
  const samples: Sample[] = [];
  try {
    // Both set-ups live at once, only one forwarding at a time: windows alternate model,
    // DPDK, model, … so each ratio compares neighbours seconds apart.
    for (const ring of ['split', 'packed'] as const) {
      const model = await ModelSide.open(av, ring, window, memoryMb);
      let dpdkSide: DpdkSide | undefined;
      try {
        dpdkSide = await DpdkSide.open(av, ring, window, memoryMb);
        for (let r = 0; r < runs; r++) {
          const m = await model.measure(seconds, r === 0 ? 1000 : 300);
          const dpdk = await dpdkSide.measure(seconds, 300);
          const s: Sample = { ring, model: m.pps, modelVhost: m.vhost, perPass: m.perPass, passesPerSec: m.passesPerSec, dpdk, bad: model.bad + model.lost };
          samples.push(s);
          log(
            `  ${ring.padEnd(6)} run ${r + 1}: model ${mpps(s.model)}pps (vhost saw rx ${mpps(s.modelVhost.rxPps)} tx ${mpps(s.modelVhost.txPps)}; ${s.perPass.toFixed(2)}/pass, ${(s.passesPerSec / 1e3).toFixed(0)} k passes/s)  DPDK ${mpps(dpdk)}pps  ratio ${(s.model / dpdk).toFixed(3)}${s.bad ? `  BAD OR LOST FRAMES ${s.bad}` : ''}`,
          );
        }
      } finally {
        await dpdkSide?.close();
        await model.close();
      }
    }
  } finally {
    await killAllTestpmds();
  }
  const rows = [['ring', 'model pps', 'DPDK virtio-user pps', 'model/DPDK', `runs (${runs})`]];
  for (const ring of ['split', 'packed'] as const) {
    const ss = samples.filter((s) => s.ring === ring);
    rows.push([
      ring,
      mpps(median(ss.map((s) => s.model))),
      mpps(median(ss.map((s) => s.dpdk))),
      median(ss.map((s) => s.model / s.dpdk)).toFixed(3),
      ss.map((s) => (s.model / s.dpdk).toFixed(3)).join(' '),
    ]);
  }
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  log('medians (ratio: median of the per-run ratios):');
  for (const r of rows) log(r.map((c, i) => c.padEnd(w[i]!)).join('  '));
  return samples;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { seconds: { type: 'string' }, runs: { type: 'string' }, window: { type: 'string' } },
  });
  const num = (v: string | undefined, name: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} wants a positive number, got ${v}`);
    return n;
  };
  await runRealLoopback({ seconds: num(values.seconds, 'seconds'), runs: num(values.runs, 'runs'), window: num(values.window, 'window') });
}
