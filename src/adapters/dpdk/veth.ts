/**
 * A veth pair as the NIC stand-in: one end for the back-end's `net_af_packet` port, the other
 * for the traffic generator. Created with iproute2 (`ip link add … type veth peer name …`),
 * uniquely named, MTU set, IPv6 off (so the kernel sends no router or neighbour solicitations
 * that a packet count would pick up), both ends up; deleted by `delete()` or, failing that,
 * when Node exits. Needs root (CAP_NET_ADMIN) and `ip`; `vethAvailability()` says why not.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { which } from './find.ts';

/** Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL). */
export const MAX_IFNAME = 15;

export interface RunResult {
  status: number | null;
  stderr: string;
  error?: Error;
}

/** Runs one command (argv[0] is the executable); injectable so the sequence can be unit-tested. */
export type Runner = (argv: readonly string[]) => RunResult;

const spawnRunner: Runner = (argv) => {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'ignore', 'pipe'] });
  return { status: r.status, stderr: r.stderr ?? '', error: r.error };
};

let counter = 0;

/**
 * Two interface names unique to this process and call: `vhs<pid><n><rand>a` / `…b`, at most
 * 15 bytes. The pid keeps concurrent test processes apart, the random part leftovers of a
 * killed earlier run with the same pid.
 */
export function vethNames(tag = 'vhs'): { a: string; b: string } {
  counter += 1;
  const rand = Math.floor(Math.random() * 36 * 36).toString(36).padStart(2, '0');
  const stem = `${tag.replace(/[^a-z0-9]/gi, '').slice(0, 3)}${process.pid.toString(36)}${counter.toString(36)}${rand}`;
  const s = stem.slice(-(MAX_IFNAME - 1));
  return { a: `${s}a`, b: `${s}b` };
}

export function validIfname(name: string): boolean {
  return name.length > 0 && Buffer.byteLength(name) <= MAX_IFNAME && /^[A-Za-z0-9_.-]+$/.test(name) && name !== '.' && name !== '..';
}

export interface VethOptions {
  /** Prefix of the names (up to 3 alphanumerics); `vhs` by default. */
  tag?: string;
  /** Explicit names instead of generated ones. */
  names?: { a: string; b: string };
  /** MTU of both ends; the kernel's default (1500) when omitted. */
  mtu?: number;
  /** Turn IPv6 off on both ends (no kernel-originated frames); true by default. */
  quiet?: boolean;
  /** The `ip` executable; found on $PATH when omitted. */
  ip?: string;
  run?: Runner;
  /** Skip the root check (e.g. with CAP_NET_ADMIN granted otherwise). */
  skipRootCheck?: boolean;
}

/** The `ip` commands that set a pair up, in order (without the executable). */
export function vethSetupCommands(names: { a: string; b: string }, mtu?: number): string[][] {
  const cmds: string[][] = [['link', 'add', names.a, 'type', 'veth', 'peer', 'name', names.b]];
  for (const n of [names.a, names.b]) {
    if (mtu !== undefined) cmds.push(['link', 'set', 'dev', n, 'mtu', String(mtu)]);
  }
  for (const n of [names.a, names.b]) cmds.push(['link', 'set', 'dev', n, 'up']);
  return cmds;
}

/** Live pairs, deleted synchronously when Node exits. */
const live = new Set<VethPair>();
let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.once('exit', () => {
    for (const p of live) p.delete();
  });
}

export class VethPair {
  readonly a: string;
  readonly b: string;
  readonly mtu: number | undefined;
  private readonly ip: string;
  private readonly run: Runner;
  private deleted = false;

  /** @internal use `createVethPair` */
  constructor(a: string, b: string, mtu: number | undefined, ip: string, run: Runner) {
    this.a = a;
    this.b = b;
    this.mtu = mtu;
    this.ip = ip;
    this.run = run;
  }

  get alive(): boolean {
    return !this.deleted;
  }

  /** Delete the pair (deleting one end removes both); idempotent, never throws. */
  delete(): void {
    if (this.deleted) return;
    this.deleted = true;
    live.delete(this);
    try {
      this.run([this.ip, 'link', 'del', 'dev', this.a]);
    } catch {
      // Best effort: exit hooks must not throw.
    }
  }
}

export class VethError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VethError';
  }
}

/** Why a veth pair cannot be made here, or undefined if it can be tried. Cheap: no commands run. */
export function vethPrerequisites(opts: { ip?: string; uid?: number; skipRootCheck?: boolean; pathVar?: string } = {}): { ip: string } | { reason: string } {
  const uid = opts.uid ?? process.getuid?.();
  if (!opts.skipRootCheck && uid !== 0) return { reason: `creating a veth pair needs root (CAP_NET_ADMIN); running as uid ${uid ?? '?'}` };
  // sbin is often not on a non-login $PATH; look there too unless a PATH was given.
  const ip = opts.ip ?? which('ip', opts.pathVar) ?? (opts.pathVar === undefined ? (which('/usr/sbin/ip') ?? which('/sbin/ip')) : undefined);
  if (ip === undefined) return { reason: '`ip` (iproute2) not found; install it (apt-get install iproute2, or scripts/install-dpdk.sh)' };
  return { ip };
}

/** Create a pair, set MTU, IPv6 off, both ends up. On any failure the pair is deleted and a `VethError` thrown. */
export function createVethPair(opts: VethOptions = {}): VethPair {
  const pre = vethPrerequisites({ ip: opts.ip, skipRootCheck: opts.skipRootCheck });
  if ('reason' in pre) throw new VethError(pre.reason);
  const run = opts.run ?? spawnRunner;
  const names = opts.names ?? vethNames(opts.tag);
  for (const n of [names.a, names.b]) if (!validIfname(n)) throw new VethError(`bad interface name ${JSON.stringify(n)} (1-${MAX_IFNAME} bytes of [A-Za-z0-9_.-])`);
  if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65535)) throw new VethError(`MTU ${opts.mtu} out of range 68-65535`);
  const cmds = vethSetupCommands(names, opts.mtu);
  const pair = new VethPair(names.a, names.b, opts.mtu, pre.ip, run);
  const exec = (args: string[]): void => {
    const r = run([pre.ip, ...args]);
    if (r.error || r.status !== 0) {
      const why = r.error?.message ?? r.stderr.trim() ?? `exit ${r.status}`;
      throw new VethError(`ip ${args.join(' ')}: ${why || `exit ${r.status}`}`);
    }
  };
  exec(cmds[0]!);
  live.add(pair);
  installExitHook();
  try {
    if (opts.quiet ?? true) for (const n of [names.a, names.b]) disableIpv6(n);
    for (const c of cmds.slice(1)) exec(c);
  } catch (e) {
    pair.delete();
    throw e;
  }
  return pair;
}

/** IPv6 off on one interface, if the kernel has IPv6 at all. */
function disableIpv6(ifname: string): void {
  const p = `/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`;
  if (existsSync(p)) writeFileSync(p, '1');
}

export type VethAvailability = { ok: true; ip: string } | { ok: false; reason: string };

let cached: VethAvailability | undefined;

/**
 * Can a veth pair be made here? Checks root and `ip`, then creates and deletes a probe pair
 * (the kernel may lack the veth module, or a container may forbid it). Cached per process.
 */
export function vethAvailability(opts: { fresh?: boolean } = {}): VethAvailability {
  if (cached && !opts.fresh) return cached;
  const pre = vethPrerequisites();
  if ('reason' in pre) cached = { ok: false, reason: pre.reason };
  else {
    try {
      createVethPair({ tag: 'vhp', quiet: false }).delete();
      cached = { ok: true, ip: pre.ip };
    } catch (e) {
      cached = { ok: false, reason: `cannot create a veth pair: ${(e as Error).message}` };
    }
  }
  return cached;
}
