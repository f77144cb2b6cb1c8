/**
 * Wall time of a test plan in the model, in-process (no start-up cost):
 * `npx tsx bench/plan.ts [DIR] [--runs N]` prints each run (wall and CPU seconds; CPU is the
 * steadier figure on a loaded machine) and the medians. The first run is the one `vhostsim plan`
 * sees (cold JIT).
 */
import { runPlan } from '../src/cli/plan.ts';

const args = process.argv.slice(2);
const runsAt = args.indexOf('--runs');
const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : 5;
const dir = args.find((a, i) => !a.startsWith('--') && (runsAt < 0 || i !== runsAt + 1)) ?? 'models/testplans/pvp-reconnect';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const wall: number[] = [];
const cpu: number[] = [];
for (let i = 0; i < runs; i++) {
  const c0 = process.cpuUsage();
  const out = runPlan(dir);
  const c = process.cpuUsage(c0);
  wall.push(out.wallSeconds);
  cpu.push((c.user + c.system) / 1e6);
  process.stdout.write(`run ${i + 1}: ${out.results.length} cases in ${out.wallSeconds.toFixed(3)} s wall, ${cpu[i]!.toFixed(3)} s CPU\n`);
}
process.stdout.write(`median of ${runs}: ${median(wall).toFixed(3)} s wall, ${median(cpu).toFixed(3)} s CPU\n`);
