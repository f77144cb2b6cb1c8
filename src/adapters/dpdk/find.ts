/**
 * Locating dpdk-testpmd and stdbuf, and checking that testpmd can actually run here
 * (EAL init without hugepages or PCI), so suites can skip with a precise reason.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, rmSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { runtimeDirFor } from './runtime.ts';

export interface Located {
  path: string;
  /** Where it came from: the explicit option, the environment variable, or $PATH. */
  source: 'option' | 'env' | 'path';
}

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** First executable `name` on a PATH string. */
export function which(name: string, pathVar: string | undefined = process.env.PATH): string | undefined {
  if (name.includes('/')) return executable(name) ? resolve(name) : undefined;
  for (const dir of (pathVar ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (executable(p)) return p;
  }
  return undefined;
}

export interface FindTestpmdOptions {
  /** `--testpmd PATH` from the command line; wins over everything. */
  testpmd?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Where testpmd is: the explicit path, then `$VHOSTSIM_TESTPMD`, then `dpdk-testpmd` on
 * $PATH. An explicit path or variable that does not name an executable is an error rather
 * than a silent fall-through, so a typo does not quietly test a different build.
 */
export function findTestpmd(opts: FindTestpmdOptions = {}): Located | undefined {
  const env = opts.env ?? process.env;
  const pick = (p: string, source: Located['source']): Located => {
    const found = isAbsolute(p) || p.includes('/') ? (executable(p) ? resolve(p) : undefined) : which(p, env.PATH);
    if (!found) throw new Error(`${source === 'option' ? '--testpmd' : '$VHOSTSIM_TESTPMD'} ${p} is not an executable file`);
    return { path: found, source };
  };
  if (opts.testpmd) return pick(opts.testpmd, 'option');
  if (env.VHOSTSIM_TESTPMD) return pick(env.VHOSTSIM_TESTPMD, 'env');
  const p = which('dpdk-testpmd', env.PATH);
  return p ? { path: p, source: 'path' } : undefined;
}

/** `stdbuf` (coreutils); testpmd needs it for line-buffered stdout through a pipe. */
export function findStdbuf(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return which('stdbuf', env.PATH);
}

export type Availability =
  | { ok: true; testpmd: string; stdbuf: string; version: string | undefined }
  | { ok: false; reason: string };

let cached: Availability | undefined;

/**
 * Can real DPDK be run here? Finds testpmd and stdbuf and runs testpmd once through EAL
 * init (`--no-huge -m 64 --no-pci`, testpmd's `--help`), which takes ~0.2 s. The result
 * is cached per process unless `fresh` is set. `reason` says what to do about a failure.
 */
export function dpdkAvailability(opts: FindTestpmdOptions & { fresh?: boolean } = {}): Availability {
  if (cached && !opts.fresh && !opts.testpmd) return cached;
  let found: Located | undefined;
  try {
    found = findTestpmd(opts);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  if (!found) {
    return {
      ok: false,
      reason: 'dpdk-testpmd not found (set $VHOSTSIM_TESTPMD or run scripts/install-dpdk.sh as root: apt-get install dpdk-dev)',
    };
  }
  const stdbuf = findStdbuf(opts.env);
  if (!stdbuf) return { ok: false, reason: 'stdbuf (coreutils) not found; testpmd output through a pipe would be block-buffered' };
  const prefix = `vhostsim-probe-${process.pid}-${Date.now().toString(36)}`;
  const r = spawnSync(found.path, ['--no-huge', '-m', '64', '--no-pci', `--file-prefix=${prefix}`, '-l', '0,1', '-v', '--', '--help'], {
    encoding: 'utf8',
    timeout: 20_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  rmSync(runtimeDirFor(prefix), { recursive: true, force: true });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const version = /RTE Version: '([^']+)'/.exec(out)?.[1];
  let result: Availability;
  if (r.error) result = { ok: false, reason: `${found.path} could not be run: ${r.error.message}` };
  else if (r.status !== 0) {
    const cause = out.split('\n').filter((l) => /EAL: (Error|FATAL|Cannot)|Cause:|Error/.test(l)).slice(0, 3).join(' | ');
    result = { ok: false, reason: `${found.path} failed EAL init (exit ${r.status ?? r.signal}): ${cause || out.slice(-300)}` };
  } else result = { ok: true, testpmd: found.path, stdbuf, version };
  if (!opts.testpmd) cached = result;
  return result;
}
