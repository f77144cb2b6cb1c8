/**
 * Test helpers for the real model front-ends against real DPDK testpmd (the conformance
 * suites): the skip gate, io-forwarding loopback back-ends on one socket, and what to print
 * when a test fails. Kept apart from `../testing.ts`, which library code imports.
 */
import { existsSync } from 'node:fs';
import { afterEach, expect, onTestFailed } from 'vitest';
import {
  backendOptions,
  RunDir,
  dpdkAvailability,
  killAllTestpmds,
  placeForwarding,
  Testpmd,
  testpmdArgs,
  type Availability,
  type PortStats,
} from '../../../adapters/dpdk/index.ts';
import { openFdNumbers, realTransportAvailability } from '../../../transport/real/index.ts';
import { fdsOpenedSince } from '../../../transport/real/test-support.ts';
import type { RealFrontendLogLine, RealFrontendSession } from './socket-io.ts';

const MEMORY_MB = Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);

/**
 * Whether testpmd and the real transport are here (`skip` says why not), the suite's title
 * naming the DPDK version, and testpmd clean-up after each test (only the processes this file launched).
 */
export function realDpdkSuite(what: string, logName: string): { dpdk: Availability; skip: string | undefined; title: string } {
  const dpdk = dpdkAvailability();
  const real = realTransportAvailability();
  const skip = !dpdk.ok ? `testpmd: ${dpdk.reason}` : !real.ok ? `real transport: ${real.reason}` : undefined;
  const title = skip ? `${what} ↔ real vhost (skipped: ${skip})` : `${what} ↔ real ${dpdk.ok ? (dpdk.version ?? 'DPDK') : ''} vhost`;
  if (skip) console.warn(`${logName}: skipped: ${skip}`);
  afterEach(async () => {
    await killAllTestpmds();
  });
  return { dpdk, skip, title };
}

/** testpmd's counters of port 0. */
export async function port0(p: Testpmd): Promise<PortStats> {
  const [s] = await p.portStats();
  if (s === undefined) throw new Error(`${p.name}: no port stats`);
  return s;
}

/** Back-ends launched one after another on `socket`, each testpmd io-forwarding port 0 to itself, with its own file prefix. */
export function loopbackBackends(dpdk: Availability & { ok: true }, run: RunDir, socket: string): { procs: Testpmd[]; prefixes: string[]; launch: () => Testpmd } {
  const procs: Testpmd[] = [];
  const prefixes: string[] = [];
  const launch = (): Testpmd => {
    prefixes.push(run.prefix('vhost'));
    const opts = backendOptions({
      filePrefix: prefixes[prefixes.length - 1]!,
      sockets: socket,
      memoryMb: MEMORY_MB,
      placement: placeForwarding(0),
      app: { portTopology: 'loop', forwardMode: 'io' },
    });
    const p = Testpmd.launch({ testpmd: dpdk.testpmd, stdbuf: dpdk.stdbuf, args: testpmdArgs(opts), name: `vhost#${procs.length}` });
    procs.push(p);
    return p;
  };
  return { procs, prefixes, launch };
}

/** On failure, prints the last `tail` lines of each testpmd and the front-end's log and sessions (then `extra()`). */
export function dumpOnFailure(procs: readonly Testpmd[], fe: { readonly log: readonly RealFrontendLogLine[]; readonly sessions: readonly RealFrontendSession[] }, tail: number, extra: () => string = () => ''): void {
  onTestFailed(() => {
    for (const p of procs) console.error(`--- ${p.name}\n${p.tail(tail)}`);
    console.error(`--- model front-end\n${fe.log.map((l) => `${l.level} ${l.text}`).join('\n')}\n${JSON.stringify(fe.sessions)}${extra()}`);
  });
}

/** Every frame came back, so the back-end has marked every TX buffer used; lets the guest reclaim them (2 s at most). */
export async function settleTx(fe: { inFlight(i: number): number; reclaimTx(): number }): Promise<void> {
  const at = Date.now();
  while (fe.inFlight(1) > 0 && Date.now() - at < 2_000) {
    fe.reclaimTx();
    await new Promise((r) => setTimeout(r, 5));
  }
}

export interface LoopbackRun<F> {
  readonly fe: F;
  readonly socket: string;
  readonly procs: Testpmd[];
  /** File prefixes of the back-ends, in launch order. */
  readonly prefixes: string[];
  launch(): Testpmd;
  /** Launches the next back-end and waits until it has a ready device and its prompt. */
  launchReady(): Promise<Testpmd>;
}

/**
 * Runs `body` with a front-end (`make` on the run's socket) and loopback back-ends; whatever
 * happens the front-end shuts down, every testpmd is killed and the run dir removed, and then
 * neither the dir nor any fd opened since the start may be left.
 */
export async function withLoopbackRun<F extends { shutdown(): void; readonly log: readonly RealFrontendLogLine[]; readonly sessions: readonly RealFrontendSession[] }>(
  dpdk: Availability & { ok: true },
  tag: string,
  make: (socket: string) => F,
  failure: { tail: number; extra?: () => string },
  body: (r: LoopbackRun<F>) => Promise<void>,
): Promise<void> {
  const fdsBefore = openFdNumbers();
  const run = RunDir.create(tag);
  const socket = run.socket('vhost-net.sock');
  const fe = make(socket);
  const { procs, prefixes, launch } = loopbackBackends(dpdk, run, socket);
  dumpOnFailure(procs, fe, failure.tail, failure.extra);
  const launchReady = async (): Promise<Testpmd> => {
    const p = launch();
    await p.waitFor('virtio is now ready for processing', { timeoutMs: 20_000 });
    await p.waitForPrompt(1, 20_000);
    return p;
  };
  try {
    await body({ fe, socket, procs, prefixes, launch, launchReady });
  } finally {
    fe.shutdown();
    for (const p of procs) await p.kill().catch(() => undefined);
    run.dispose();
  }
  expect(existsSync(run.dir)).toBe(false);
  expect(fdsOpenedSince(fdsBefore)).toEqual([]);
}
