/**
 * `vhostsim real run SCENARIO.json [--testpmd PATH] [--nic SPEC] [--out DIR] [--json]`: runs one scenario
 * on real DPDK (src/adapters/dpdk/scenario-runner.ts) and prints its expects and checks (or
 * the result JSON). With `--out`, writes the result, the trace made from the back-end logs
 * and every testpmd's output.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SingleBar } from 'cli-progress';
import { loadScenario, type Scenario } from '../sim/scenario.ts';
import { dpdkAvailability } from '../adapters/dpdk/find.ts';
import { parseNicSpec, pvpNicUnavailable, realUnsupported, runScenarioReal, type PvpNic, type RealProgress, type RealRunOutput } from '../adapters/dpdk/scenario-runner.ts';

export interface RealRunCommandOptions {
  testpmd?: string;
  /** PVP scenarios' NIC (`parseNicSpec`): `veth` (default here), `pci:0000:af:00.0`, … */
  nic?: string;
  out?: string;
  json?: boolean;
  /** Where progress goes; stderr by default, `false` for none. */
  progress?: NodeJS.WriteStream | false;
}

/** Progress on stderr: a bar on a terminal, one line per finished step otherwise. */
export function progressReporter(title: string, stream: NodeJS.WriteStream | false = process.stderr): { onProgress: (e: RealProgress) => void; done: () => void } {
  if (stream === false) return { onProgress: () => {}, done: () => {} };
  if (stream.isTTY) {
    const bar = new SingleBar({ format: `${title} [{bar}] {value}/{total} {step}`, stream, hideCursor: true, clearOnComplete: false, barsize: 24 });
    let started = false;
    return {
      onProgress: (e) => {
        if (!started) {
          bar.start(e.total, 0, { step: '' });
          started = true;
        }
        bar.update(e.phase === 'end' ? e.index : e.index - 1, { step: e.phase === 'start' ? e.label : `${e.label}${e.note ? ` (${e.note})` : ''}` });
      },
      done: () => {
        if (started) bar.stop();
      },
    };
  }
  return {
    onProgress: (e) => {
      if (e.phase === 'end') stream.write(`${title} [${e.index}/${e.total}] ${e.label} (${(e.seconds ?? 0).toFixed(2)} s)${e.note ? ` — ${e.note}` : ''}\n`);
    },
    done: () => {},
  };
}

/** Finds testpmd or throws with the reason; refuses unsupported scenarios before starting anything. */
export function prepareReal(scenarios: { file: string; scenario: Scenario }[], testpmd?: string, nicSpec?: string): { testpmd: string; stdbuf: string; version: string | undefined; nic: PvpNic } {
  const nic = parseNicSpec(nicSpec ?? 'veth');
  for (const { file, scenario } of scenarios) {
    const why = realUnsupported(scenario);
    if (why) throw new Error(`${file}: cannot run on real DPDK here: ${why}`);
  }
  const av = dpdkAvailability(testpmd ? { testpmd } : {});
  if (!av.ok) throw new Error(`real DPDK not available: ${av.reason}`);
  const pvp = scenarios.find((x) => x.scenario.topology === 'pvp');
  if (pvp) {
    const why = pvpNicUnavailable(av.testpmd, nic);
    if (why) throw new Error(`${pvp.file}: cannot run PVP on real DPDK here: ${why} (or pass --nic pci:ADDRESS with an external generator)`);
  }
  return { testpmd: av.testpmd, stdbuf: av.stdbuf, version: av.version, nic };
}

export function stem(file: string): string {
  return basename(file).replace(/\.json$/, '');
}

/** Writes a real run's result, trace and logs under `dir`; returns the paths. */
export function writeRealOutput(dir: string, name: string, out: RealRunOutput): string[] {
  mkdirSync(dir, { recursive: true });
  const tracePath = `${name}.real.trace.jsonl`;
  out.result.trace.path = tracePath;
  const files = [join(dir, `${name}.real.json`), join(dir, tracePath), join(dir, `${name}.real.backend.log`)];
  writeFileSync(files[0]!, JSON.stringify(out.result, null, 2) + '\n');
  writeFileSync(files[1]!, out.traceText);
  // The trace's `line` fields count lines of this concatenation of the back-ends' output.
  writeFileSync(files[2]!, out.backendLog);
  for (const l of out.logs) {
    const f = join(dir, `${name}.${l.name.replace(/[^A-Za-z0-9-]/g, '')}.log`);
    writeFileSync(f, l.text + '\n');
    files.push(f);
  }
  return files;
}

export function formatRealResult(out: RealRunOutput): string[] {
  const r = out.result;
  const lines: string[] = [];
  const iter = (it: number[]): string => (it.length ? ` #${it.map((k) => k + 1).join('.')}` : '');
  lines.push(`${r.scenario.name} (real ${r.real.dpdk.version ?? 'DPDK'}, ${r.wallSeconds.toFixed(1)} s)`);
  const nic = r.real.nic;
  if (nic) {
    const d = nic.description;
    const where = d.kind === 'pci' ? `PCI ${d.address}` : d.kind === 'pcap' ? 'pcap' : `${d.kind} ${d.iface}`;
    lines.push(`NIC: ${where}; generator: ${nic.generator === 'testpmd' ? `testpmd${nic.veth ? ` on ${nic.veth.b} (veth peer)` : ''}` : 'external'}`);
  }
  for (const e of r.expects) lines.push(`  expect ${e.what.padEnd(14)} ${e.path}${iter(e.iteration)}: ${e.verdict} — ${e.reason}`);
  lines.push('sessions (back-end log):');
  for (const s of r.real.sessions) {
    const bases = s.bases.map((b) => `${b.request.slice(0, 3)} ${b.vring}:${b.value}`).join(' ');
    lines.push(`  ${s.n} ${s.process} opened in ${s.openedBy}: ${s.requests.length} requests, ${s.ready ? 'ready' : 'not ready'}, end ${s.end}${bases ? `; bases ${bases}` : ''}`);
  }
  lines.push('model invariants:');
  for (const i of r.invariants) lines.push(`  ${i.name.padEnd(30)} ${i.verdict} — ${i.reason}`);
  lines.push('protocol properties:');
  for (const p of r.properties) lines.push(`  ${p.name.padEnd(30)} ${p.verdict} — ${p.reason}`);
  for (const n of r.real.notes) lines.push(`note: ${n}`);
  if (r.real.error) lines.push(`stopped: ${r.real.error}`);
  return lines;
}

/** Exit code: 0 when the run completed and no expect failed, 2 otherwise. */
export function realExitCode(out: RealRunOutput): number {
  const failed = out.result.expects.some((e) => e.verdict === 'violated' || e.verdict === 'fails-as-modelled');
  return failed || out.result.real.error ? 2 : 0;
}

export async function realRunCommand(file: string, opts: RealRunCommandOptions = {}): Promise<{ out: RealRunOutput; lines: string[]; exitCode: number; written: string[] }> {
  const scenario = loadScenario(file);
  const dpdk = prepareReal([{ file, scenario }], opts.testpmd, opts.nic);
  const progress = progressReporter(stem(file), opts.progress ?? process.stderr);
  let out: RealRunOutput;
  try {
    out = await runScenarioReal(scenario, { ...dpdk, file, onProgress: progress.onProgress });
  } finally {
    progress.done();
  }
  const written = opts.out ? writeRealOutput(opts.out, stem(file), out) : [];
  const lines = opts.json ? [JSON.stringify(out.result, null, 2)] : formatRealResult(out);
  return { out, lines, exitCode: realExitCode(out), written };
}
