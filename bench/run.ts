import { Bench } from 'tinybench';
import { makeRound, BURST } from './ring-hot-path.ts';
import { runRingOnTwoThreads } from '../src/sim/threaded-run.ts';
import type { RingKind } from '../src/ring/factory.ts';

/**
 * Ring hot-path benchmarks. Prints descriptors per second, median of several runs:
 *   npm run bench            (or: npx tsx bench/run.ts [--runs N] [--quick] [--real])
 * Single thread: driver and device in one loop (burst 32, 1-descriptor 64-byte buffers).
 * Two threads: driver and device in two workers over one SharedArrayBuffer.
 */
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1] || 5) || 5;
const quick = args.includes('--quick');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(n: number): string {
  return (n / 1e6).toFixed(2) + ' M';
}

async function singleThread(kind: RingKind): Promise<number[]> {
  const rates: number[] = [];
  for (let r = 0; r < runs; r++) {
    const round = makeRound(kind);
    const bench = new Bench({ time: quick ? 200 : 1000, warmupTime: quick ? 50 : 300 });
    bench.add(`${kind} single-thread burst ${BURST}`, round);
    await bench.run();
    const res = bench.tasks[0].result;
    if (!res || !('throughput' in res)) throw new Error(`benchmark ${kind} failed`);
    rates.push(res.throughput.mean * BURST);
  }
  return rates;
}

async function twoThreads(kind: RingKind): Promise<number[]> {
  const rates: number[] = [];
  const count = quick ? 500_000 : 4_000_000;
  for (let r = 0; r < runs; r++) {
    const res = await runRingOnTwoThreads({
      kind,
      size: 256,
      features: { indirect: false, eventIdx: true, inOrder: false },
      count,
      burst: BURST,
      verify: false,
    });
    if (res.driver.errors.length || res.device.errors.length) throw new Error([...res.driver.errors, ...res.device.errors].join('; '));
    rates.push(count / Math.max(res.driver.seconds, res.device.seconds));
  }
  return rates;
}

const rows: string[][] = [['benchmark', 'median desc/s', `runs (${runs})`]];
for (const kind of ['split', 'packed'] as const) {
  const st = await singleThread(kind);
  rows.push([`${kind} single thread`, fmt(median(st)), st.map(fmt).join(' ')]);
  const tt = await twoThreads(kind);
  rows.push([`${kind} two workers`, fmt(median(tt)), tt.map(fmt).join(' ')]);
}
const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join('  '));

// `--real`: also the model front-end against real DPDK vhost, beside DPDK's own virtio-user.
if (args.includes('--real')) {
  const { runRealLoopback } = await import('./real-loopback.ts');
  console.log('');
  await runRealLoopback({ runs, seconds: quick ? 1 : 3 });
}
