/**
 * `vhostsim plan DIR [--frontend NAME] [--out DIR]`: runs every scenario of a test-plan
 * directory and prints one row per case. `--frontend virtio-user-22.11` runs each case with a
 * DPDK virtio-user testpmd in place of each VM (VM2VM then runs testpmd traffic; noted under the
 * table). With `--out`, writes each result
 * (`<case>.result.json`) and its trace (`<case>.trace.jsonl`) there.
 *
 * Exit status: 0 when the plan ran and no model invariant was violated, whatever the plan's
 * verdicts (a `fails-as-modelled` or `violated` protocol property is a finding, not a failure
 * of the tool); 3 when a model invariant was violated.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { loadScenario, parseScenario, type FrontendName, type Scenario, type ScenarioInput } from '../sim/scenario.ts';
import { runScenario } from '../sim/runner.ts';
import { formatPlanTable, type RunResult } from '../sim/results.ts';

export interface PlanOptions {
  frontend?: FrontendName;
  out?: string;
  seed?: number;
}

export interface PlanOutput {
  results: RunResult[];
  table: string;
  wallSeconds: number;
  exitCode: number;
  written: string[];
}

export function planFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json') && !f.endsWith('.schema.json'))
    .sort()
    .map((f) => join(dir, f));
}

/**
 * What a case needs changed to run on another front-end: a virtio-user "VM" is a testpmd, with no
 * kernel virtio-net driver to run iperf over, so VM2VM runs testpmd traffic instead (the
 * runner's txonly → rxonly; its traffic-flows reasons say so).
 */
function vmSubstitute(s: Scenario, frontend: FrontendName): Partial<ScenarioInput> {
  if (frontend === 'virtio-user-22.11' && s.guest === 'virtio-net') return { guest: 'virtio-pmd' };
  return {};
}

/** Footnotes for the table: the substitutions `vmSubstitute` made. */
export function planNotes(results: readonly RunResult[], frontend?: FrontendName): string[] {
  if (frontend !== 'virtio-user-22.11') return [];
  const cases = results.filter((r) => r.scenario.topology === 'vm2vm').map((r) => r.scenario.plan?.case ?? r.scenario.name);
  return cases.length > 0 ? [`VM2VM cases ${cases.join(', ')} under virtio-user-22.11: testpmd txonly → rxonly between the two virtio-user ports instead of iperf over kernel virtio-net (virtio-user has no kernel driver)`] : [];
}

export function runPlan(dir: string, opts: PlanOptions = {}): PlanOutput {
  const t0 = performance.now();
  const files = planFiles(dir);
  if (files.length === 0) throw new Error(`${dir}: no scenario files (*.json)`);
  const results: RunResult[] = [];
  const written: string[] = [];
  if (opts.out) mkdirSync(opts.out, { recursive: true });
  for (const file of files) {
    let scenario = loadScenario(file);
    if (opts.frontend && opts.frontend !== scenario.frontend) {
      const { $schema: _s, ...rest } = scenario as typeof scenario & { $schema?: string };
      scenario = parseScenario({ ...rest, frontend: opts.frontend, ...vmSubstitute(scenario, opts.frontend) }, file);
    }
    const { result, traceText } = runScenario(scenario, { file, ...(opts.seed !== undefined ? { seed: opts.seed } : {}) });
    if (opts.out) {
      const stem = basename(file, '.json');
      const tracePath = join(opts.out, `${stem}.trace.jsonl`);
      const resultPath = join(opts.out, `${stem}.result.json`);
      writeFileSync(tracePath, traceText);
      result.trace.path = relative(opts.out, tracePath);
      writeFileSync(resultPath, JSON.stringify(result, null, 2) + '\n');
      written.push(resultPath, tracePath);
    }
    results.push(result);
  }
  const broken = results.some((r) => r.invariants.some((i) => i.verdict === 'violated'));
  return { results, table: formatPlanTable(results) + planNotes(results, opts.frontend).map((n) => `\n${n}\n`).join(''), wallSeconds: (performance.now() - t0) / 1000, exitCode: broken ? 3 : 0, written };
}
