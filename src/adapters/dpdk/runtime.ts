/**
 * Per-run names and the files DPDK leaves behind: unique `--file-prefix` values, socket
 * paths in a private temp dir, and removal of EAL runtime dirs (which testpmd keeps even
 * after a clean `quit`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Unix socket paths are limited to 107 bytes (sun_path). */
export const MAX_SOCKET_PATH = 107;

/**
 * EAL's runtime directory for a file prefix: `/var/run/dpdk/<prefix>` for root, else
 * `$XDG_RUNTIME_DIR/dpdk/<prefix>`, falling back to `/tmp/dpdk/<prefix>`.
 */
export function runtimeDirFor(prefix: string, env: NodeJS.ProcessEnv = process.env): string {
  const base = process.getuid?.() === 0 ? '/var/run' : (env.XDG_RUNTIME_DIR ?? '/tmp');
  return join(base, 'dpdk', prefix);
}

/** Remove a prefix's runtime dir; never throws. */
export function removeRuntimeDir(prefix: string): void {
  try {
    rmSync(runtimeDirFor(prefix), { recursive: true, force: true });
  } catch {
    // Best effort: a leftover dir costs a few MB of tmpfs, nothing more.
  }
}

let counter = 0;

/** A file prefix unique to this process and call: `vhs-<tag>-<pid>-<n>-<rand>`. */
export function uniquePrefix(tag: string): string {
  counter += 1;
  const rand = Math.floor(Math.random() * 0x10000).toString(16);
  return `vhs-${tag.replace(/[^A-Za-z0-9-]/g, '')}-${process.pid}-${counter}-${rand}`;
}

/**
 * A private temp dir for one run's sockets, and the file prefixes used in it. `dispose()`
 * removes the dir (with any socket a killed process left) and every prefix's runtime dir.
 */
export class RunDir {
  readonly dir: string;
  private readonly prefixes = new Set<string>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  static create(tag = 'run'): RunDir {
    return new RunDir(mkdtempSync(join(tmpdir(), `vhostsim-${tag.replace(/[^A-Za-z0-9-]/g, '')}-`)));
  }

  /** A socket path in the run dir. */
  socket(name: string): string {
    const p = join(this.dir, name);
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) throw new Error(`socket path too long for AF_UNIX: ${p}`);
    return p;
  }

  /** A fresh file prefix, remembered for clean-up. */
  prefix(tag: string): string {
    const p = uniquePrefix(tag);
    this.prefixes.add(p);
    return p;
  }

  /** Remember a prefix made elsewhere, for clean-up. */
  adopt(prefix: string): void {
    this.prefixes.add(prefix);
  }

  dispose(): void {
    for (const p of this.prefixes) removeRuntimeDir(p);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
