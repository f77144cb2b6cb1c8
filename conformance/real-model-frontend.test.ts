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
 * resumes; at the end nothing left: no process, socket, mapping or fd. The other side: the
 * model front-end quits (its reset, socket file removed) and a new one listens on the path, as
 * a relaunched virtio-user would; the vhost client reconnects on its 1 s retry, the new
 * session is a fresh probe and frames verify again.
 *
 * Skips, with the reason in the suite name, when testpmd or the real transport (koffi) is
 * unavailable.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { eventsOf, liveTestpmds, runtimeDirFor } from '../src/adapters/dpdk/index.ts';
import { messageNames } from '../src/adapters/dpdk/vhost-log.ts';
import { VIRTIO_USER_PROBE as PROBE } from '../src/endpoint/frontend/testing.ts';
import { RealModelFrontend, exchange } from '../src/endpoint/real/frontend/index.ts';
import { port0, realDpdkSuite, settleTx, withLoopbackRun } from '../src/endpoint/real/frontend/dpdk-testing.ts';
import { seqs } from '../src/endpoint/real/testing.ts';

const { dpdk, skip, title } = realDpdkSuite('model front-end', 'real-model-frontend');

const RECONNECT = [
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE',
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const N = 2_000;
/** What virtio-user's port close sends before it goes (ENABLE 0, GET_VRING_BASE per ring). */
const FRONTEND_STOP = ['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE'];

describe.skipIf(skip !== undefined)(title, () => {
  it.each([
    { ring: 'split', packed: false },
    { ring: 'packed', packed: true },
  ])('$ring ring: probe, io-forwarded frames verify end to end, reconnect after a back-end quit', async ({ ring, packed }) => {
    if (!dpdk.ok) return;
    await withLoopbackRun(dpdk, `model-fe-${ring}`, (path) => new RealModelFrontend({ path, packedVq: packed }), { tail: 40 }, async ({ fe, socket, prefixes, launchReady }) => {
      fe.listen();

      // ---- first back-end: the probe, then io forwarding.
      const p0 = await launchReady();
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
      await settleTx(fe);
      const rxPostedAtQuit = fe.inFlight(0);
      expect(fe.inFlight(1)).toBe(0);
      await p0.quit();
      const downAt = Date.now();
      while (fe.session !== undefined && Date.now() - downAt < 5_000) await new Promise((r) => setTimeout(r, 5));
      expect(fe.session).toBeUndefined();
      expect(s1.end).toBe('peer-closed');

      // ---- relaunch: the reconnect sequence, DPDK re-bases to used->idx, traffic resumes.
      const p1 = await launchReady();
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
    });
  }, 60_000);
  it.each([
    { ring: 'split', packed: false },
    { ring: 'packed', packed: true },
  ])('$ring ring: the front-end quits and a new one starts on the socket; the vhost client reconnects, fresh probe, frames verify', async ({ ring, packed }) => {
    if (!dpdk.ok) return;
    let fe2: RealModelFrontend | undefined;
    const extra = (): string => (fe2 ? `\n--- model front-end #2\n${fe2.log.map((l) => `${l.level} ${l.text}`).join('\n')}\n${JSON.stringify(fe2.sessions)}` : '');
    await withLoopbackRun(dpdk, `model-fe-relaunch-${ring}`, (path) => new RealModelFrontend({ path, packedVq: packed }), { tail: 60, extra }, async ({ fe, socket, prefixes, launchReady }) => {
      try {
        fe.listen();
        const p0 = await launchReady();
        const s1 = await fe.waitForRunning(1);
        expect(s1.sent).toEqual(PROBE);
        await p0.setForwardMode('io');
        await p0.clearPortStats();
        await p0.start();
        const r0 = await exchange(fe, 0, N);
        expect(r0.bad).toEqual([]);
        expect(r0.received).toEqual(seqs(0, N));
        await p0.stop();
        const st0 = await port0(p0);
        expect([st0.rxPackets, st0.txPackets]).toEqual([N, N]);

        // ---- the front-end quits: its reset, the socket file gone, nothing of it left.
        await settleTx(fe);
        const since = p0.mark();
        await fe.quit();
        const downAt = Date.now();
        expect(s1.sent.slice(-FRONTEND_STOP.length)).toEqual(FRONTEND_STOP);
        expect(s1.end).toBe('closed-locally');
        expect(fe.leaks()).toEqual([]);
        expect(existsSync(socket)).toBe(false);
        await p0.waitFor('vhost peer closed', { since, timeoutMs: 5_000 });
        // The vhost client finds no socket and keeps retrying.
        await p0.waitFor(/failed to connect|reconnecting/, { since, timeoutMs: 5_000 });

        // ---- a new front-end on the same path (a relaunched virtio-user): the client reconnects by itself.
        fe2 = new RealModelFrontend({ path: socket, packedVq: packed });
        fe2.listen();
        const s2 = await fe2.waitForRunning(1, 10_000);
        const reconnectMs = Date.now() - downAt;
        await p0.waitFor('virtio is now ready for processing', { since, timeoutMs: 5_000 });
        // Fresh start: the probe from SET_OWNER, not the reconnect sequence.
        expect(s2.sent).toEqual(PROBE);
        expect(fe2.packed).toBe(packed);
        const log = p0.vhostLog();
        // A connect can race the closing listener (accepted by the kernel, then reset): a session without messages.
        const raced = log.sessions.filter((s) => s.messages.length === 0);
        for (const s of raced) expect(s.end).toBe('superseded');
        const served = log.sessions.filter((s) => s.messages.length > 0);
        expect(served).toHaveLength(2);
        const [v1, v2] = served;
        expect(v1!.end).toBe('peer-closed');
        expect(messageNames(v1!).slice(-FRONTEND_STOP.length)).toEqual(FRONTEND_STOP);
        expect(v2!.startedBy).toBe('connected');
        expect(v2!.ready).toBe(true);
        expect(messageNames(v2!).slice(0, PROBE.length)).toEqual(PROBE);
        // New memory, rings from 0: nothing to resync.
        expect(eventsOf(v2!, 'used-idx-mismatch')).toEqual([]);
        expect(log.events.map((e) => e.kind)).toContain('reconnecting');
        expect(fe2.droppedOnReset).toBe(0);

        // ---- traffic again, byte-identical.
        await p0.clearPortStats();
        await p0.start();
        fe2.takeCalls();
        const r1 = await exchange(fe2, N, N);
        expect(fe2.takeCalls()).toEqual([0n, 0n]);
        expect(r1.bad).toEqual([]);
        expect(r1.sent).toBe(N);
        expect(r1.received).toEqual(seqs(N, N));
        await p0.stop();
        const st1 = await port0(p0);
        expect([st1.rxPackets, st1.txPackets, st1.rxErrors]).toEqual([N, N, 0]);

        // ---- both quit; nothing left.
        await settleTx(fe2);
        await fe2.quit();
        expect(s2.sent.slice(-FRONTEND_STOP.length)).toEqual(FRONTEND_STOP);
        expect(fe2.leaks()).toEqual([]);
        expect(existsSync(socket)).toBe(false);
        await p0.quit();
        expect(liveTestpmds()).toEqual([]);
        for (const fp of prefixes) expect(existsSync(runtimeDirFor(fp))).toBe(false);

        console.info(
          `real-model-frontend relaunch ${ring}: ${JSON.stringify({
            probe1: s1.sent.length,
            probe2: s2.sent.length,
            vhostSessions: log.sessions.map((s) => ({ startedBy: s.startedBy, end: s.end, messages: s.messages.length })),
            connectFailed: log.events.filter((e) => e.kind === 'connect-failed').length,
            reconnectMs,
            first: { back: r0.received.length, testpmd: { rx: st0.rxPackets, tx: st0.txPackets } },
            second: { back: r1.received.length, ms: r1.ms, testpmd: { rx: st1.rxPackets, tx: st1.txPackets } },
          })}`,
        );
      } finally {
        fe2?.shutdown();
      }
    });
  }, 30_000);
});
