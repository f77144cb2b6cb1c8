import { Command } from 'commander';

/**
 * The `vhostsim` command. Subcommands load their modules lazily so `vhostsim --help`
 * stays quick and one broken area does not take the others down.
 */
export function buildCli(): Command {
  const program = new Command('vhostsim')
    .description('Simulator and reference model of virtio rings and the vhost-user protocol')
    .showHelpAfterError();

  const demo = program.command('demo').description('show ring internals step by step');
  demo
    .command('rings')
    .description('a split and a packed ring driven through one full wrap, shown after every step')
    .option('--size <n>', 'queue size (split: power of two)', '4')
    .option('--no-color', 'plain output')
    .action(async (opts: { size: string; color: boolean }) => {
      const { runRingDemo } = await import('./demo-rings.ts');
      process.stdout.write(runRingDemo({ size: Number(opts.size), color: opts.color && process.stdout.isTTY === true }));
    });

  const trace = program.command('trace').description('read vhost-user traces (JSON Lines)');
  trace
    .command('decode <file>')
    .description('print every message of a trace, named and decoded')
    .action(async (file: string) => {
      const { traceDecode } = await import('./trace-decode.ts');
      for (const line of traceDecode(file)) process.stdout.write(line + '\n');
    });

  trace
    .command('replay <file>')
    .description("feed one side of a real capture to a model endpoint and report where the model's messages differ")
    .requiredOption('--as <side>', 'which side the model plays: backend or frontend')
    .option('--profile <name>', 'model profile (backend: dpdk-22.11; frontend: virtio-user-22.11)')
    .option('-v, --verbose', 'also list matching messages')
    .action(async (file: string, opts: { as: string; profile?: string; verbose?: boolean }) => {
      if (opts.as !== 'backend' && opts.as !== 'frontend') throw new Error(`--as must be backend or frontend, not '${opts.as}'`);
      const { traceReplay } = await import('./trace-replay.ts');
      const { report, lines } = traceReplay(file, { as: opts.as, profile: opts.profile, verbose: opts.verbose });
      for (const line of lines) process.stdout.write(line + '\n');
      if (report.diverged) process.exitCode = 2;
    });

  trace
    .command('from-log <log>')
    .description("a message-level trace from a DPDK vhost back-end's VHOST_CONFIG log (values the log does not show are marked partial)")
    .option('--out <file>', 'write the JSONL here instead of stdout')
    .action(async (log: string, opts: { out?: string }) => {
      const { traceFromLog } = await import('./from-log.ts');
      const r = traceFromLog(log, opts.out !== undefined ? { out: opts.out } : {});
      if (opts.out === undefined) process.stdout.write(r.text);
      else process.stderr.write(`${r.sessions} session(s), ${r.messages} message(s) (${r.partial} partial) in ${opts.out}\n`);
    });

  program
    .command('tap')
    .description('relay a real vhost-user front-end (listening) and back-end (client) through a recorder')
    .requiredOption('--frontend <sock>', 'socket the front-end listens on (virtio-user server=1, QEMU server=on)')
    .requiredOption('--listen <sock>', 'socket the tap listens on; point the back-end (client=1) here')
    .requiredOption('--out <file>', 'trace file (JSON Lines), written as messages pass')
    .action(async (opts: { frontend: string; listen: string; out: string }) => {
      const { runTap } = await import('./tap.ts');
      const { done } = runTap({ ...opts, log: (l) => process.stderr.write(l + '\n') });
      process.stderr.write((await done) + '\n');
    });

  program
    .command('run <scenario>')
    .description('run one scenario in the model: expects, model invariants, protocol properties')
    .option('--seed <n>', 'seed (overrides the scenario)')
    .option('--json', 'print the result JSON')
    .action(async (file: string, opts: { seed?: string; json?: boolean }) => {
      const { runCommand } = await import('./run.ts');
      const seed = opts.seed === undefined ? undefined : Number(opts.seed);
      if (seed !== undefined && !(Number.isInteger(seed) && seed >= 0)) throw new Error(`--seed must be a non-negative integer, not '${opts.seed}'`);
      const out = runCommand(file, { ...(seed !== undefined ? { seed } : {}), ...(opts.json ? { json: true } : {}) });
      for (const line of out.lines) process.stdout.write(line + '\n');
      process.exitCode = out.exitCode;
    });

  program
    .command('plan <dir>')
    .description('run every scenario of a test plan and print one row per case')
    .option('--frontend <name>', 'front-end profile for every case (qemu-7.2, virtio-user-22.11)')
    .option('--out <dir>', 'write each result JSON and trace JSONL here')
    .action(async (dir: string, opts: { frontend?: string; out?: string }) => {
      const { runPlan } = await import('./plan.ts');
      const { FRONTENDS } = await import('../sim/scenario.ts');
      if (opts.frontend !== undefined && !(FRONTENDS as readonly string[]).includes(opts.frontend)) throw new Error(`--frontend must be one of ${FRONTENDS.join(', ')}, not '${opts.frontend}'`);
      const out = runPlan(dir, { ...(opts.frontend ? { frontend: opts.frontend as (typeof FRONTENDS)[number] } : {}), ...(opts.out ? { out: opts.out } : {}) });
      process.stdout.write(out.table);
      process.stdout.write(`${out.results.length} cases in ${out.wallSeconds.toFixed(2)} s wall time${out.written.length ? `; results and traces in ${opts.out}` : ''}\n`);
      process.exitCode = out.exitCode;
    });

  const real = program.command('real').description('run scenarios on real DPDK (dpdk-testpmd 22.11)');
  real
    .command('run <scenario>')
    .description('run one scenario on real DPDK (virtio-user server=1 ↔ vhost client=1; pvp adds a NIC and a generator) and report it as a result JSON')
    .option('--testpmd <path>', 'the dpdk-testpmd to run (default: $VHOSTSIM_TESTPMD, then $PATH)')
    .option('--nic <spec>', 'pvp: veth (af_packet on a veth pair and a generator testpmd; default), or pci:ADDR / af_packet:IFACE / tap:IFACE with an external generator')
    .option('--out <dir>', 'write the result JSON, the trace from the back-end logs and every testpmd output here')
    .option('--json', 'print the result JSON')
    .action(async (file: string, opts: { testpmd?: string; nic?: string; out?: string; json?: boolean }) => {
      const { realRunCommand } = await import('./real-run.ts');
      const r = await realRunCommand(file, opts);
      for (const line of r.lines) process.stdout.write(line + '\n');
      if (r.written.length && !opts.json) process.stderr.write(`written: ${r.written.join(', ')}\n`);
      process.exitCode = r.exitCode;
    });

  program
    .command('validate <scenarios...>')
    .description('run each scenario in the model and on real DPDK and compare them side by side (exit 2 where they disagree unpredicted)')
    .option('--testpmd <path>', 'the dpdk-testpmd to run (default: $VHOSTSIM_TESTPMD, then $PATH)')
    .option('--nic <spec>', 'pvp: veth (default) or pci:ADDR / af_packet:IFACE / tap:IFACE with an external generator')
    .option('--out <dir>', 'write both results, traces and testpmd outputs here')
    .action(async (files: string[], opts: { testpmd?: string; nic?: string; out?: string }) => {
      const { validateCommand } = await import('./validate.ts');
      const r = await validateCommand(files, { ...opts, write: (l) => process.stdout.write(l + '\n') });
      process.exitCode = r.exitCode;
    });

  return program;
}

const isMain = import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/src/cli/main.ts');
if (isMain) {
  // output piped into `head` and the like: stop quietly when the reader goes away
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  buildCli()
    .parseAsync(process.argv)
    .catch((e: unknown) => {
      process.stderr.write(`vhostsim: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    });
}
