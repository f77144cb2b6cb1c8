/**
 * The tap between real DPDK processes: virtio-user (`server=1`) listens on SOCK_F, the tap
 * listens on SOCK_B and relays to SOCK_F, the vhost back-end (`client=1`) connects to SOCK_B.
 * The back-end must reach ready through the tap, quit, be relaunched and reach ready again;
 * the trace must then hold two sessions, session 2 in the virtio-user reconnect order of
 * Appendix B (as the model's `frontendSequence` gives it), every record decodable, and
 * nothing may be left behind.
 *
 * Skips, with the reason in the suite name, when testpmd or the real socket transport is
 * missing (`scripts/install-dpdk.sh` installs DPDK).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { frontendSequence } from '../models/session.ts';
import {
  backendOptions,
  dpdkAvailability,
  killAllTestpmds,
  liveTestpmds,
  messageNames,
  placeForwarding,
  RunDir,
  runtimeDirFor,
  Testpmd,
  testpmdArgs,
  virtioUserOptions,
} from '../src/adapters/dpdk/index.ts';
import { runTap } from '../src/cli/tap.ts';
import { traceDecode } from '../src/cli/trace-decode.ts';
import { isEventRecord, isMessageRecord, readTraceFile } from '../src/sim/trace.ts';
import { realTransportAvailability } from '../src/transport/real/index.ts';

const av = dpdkAvailability();
const rt = realTransportAvailability();
const skip = !av.ok ? av.reason : !rt.ok ? rt.reason : undefined;
const title = skip === undefined ? `real ${av.ok ? (av.version ?? 'DPDK') : ''}: virtio-user server ↔ tap ↔ vhost client` : `real DPDK through the tap (skipped: ${skip})`;
if (skip !== undefined) console.warn(`tap-real: skipped: ${skip}`);

/** What a relaunched back-end reads from virtio-user (split ring) up to ready: Appendix B. */
const RECONNECT = frontendSequence('virtio-user-22.11', 'reconnect', { ring: 'split' }).map((e) => (e.type === 'request' ? e.name : e.type));
/** 256 MiB as in dpdk-real: the back-end maps all of it at SET_MEM_TABLE. */
const MEMORY_MB = Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);
const TIMEOUT_MS = 30_000;

afterEach(async () => {
  await killAllTestpmds();
});

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.skipIf(skip !== undefined)(title, () => {
  it('relays a back-end relaunch and records both sessions', async () => {
    if (!av.ok) return;
    const run = RunDir.create('tap');
    const sockF = run.socket('fe.sock');
    const sockB = run.socket('be.sock');
    const out = join(run.dir, 'trace.jsonl');
    const fePrefix = run.prefix('vu');
    const bePrefix = run.prefix('vhost');
    const procs: Testpmd[] = [];
    const launch = (name: string, args: string[]): Testpmd => {
      const p = Testpmd.launch({ testpmd: av.testpmd, stdbuf: av.stdbuf, args, name });
      procs.push(p);
      return p;
    };
    const backendArgs = testpmdArgs(backendOptions({ filePrefix: bePrefix, sockets: sockB, memoryMb: MEMORY_MB, placement: placeForwarding(0) }));
    let tap: ReturnType<typeof runTap> | undefined;
    onTestFailed(() => {
      const dir = join(process.env.VHOSTSIM_ARTIFACTS ?? tmpdir(), `vhostsim-tap-real-${process.pid}`);
      mkdirSync(dir, { recursive: true });
      procs.forEach((p, i) => writeFileSync(join(dir, `${i}-${p.name}.log`), p.text()));
      if (existsSync(out)) writeFileSync(join(dir, 'trace.jsonl'), readTraceFile(out).map((r) => JSON.stringify(r)).join('\n'));
      console.error(`tap-real: logs in ${dir}`);
    });
    try {
      const fe = launch('virtio-user', testpmdArgs(virtioUserOptions({ filePrefix: fePrefix, socket: sockF, memoryMb: MEMORY_MB, placement: placeForwarding(1) })));
      await fe.waitFor('waiting for client connection', { timeoutMs: TIMEOUT_MS });
      tap = runTap({ frontend: sockF, listen: sockB, out });

      // First back-end: a fresh handshake, through the tap.
      const b0 = launch('vhost#0', backendArgs);
      await b0.waitFor('virtio is now ready for processing', { timeoutMs: TIMEOUT_MS });
      await Promise.all([b0.waitForPrompt(1, TIMEOUT_MS), fe.waitForPrompt(1, TIMEOUT_MS)]);
      expect(messageNames(b0.vhostLog().sessions[0]!)[0]).toBe('SET_OWNER');

      // Quit it: the tap closes the front-end side; virtio-user waits for a new back-end.
      expect(await b0.quit()).toEqual({ code: 0, signal: null });
      await until(() => tap!.tap.openSessions === 0, 5_000, 'the tap to close session 1');

      // Relaunch: the new back-end sees the reconnect sequence through the tap.
      const since = fe.mark();
      const b1 = launch('vhost#1', backendArgs);
      await b1.waitFor('virtio is now ready for processing', { timeoutMs: TIMEOUT_MS });
      await fe.waitFor('virtio-user reconnection succeeds', { since, timeoutMs: 10_000 });
      expect(messageNames(b1.vhostLog().sessions[0]!).slice(0, RECONNECT.length)).toEqual(RECONNECT);

      // Front-end first, as a VM shutting down: the back-end logs the peer close.
      expect(await fe.quit()).toEqual({ code: 0, signal: null });
      await b1.waitFor('vhost peer closed', { timeoutMs: 5_000 });
      expect(await b1.quit()).toEqual({ code: 0, signal: null });
      tap.stop();
      expect(await tap.done).toMatch(/stopped after 2 session/);

      // The trace: two sessions, each opened and closed, messages both ways with fds.
      const trace = readTraceFile(out);
      const events = trace.filter(isEventRecord).map((e) => `${e.event} ${e.n}`);
      expect(events).toEqual(['session 1', 'closed 1', 'session 2', 'closed 2']);
      const msgs = trace.filter(isMessageRecord);
      expect(msgs.some((m) => m.dir === 'b2f' && m.request === 1)).toBe(true); // GET_FEATURES reply
      expect(msgs.find((m) => m.dir === 'f2b' && m.request === 5)!.nfds).toBeGreaterThan(0); // SET_MEM_TABLE
      expect(tap.tap.messages).toBe(msgs.length);

      // Decoded: no record fails, and session 2 reads the Appendix B order.
      const lines = traceDecode(out);
      expect(lines).toHaveLength(trace.length);
      expect(lines.filter((l) => l.includes(' !'))).toEqual([]);
      const s2 = lines.slice(lines.findIndex((l) => l.endsWith('session n=2')));
      const f2b = s2.filter((l) => l.split(' ')[1] === 'f2b').map((l) => l.split(' ')[2]);
      expect(f2b.slice(0, RECONNECT.length)).toEqual(RECONNECT);
      // What the front-end sent before closing: its stop (ENABLE 0 both, GET_VRING_BASE both).
      expect(f2b.slice(RECONNECT.length)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE']);

      // Nothing left behind.
      expect(liveTestpmds()).toEqual([]);
      for (const p of procs) expect(() => process.kill(p.pid, 0), `pid ${p.pid}`).toThrow();
      expect(existsSync(sockB)).toBe(false);
      expect(existsSync(sockF)).toBe(false);
      expect(existsSync(runtimeDirFor(fePrefix))).toBe(false);
      expect(existsSync(runtimeDirFor(bePrefix))).toBe(false);
    } finally {
      tap?.stop();
      await Promise.all(procs.map((p) => p.kill()));
      run.dispose();
    }
    expect(existsSync(run.dir)).toBe(false);
  }, 90_000);
});
