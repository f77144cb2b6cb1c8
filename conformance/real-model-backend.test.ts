/**
 * The model back-end against reality: real DPDK 22.11 virtio-user (testpmd, `server=1`,
 * split ring and packed ring) connects to no DPDK at all but to the model back-end
 * `dpdk-22.11` running in this process over a real AF_UNIX socket, with real memfd guest
 * memory and real eventfds (src/endpoint/real).
 *
 * Per ring: the model connects as a client and must reach ready with virtio-user's first
 * handshake (fact sheet §4.5) while testpmd brings its link up; testpmd's txonly traffic must
 * arrive well-formed and, once stopped and drained, match testpmd's TX counters exactly; the
 * model is then quit mid-traffic and relaunched: virtio-user must take it through its
 * reconnect sequence (Appendix B: ENABLE 0 ×2, GET_VRING_BASE ×2, negotiation without
 * SET_OWNER) and traffic must resume — with nothing lost on a split ring (the new device
 * resumes at used->idx) and at most a ring's worth dropped on a packed ring (virtio-user
 * resets it). flowgen then checks the RX direction (the model echoes frames back). At the end
 * virtio-user quits: the model sees its clean stop, then retries the vanished socket; after
 * the model quits nothing may be left: no process, socket, mapping or fd. The other side:
 * virtio-user quits and is relaunched on the same socket; the model, retrying each second,
 * connects by itself, sees a fresh start (SET_OWNER …) and txonly counts match exactly again.
 *
 * Skips, with the reason in the suite name, when testpmd or the real transport (koffi) is
 * unavailable.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { dpdkAvailability, killAllTestpmds, liveTestpmds, RunDir, runtimeDirFor, Testpmd, testpmdArgs, VirtioUserPair, type PortStats, type VirtioUserPairOptions } from '../src/adapters/dpdk/index.ts';
import { openFdNumbers, realTransportAvailability } from '../src/transport/real/index.ts';
import { fdsOpenedSince } from '../src/transport/real/test-support.ts';
import { eventsOfKind, formatVhostLog } from '../src/endpoint/backend/index.ts';
import { RealModelBackend } from '../src/endpoint/real/index.ts';

const dpdk = dpdkAvailability();
const real = realTransportAvailability();
const skip = !dpdk.ok ? `testpmd: ${dpdk.reason}` : !real.ok ? `real transport: ${real.reason}` : undefined;
const title = skip ? `model back-end ↔ real virtio-user (skipped: ${skip})` : `model back-end ↔ real ${dpdk.ok ? (dpdk.version ?? 'DPDK') : ''} virtio-user`;
if (skip) console.warn(`real-model-backend: skipped: ${skip}`);

/** virtio-user's first start (fact sheet §4.5; GET_STATUS twice on the first init). */
const FIRST_START = [
  'SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
/** What a relaunched back-end reads from virtio-user up to ready (Appendix B). */
const RECONNECT = [
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE',
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const FRONTEND_STOP = ['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE'];
/** virtio-user's default ring size. */
const QUEUE_SIZE = 256;
const MEMORY_MB = Number(process.env.VHOSTSIM_DPDK_MEM_MB ?? 256);
const F_RING_PACKED = 1n << 34n;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits for `cond` (a liveness bound on real processes, not part of any model). */
async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** After testpmd's `stop`, whatever it put in the ring reaches the model within a few polls. */
async function drained(b: RealModelBackend): Promise<void> {
  let last = -1;
  for (let i = 0; i < 100 && b.stats!.txPackets !== last; i++) {
    last = b.stats!.txPackets;
    await sleep(50);
  }
}

async function port0(p: Testpmd): Promise<PortStats> {
  const [s] = await p.portStats();
  if (s === undefined) throw new Error(`${p.name}: no port stats`);
  return s;
}

async function linkUp(p: Testpmd): Promise<boolean> {
  const r = await p.command('show port info 0');
  return r.lines.some((l) => /Link status:\s*up/.test(l));
}

/** Observations printed at the end of each run (the report's evidence). */
const observed: Record<string, unknown>[] = [];

afterEach(async () => {
  await killAllTestpmds();
});

describe.skipIf(skip !== undefined)(title, () => {
  describe.each([
    { ring: 'split', packed: false },
    { ring: 'packed', packed: true },
  ])('$ring ring', ({ ring, packed }) => {
    it('serves virtio-user: ready, exact TX counts, reconnect after a quit, echo on RX, nothing left behind', async () => {
      if (!dpdk.ok) return;
      const fdsBefore = openFdNumbers();
      const run = RunDir.create(`model-${ring}`);
      const backends: RealModelBackend[] = [];
      let pair: VirtioUserPair | undefined;
      const launch = (): RealModelBackend => {
        const b = new RealModelBackend({ path: pair!.socket, dataPath: { rx: 'echo' } });
        backends.push(b);
        expect(b.start()).toBeUndefined();
        return b;
      };
      onTestFailed(() => {
        if (!pair) return;
        const dir = join(process.env.VHOSTSIM_ARTIFACTS ?? tmpdir(), `vhostsim-real-model-${ring}-${process.pid}`);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'virtio-user.log'), pair.frontend.text());
        backends.forEach((b, i) => writeFileSync(join(dir, `model${i}.log`), formatVhostLog(b.events, { configLevel: 'DEBUG', pmdLevel: 'INFO', model: true }).join('\n')));
        console.error(`real-model-backend: logs in ${dir}`);
      });
      try {
        pair = await VirtioUserPair.start({ testpmd: dpdk.testpmd, stdbuf: dpdk.stdbuf, run, packed, memoryMb: MEMORY_MB });
        const fe = pair.frontend;

        // ---- first connection: virtio-user's fresh start, link up on both sides.
        const b0 = launch();
        const s0 = await b0.waitForReady({ timeoutMs: 15_000 });
        expect(s0.messages).toEqual(FIRST_START);
        expect(eventsOfKind(s0.events, 'ready')).toHaveLength(1);
        expect(s0.device.features & F_RING_PACKED).toBe(packed ? F_RING_PACKED : 0n);
        await fe.waitForPrompt(1, 15_000);
        expect(fe.text()).toContain('Checking link statuses...');
        expect(await linkUp(fe)).toBe(true);

        // ---- txonly: every frame well-formed, counts equal once drained.
        await fe.setForwardMode('txonly');
        await fe.clearPortStats();
        await fe.start();
        await until(() => b0.stats!.txPackets > 20_000, 'txonly frames at the model');
        await fe.stop();
        await drained(b0);
        const a = await port0(fe);
        const m0 = { ...b0.stats! };
        expect(m0.txMalformed).toBe(0);
        expect(a.txPackets).toBe(m0.txPackets);
        expect(a.txBytes).toBe(m0.txBytes);
        expect(m0.etherTypes).toEqual({ '0800': m0.txPackets });

        // ---- quit the model mid-traffic; virtio-user's link goes down.
        await fe.start();
        await until(() => b0.stats!.txPackets > m0.txPackets + 10_000, 'traffic again');
        const since = fe.mark();
        b0.quit();
        const atQuit = b0.stats!.txPackets;
        expect(s0.end).toBe('closed-locally');
        expect(b0.leaks()).toEqual([]);
        await fe.waitFor('virtio-user port 0 is down', { since, timeoutMs: 5_000 });
        await sleep(100);
        const [mid] = await fe.portStats();
        // What virtio-user queued after the model left: at most a ring's worth (it fills, then waits).
        const inFlight = mid!.txPackets - atQuit;
        expect(inFlight).toBeGreaterThanOrEqual(0);
        expect(inFlight).toBeLessThanOrEqual(QUEUE_SIZE);

        // ---- relaunch: the reconnect sequence, same features, traffic resumes.
        const b1 = launch();
        const s1 = await b1.waitForReady({ timeoutMs: 15_000 });
        const reconnectMessages = [...s1.messages];
        expect(reconnectMessages).toEqual(RECONNECT);
        expect(s1.messages).not.toContain('SET_OWNER');
        expect(eventsOfKind(s1.events, 'enable').slice(0, 2).map((e) => [e.index, e.enable])).toEqual([[0, false], [1, false]]);
        expect(eventsOfKind(s1.events, 'get-vring-base').map((e) => [e.index, e.num])).toEqual([[0, 0], [1, 0]]);
        expect(eventsOfKind(s1.events, 'set-vring-base').map((e) => [e.index, e.lastAvailIdx])).toEqual([[0, 0], [1, 0]]);
        expect(s1.device.features).toBe(s0.device.features);
        expect(s1.device.protocolFeatures).toBe(s0.device.protocolFeatures);
        const mismatches = eventsOfKind(s1.events, 'used-idx-mismatch');
        // Split: virtio-user keeps its rings and sends base 0; the device takes used->idx from guest memory.
        if (packed) expect(mismatches).toEqual([]);
        else expect(mismatches.map((e) => e.index)).toContain(1);
        await fe.waitFor('virtio-user reconnection succeeds', { since, timeoutMs: 10_000 });
        if (packed) expect(fe.text(since)).toContain('Packets on the fly will be dropped when packed ring reconnecting');
        await until(() => b1.stats!.txPackets > 10_000, 'traffic after the reconnect');
        await fe.stop();
        await drained(b1);
        const b = await port0(fe);
        const delivered = m0.txPackets + (atQuit - m0.txPackets) + b1.stats!.txPackets;
        const lost = b.txPackets - delivered;
        if (packed) {
          // The ring's in-flight frames are dropped by virtio-user's reset, never seen by anyone.
          expect(lost).toBeGreaterThanOrEqual(0);
          expect(lost).toBeLessThanOrEqual(inFlight);
        } else {
          // Exactly once: the relaunched device resumes at used->idx and takes what was queued.
          expect(lost).toBe(0);
        }
        expect(b1.stats!.txMalformed).toBe(0);

        // ---- RX: flowgen receives what the model echoes.
        await fe.setForwardMode('flowgen');
        await fe.clearPortStats();
        const rxBefore = b1.stats!.rxPackets;
        await fe.start();
        await until(() => b1.stats!.rxPackets > rxBefore + 1_000, 'echoed frames');
        let c = await port0(fe);
        for (let i = 0; i < 50 && c.rxPackets === 0; i++) {
          await sleep(50);
          c = await port0(fe);
        }
        await fe.stop();
        expect(c.rxPackets).toBeGreaterThan(0);
        expect(c.rxErrors).toBe(0);
        expect(b1.stats!.txMalformed).toBe(0);

        // ---- virtio-user quits: a clean stop at the model, then connect failures.
        await pair.close();
        expect(fe.exitInfo).toEqual({ code: 0, signal: null });
        await until(() => b1.events.some((e) => e.kind === 'connect-failed'), 'a failed reconnect after the front-end left');
        expect(s1.end).toBe('peer-closed');
        expect(s1.messages.slice(-FRONTEND_STOP.length)).toEqual(FRONTEND_STOP);
        expect(s1.events.map((e) => e.text)).toContain('vhost peer closed');
        expect(b1.events.find((e) => e.kind === 'connect-failed')?.text).toBe('failed to connect: No such file or directory');
        expect(b1.state).toBe('retrying');
        b1.quit();

        observed.push({
          ring,
          firstHandshake: s0.messages.length,
          reconnectHandshake: reconnectMessages.join(' '),
          frontendStop: s1.messages.slice(-FRONTEND_STOP.length).join(' '),
          txonly: { testpmdTx: a.txPackets, modelTx: m0.txPackets, bytes: a.txBytes },
          inFlightAtQuit: inFlight,
          afterReconnect: { testpmdTxTotal: b.txPackets, modelTotal: delivered, lost },
          usedIdxResync: mismatches.map((e) => `vring ${e.index}: ${e.lastUsedIdx} -> ${e.usedIdx}`),
          flowgen: { testpmdRx: c.rxPackets, modelRx: b1.stats!.rxPackets - rxBefore, rxDropped: b1.stats!.rxDropped, txNumBuffersSet: b1.stats!.txNumBuffersSet },
          readyMs: Math.round((s1.readyAt[0]! - s1.connectedAt) * 1000),
        });

        // ---- nothing left behind.
        for (const m of backends) {
          expect(m.state).toBe('stopped');
          expect(m.leaks()).toEqual([]);
          for (const s of m.sessions) expect(s.device.internalErrors).toEqual([]);
        }
        expect(liveTestpmds()).toEqual([]);
        expect(existsSync(pair.socket)).toBe(false);
        expect(existsSync(runtimeDirFor(pair.frontendPrefix))).toBe(false);
      } finally {
        for (const m of backends) m.kill();
        await pair?.kill();
        run.dispose();
      }
      expect(existsSync(run.dir)).toBe(false);
      expect(fdsOpenedSince(fdsBefore)).toEqual([]);
      console.info(`real-model-backend ${ring}: ${JSON.stringify(observed[observed.length - 1])}`);
    }, 60_000);
    it('virtio-user quits and is relaunched on the socket: the model reconnects by itself, fresh start, exact TX counts again', async () => {
      if (!dpdk.ok) return;
      const fdsBefore = openFdNumbers();
      const run = RunDir.create(`model-vurelaunch-${ring}`);
      const socket = run.socket('vhost-net.sock');
      const o: VirtioUserPairOptions = { testpmd: dpdk.testpmd, stdbuf: dpdk.stdbuf, run, packed, memoryMb: MEMORY_MB };
      const vus: Testpmd[] = [];
      const prefixes: string[] = [];
      let b: RealModelBackend | undefined;
      /** Launches virtio-user (server=1) on the socket, as the scenario runner's launchVm does. */
      const launchVu = async (): Promise<Testpmd> => {
        // virtio-user binds without unlinking: a stale socket file must go first.
        if (existsSync(socket)) rmSync(socket, { force: true });
        prefixes.push(run.prefix('vu'));
        const p = Testpmd.launch({ testpmd: o.testpmd, stdbuf: o.stdbuf, args: testpmdArgs(VirtioUserPair.frontendOptions(o, socket, prefixes[prefixes.length - 1]!)), name: `virtio-user#${vus.length}` });
        vus.push(p);
        await p.waitFor('waiting for client connection', { timeoutMs: 20_000 });
        return p;
      };
      /** txonly until `min` frames reached the model, stop, drain: testpmd's counters equal the model's. */
      const txonly = async (vu: Testpmd, m: RealModelBackend, min: number) => {
        await vu.setForwardMode('txonly');
        await vu.clearPortStats();
        const before = { ...m.stats!, etherTypes: { ...m.stats!.etherTypes } };
        await vu.start();
        await until(() => m.stats!.txPackets - before.txPackets > min, 'txonly frames at the model');
        await vu.stop();
        await drained(m);
        const st = await port0(vu);
        const got = { packets: m.stats!.txPackets - before.txPackets, bytes: m.stats!.txBytes - before.txBytes };
        expect(m.stats!.txMalformed).toBe(0);
        expect(st.txPackets).toBe(got.packets);
        expect(st.txBytes).toBe(got.bytes);
        expect(m.stats!.etherTypes['0800']! - (before.etherTypes['0800'] ?? 0)).toBe(got.packets);
        return { testpmdTx: st.txPackets, modelTx: got.packets, bytes: st.txBytes };
      };
      onTestFailed(() => {
        for (const p of vus) console.error(`--- ${p.name}\n${p.tail(40)}`);
        if (b) console.error(`--- model\n${formatVhostLog(b.events, { configLevel: 'DEBUG', pmdLevel: 'INFO', model: true }).join('\n')}`);
      });
      try {
        // ---- first virtio-user: fresh start, exact counts.
        const v0 = await launchVu();
        b = new RealModelBackend({ path: socket, dataPath: { rx: 'echo' } });
        expect(b.start()).toBeUndefined();
        const s0 = await b.waitForReady({ timeoutMs: 15_000 });
        expect(s0.messages).toEqual(FIRST_START);
        await v0.waitForPrompt(1, 15_000);
        expect(await linkUp(v0)).toBe(true);
        const t0 = await txonly(v0, b, 20_000);

        // ---- virtio-user quits: its port close at the model, then the model retries the vanished socket.
        await v0.quit();
        expect(v0.exitInfo).toEqual({ code: 0, signal: null });
        const downAt = Date.now();
        await until(() => s0.end !== undefined, 'the model to see the close');
        expect(s0.end).toBe('peer-closed');
        expect(s0.messages.slice(-FRONTEND_STOP.length)).toEqual(FRONTEND_STOP);
        const failedBefore = b.events.filter((e) => e.kind === 'connect-failed').length;
        await until(() => b!.events.filter((e) => e.kind === 'connect-failed').length > failedBefore || b!.state === 'retrying', 'a failed reconnect');
        expect(b.state).toBe('retrying');
        expect(b.events.some((e) => e.kind === 'reconnecting')).toBe(true);

        // ---- relaunched virtio-user on the same socket: the model connects on its next retry.
        const v1 = await launchVu();
        const s1 = await b.waitForReady({ session: s0.n + 1, timeoutMs: 15_000 });
        const reconnectMs = Date.now() - downAt;
        expect(b.sessions).toHaveLength(2);
        // A new virtio-user: its first start (SET_OWNER …), not the reconnect sequence.
        expect(s1.messages).toEqual(FIRST_START);
        expect(s1.device.features).toBe(s0.device.features);
        expect(s1.device.features & F_RING_PACKED).toBe(packed ? F_RING_PACKED : 0n);
        expect(eventsOfKind(s1.events, 'used-idx-mismatch')).toEqual([]);
        await v1.waitForPrompt(1, 15_000);
        expect(await linkUp(v1)).toBe(true);
        const t1 = await txonly(v1, b, 20_000);

        // ---- both quit; nothing left.
        await v1.quit();
        await until(() => s1.end !== undefined, 'the model to see the second close');
        expect(s1.messages.slice(-FRONTEND_STOP.length)).toEqual(FRONTEND_STOP);
        b.quit();
        expect(b.state).toBe('stopped');
        expect(b.leaks()).toEqual([]);
        for (const s of b.sessions) expect(s.device.internalErrors).toEqual([]);
        expect(liveTestpmds()).toEqual([]);
        expect(existsSync(socket)).toBe(false);
        for (const fp of prefixes) expect(existsSync(runtimeDirFor(fp))).toBe(false);
        console.info(
          `real-model-backend relaunch ${ring}: ${JSON.stringify({
            first: { handshake: s0.messages.length, ...t0 },
            second: { handshake: s1.messages.length, startsWith: s1.messages[0], ...t1 },
            connectFailed: b.events.filter((e) => e.kind === 'connect-failed').length,
            reconnectMs,
          })}`,
        );
      } finally {
        b?.kill();
        for (const p of vus) await p.kill().catch(() => undefined);
        run.dispose();
      }
      expect(existsSync(run.dir)).toBe(false);
      expect(fdsOpenedSince(fdsBefore)).toEqual([]);
    }, 40_000);
  });
});
