/**
 * `vhostsim validate SCENARIO... [--testpmd PATH] [--nic SPEC] [--out DIR]`: each scenario in the model
 * (runScenario, plus runs with more and less traffic so the model says which values depend
 * on it) and on real DPDK, compared side by side (src/adapters/dpdk/compare.ts). Exit 2 when
 * any scenario differs where the model made a prediction.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadScenario, type Scenario } from '../sim/scenario.ts';
import { runScenario } from '../sim/runner.ts';
import { compareObservations, formatComparison, markDetermined, observeModel, scaleTraffic, type Comparison, type RunObservation } from '../adapters/dpdk/compare.ts';
import { runScenarioReal, type RealRunOutput } from '../adapters/dpdk/scenario-runner.ts';
import { prepareReal, progressReporter, stem, writeRealOutput } from './real-run.ts';

/** Traffic scalings of the variant model runs: values that change with them depend on the amount of traffic. */
export const TRAFFIC_VARIANTS = [0.5, 1.37] as const;

export interface ValidateOptions {
  testpmd?: string;
  /** PVP scenarios' NIC (see real-run.ts); the veth stand-in by default. */
  nic?: string;
  out?: string;
  /** Each output line as it is ready; nothing is printed otherwise. */
  write?: (line: string) => void;
  /** Where progress goes; stderr by default, `false` for none. */
  progress?: NodeJS.WriteStream | false;
}

export interface ValidateCase {
  file: string;
  scenario: Scenario;
  model: RunObservation;
  real: RealRunOutput;
  comparison: Comparison;
  lines: string[];
  realSeconds: number;
}

/** The model's observation of a scenario, with what it predicts exactly marked. */
export function modelObservation(s: Scenario, file?: string): { observation: RunObservation; out: ReturnType<typeof runScenario> } {
  const out = runScenario(s, file ? { file } : {});
  const observation = observeModel(s, out);
  const variants = TRAFFIC_VARIANTS.map((f) => observeModel(s, runScenario(scaleTraffic(s, f))));
  return { observation: markDetermined(observation, variants), out };
}

export async function validateCommand(files: string[], opts: ValidateOptions = {}): Promise<{ cases: ValidateCase[]; exitCode: number }> {
  const scenarios = files.map((file) => ({ file, scenario: loadScenario(file) }));
  // Refuse before starting anything: unsupported scenarios or no DPDK.
  const dpdk = prepareReal(scenarios, opts.testpmd, opts.nic);
  const write = opts.write ?? (() => {});
  const cases: ValidateCase[] = [];
  for (const { file, scenario } of scenarios) {
    const { observation: model, out: modelOut } = modelObservation(scenario, file);
    const progress = progressReporter(stem(file), opts.progress ?? process.stderr);
    let real: RealRunOutput;
    const t0 = performance.now();
    try {
      real = await runScenarioReal(scenario, { ...dpdk, file, onProgress: progress.onProgress });
    } finally {
      progress.done();
    }
    const realSeconds = (performance.now() - t0) / 1000;
    const comparison = compareObservations(model, real.observation);
    const lines = formatComparison(`${stem(file)}: ${scenario.name} — model vs real ${dpdk.version ?? 'DPDK'} (${realSeconds.toFixed(1)} s real)`, comparison);
    if (real.result.real.error) lines.splice(lines.length - 1, 0, `  ! real run stopped: ${real.result.real.error.split('\n')[0]}`);
    for (const l of lines) write(l);
    if (opts.out) {
      mkdirSync(opts.out, { recursive: true });
      const name = stem(file);
      modelOut.result.trace.path = `${name}.model.trace.jsonl`;
      writeFileSync(join(opts.out, `${name}.model.json`), JSON.stringify(modelOut.result, null, 2) + '\n');
      writeFileSync(join(opts.out, `${name}.model.trace.jsonl`), modelOut.traceText);
      writeRealOutput(opts.out, name, real);
      writeFileSync(join(opts.out, `${name}.compare.txt`), lines.join('\n') + '\n');
    }
    cases.push({ file, scenario, model, real, comparison, lines, realSeconds });
  }
  const bad = cases.filter((c) => !c.comparison.ok || c.real.result.real.error);
  write(`${cases.length} scenario(s): ${cases.length - bad.length} agree${bad.length ? `, ${bad.length} disagree (${bad.map((c) => stem(c.file)).join(', ')})` : ''}`);
  return { cases, exitCode: bad.length ? 2 : 0 };
}
