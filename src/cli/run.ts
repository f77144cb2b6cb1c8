/**
 * `vhostsim run SCENARIO.json [--seed N] [--json]`: runs one scenario in the model and prints
 * its expects, model invariants and protocol properties (or the result JSON).
 */
import { loadScenario } from '../sim/scenario.ts';
import { runScenario } from '../sim/runner.ts';
import { formatPlanTable, overallVerdict, type RunResult } from '../sim/results.ts';

export interface RunCommandOptions {
  seed?: number;
  json?: boolean;
}

export interface RunCommandOutput {
  result: RunResult;
  lines: string[];
  /** 0 unless a model invariant was violated (a vhostsim bug). */
  exitCode: number;
}

export function runCommand(file: string, opts: RunCommandOptions = {}): RunCommandOutput {
  const scenario = loadScenario(file);
  const { result } = runScenario(scenario, { file, ...(opts.seed !== undefined ? { seed: opts.seed } : {}) });
  const broken = result.invariants.some((i) => i.verdict === 'violated');
  if (opts.json) return { result, lines: [JSON.stringify(result, null, 2)], exitCode: broken ? 3 : 0 };
  const lines: string[] = [];
  lines.push(`${result.scenario.name} (seed ${result.seed})`);
  for (const e of result.expects) lines.push(`  expect ${e.what.padEnd(14)} ${e.path}${e.iteration.length ? ` #${e.iteration.map((k) => k + 1).join('.')}` : ''}: ${e.verdict} — ${e.reason}`);
  lines.push('model invariants:');
  for (const i of result.invariants) lines.push(`  ${i.name.padEnd(30)} ${i.verdict} (${i.checks} checks)${i.firstViolation ? ` — ${i.firstViolation.reason}` : ''}`);
  lines.push('protocol properties:');
  for (const p of result.properties) {
    lines.push(`  ${p.name.padEnd(30)} ${p.verdict} — ${p.reason}`);
    if (p.mechanism) lines.push(`    mechanism [${p.mechanism.profile}]: ${p.mechanism.summary}`);
  }
  lines.push('');
  lines.push(formatPlanTable([result]).trimEnd());
  const v = overallVerdict(result);
  lines.push(`verdict: ${v.verdict}`);
  return { result, lines, exitCode: broken ? 3 : 0 };
}
