/**
 * The model front-end against reality: the model `virtio-user-22.11` (server=1) listens on a
 * real socket with real sealed-memfd guest memory and real eventfds; real DPDK 22.11 testpmd
 * connects as the vhost back-end (`client=1`) and io-forwards port 0 to itself
 * (`--port-topology=loop`), so every frame the guest transmits comes back on its RX ring.
 *
 * Checked: the probe's message order (fact sheet §4.5) and DPDK's "virtio is now ready for
 * processing"; N numbered frames out, the same N back with intact payloads, matching
 * testpmd's port counters, and no call eventfd write (the rings ask for no used-buffer
 * notifications, as virtio-user's do); testpmd quit and relaunched: the reconnect sequence (Appendix B),
 * split rings kept (the new DPDK re-bases to used->idx and says "mismatches"), traffic
 * resumes; at the end nothing left: no process, socket, mapping or fd.
 *
 * Skips, with the reason in the suite name, when testpmd or the real transport (koffi) is
 * unavailable.
 */
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import {
  backendOptions,
  dpdkAvailability,
  eventsOf,
  killAllTestpmds,
  liveTestpmds,
  placeForwarding,
  RunDir,
  runtimeDirFor,
  Testpmd,
  testpmdArgs,
  type PortStats,
} from '../src/adapters/dpdk/index.ts';
import { openFdNumbers, realTransportAvailability } from '../src/transport/real/index.ts';
import { fdsOpenedSince } from '../src/transport/real/test-support.ts';
import { RealModelFrontend, exchange } from '../src/endpoint/real/frontend/index.ts';

const dpdk = dpdkAvailability();
const real = realTransportAvailability();
const skip = !dpdk.ok ? `testpmd: ${dpdk.reason}` : !real.ok ? `real transport: ${real.reason}` : undefined;
const title = skip ? `model front-end ↔ real vhost (skipped: ${skip})` : `model front-end ↔ real ${dpdk.ok ? (dpdk.version ?? 'DPDK') : ''} vhost`;
if (skip) console.warn(`real-model-frontend: skipped: ${skip}`);

const PROBE = [
  'SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const RECONNECT = [
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE',
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const N = 2_000;
const MEMORY_MB = Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);

const seqs = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

async function port0(p: Testpmd): Promise<PortStats> {
  const [s] = await p.portStats();
  if (s === undefined) throw new Error(`${p.name}: no port stats`);
  return s;
}

afterEach(async () => {
  await killAllTestpmds();
});

describe.skipIf(skip !== undefined)(title, () => {
  it.each([
    { ring: 'split', packed: false },
    { ring: 'packed', packed: true },
  ])('$ring ring: probe, io-forwarded frames verify end to end, reconnect after a back-end quit', async ({ ring, packed }) => {
    if (!dpdk.ok) return;
    const fdsBefore = openFdNumbers();
    const run = RunDir.create(`model-fe-${ring}`);
    const socket = run.socket('vhost-net.sock');
    const fe = new RealModelFrontend({ path: socket, packedVq: packed });
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
    onTestFailed(() => {
      for (const p of procs) console.error(`--- ${p.name}\n${p.tail(40)}`);
      console.error(`--- model front-end\n${fe.log.map((l) => `${l.level} ${l.text}`).join('\n')}\n${JSON.stringify(fe.sessions)}`);
    });
    try {
      fe.listen();

      // ---- first back-end: the probe, then io forwarding.
      const p0 = launch();
      await p0.waitFor('virtio is now ready for processing', { timeoutMs: 20_000 });
      await p0.waitForPrompt(1, 20_000);
      const s1 = await fe.waitForRunning(1);
      expect(s1.sent).toEqual(PROBE);
      expect(fe.packed).toBe(packed);
      // One port forwarding to itself (loop topology): no paired-topology warning about an odd port count.
      expect(p0.text()).not.toMatch(/odd forward ports/);
      await p0.setForwardMode('io');
      await p0.clearPortStats();
      await p0.start();
      fe.takeCalls();
      const r0 = await exchange(fe, 0, N);
      // Polled rings, as virtio-user's: real vhost sends no used-buffer notification.
      expect(fe.takeCalls()).toEqual([0n, 0n]);
      expect(r0.bad).toEqual([]);
      expect(r0.sent).toBe(N);
      expect(r0.received).toEqual(seqs(0, N));
      await p0.stop();
      const st0 = await port0(p0);
      expect(st0.rxPackets).toBe(N);
      expect(st0.txPackets).toBe(N);
      expect(st0.rxErrors).toBe(0);

      // ---- the back-end quits; the model keeps its rings and waits for the next.
      // every frame came back, so testpmd has marked all TX buffers used; under load the
      // guest may simply not have reclaimed the last ones yet
      const settleAt = Date.now();
      while (fe.inFlight(1) > 0 && Date.now() - settleAt < 2_000) {
        fe.reclaimTx();
        await new Promise((r) => setTimeout(r, 5));
      }
      const rxPostedAtQuit = fe.inFlight(0);
      expect(fe.inFlight(1)).toBe(0);
      await p0.quit();
      const downAt = Date.now();
      while (fe.session !== undefined && Date.now() - downAt < 5_000) await new Promise((r) => setTimeout(r, 5));
      expect(fe.session).toBeUndefined();
      expect(s1.end).toBe('peer-closed');

      // ---- relaunch: the reconnect sequence, DPDK re-bases to used->idx, traffic resumes.
      const p1 = launch();
      await p1.waitFor('virtio is now ready for processing', { timeoutMs: 20_000 });
      await p1.waitForPrompt(1, 20_000);
      const s2 = await fe.waitForRunning(2);
      expect(s2.sent).toEqual(RECONNECT);
      const mism = eventsOf(p1.vhostLog(), 'used-idx-mismatch');
      if (packed) {
        // virtio-user resets packed rings on reconnect: the posted RX buffers are dropped.
        expect(mism).toEqual([]);
        expect(fe.log.map((l) => l.text)).toContain('Packets on the fly will be dropped when packed ring reconnecting.');
        expect(fe.droppedOnReset).toBe(rxPostedAtQuit);
      } else {
        // Split rings are kept and their base sent as 0: DPDK takes used->idx from guest memory.
        expect(mism.map((e) => e.usedIdx)).toEqual([N, N]);
        expect(fe.droppedOnReset).toBe(0);
      }
      await p1.setForwardMode('io');
      await p1.clearPortStats();
      await p1.start();
      fe.takeCalls();
      const r1 = await exchange(fe, N, N);
      expect(fe.takeCalls()).toEqual([0n, 0n]);
      expect(r1.bad).toEqual([]);
      expect(r1.received).toEqual(seqs(N, N));
      await p1.stop();
      const st1 = await port0(p1);
      expect(st1.rxPackets).toBe(N);
      expect(st1.txPackets).toBe(N);

      // ---- the guest quits: the reset reaches the back-end, then everything is closed.
      await fe.quit();
      expect(s2.sent.slice(-4)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE']);
      expect(fe.leaks()).toEqual([]);
      expect(existsSync(socket)).toBe(false);
      await p1.quit();
      expect(liveTestpmds()).toEqual([]);
      for (const fp of prefixes) expect(existsSync(runtimeDirFor(fp))).toBe(false);

      console.info(
        `real-model-frontend ${ring}: ${JSON.stringify({
          probe: s1.sent.length,
          reconnect: s2.sent.slice(0, RECONNECT.length).join(' '),
          first: { sent: r0.sent, back: r0.received.length, ms: r0.ms, testpmd: { rx: st0.rxPackets, tx: st0.txPackets } },
          second: { sent: r1.sent, back: r1.received.length, ms: r1.ms, testpmd: { rx: st1.rxPackets, tx: st1.txPackets } },
          usedIdxResync: mism.map((e) => `${e.lastUsedIdx} -> ${e.usedIdx}`),
          rxPostedAtQuit,
          droppedOnReset: fe.droppedOnReset,
        })}`,
      );
    } finally {
      fe.shutdown();
      for (const p of procs) await p.kill().catch(() => undefined);
      run.dispose();
    }
    expect(existsSync(run.dir)).toBe(false);
    expect(fdsOpenedSince(fdsBefore)).toEqual([]);
  }, 60_000);
});
