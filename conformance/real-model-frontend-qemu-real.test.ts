/**
 * The model front-end `qemu-7.2` against reality: QEMU 7.2 as chardev socket server with a
 * vhost-user netdev (the sans-IO `qemu-seq.ts` sequences on a real AF_UNIX socket, guest RAM
 * one memfd in QEMU's PC layout, real eventfds); real DPDK 22.11 testpmd connects as the
 * vhost back-end (`client=1`) and io-forwards port 0 to itself, so every frame the guest
 * transmits comes back on its RX ring.
 *
 * Checked, split and packed: the init (fact sheet §4.1), the guest's attach rounds and start
 * (§4.2) and DPDK's "virtio is now ready for processing"; the negotiated features and both
 * memory regions as DPDK logs them; N numbered frames out and the same N back with intact
 * payloads, matching testpmd's port counters. Then the back-end goes away twice — testpmd
 * `quit`, and SIGKILL — and is relaunched: QEMU keeps the acked features, GET_VRING_BASE fails
 * on the dead socket, and the next start resends the init without attach rounds and with the
 * kept bases. Split: the bases are used->idx (DPDK logs them and reports no mismatch) and
 * traffic resumes. Packed: QEMU 7.2 resends the base it started with (0x80008000: slot 0,
 * wrap 1) while the driver is elsewhere; what real DPDK then does is pinned below. At the
 * end the VM stops (SET_STATUS 0, GET_VRING_BASE ×2 on the live back-end) and nothing is left.
 *
 * Skips, with the reason in the suite name, when testpmd or the real transport is unavailable.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { eventsOf, liveTestpmds, runtimeDirFor, type PortStats, type Testpmd } from '../src/adapters/dpdk/index.ts';
import { QEMU_INIT as INIT, QEMU_ROUND as ROUND, QEMU_START as START, QEMU_STOP as STOP } from '../src/endpoint/frontend/testing.ts';
import { RealQemuFrontend, exchange, verifyPacket, type ExchangeResult } from '../src/endpoint/real/frontend/index.ts';
import { port0, realDpdkSuite, settleTx, withLoopbackRun } from '../src/endpoint/real/frontend/dpdk-testing.ts';
import { seqs } from '../src/endpoint/real/testing.ts';
import { PackedDriver, type PackedDriverPositions } from '../src/ring/packed/index.ts';
import { expectedResumeIndex, type ResumePoint } from '../models/session.ts';

const { dpdk, skip, title } = realDpdkSuite('qemu-7.2 model front-end', 'real-model-frontend-qemu');

/** Packed descriptor flags. */
const WRITE = 1 << 1;
const AVAIL = 1 << 7;
const USED = 1 << 15;
const N = 2_000;
const Q = 256;

describe.skipIf(skip !== undefined)(title, () => {
  it.each([
    { ring: 'split', packed: false },
    { ring: 'packed', packed: true },
  ])('$ring ring: init and start, io-forwarded frames verify end to end, back-end quit and SIGKILL with relaunch', async ({ ring, packed }) => {
    if (!dpdk.ok) return;
    const report: Record<string, unknown> = {};
    await withLoopbackRun(dpdk, `qemu-fe-${ring}`, (path) => new RealQemuFrontend({ path, packed, queueSize: Q }), { tail: 60, extra: () => `\n${JSON.stringify(report)}` }, async ({ fe, socket, prefixes, launchReady }) => {
      /** Starts forwarding, exchanges `n` frames from `first`, stops and returns what came back and testpmd's counters. */
      const traffic = async (p: Testpmd, first: number, n: number, timeoutMs: number) => {
        await p.setForwardMode('io');
        await p.clearPortStats();
        await p.start();
        fe.takeCalls();
        const r = await exchange(fe, first, n, { timeoutMs });
        // A kernel driver's rings ask for used-buffer notifications: frames back means the RX call fired.
        if (r.received.length > 0) expect(fe.takeCalls()[0]! > 0n, 'RX call eventfd written').toBe(true);
        await p.stop();
        return { r, st: await port0(p) };
      };
      /** Where the guest driver is: packed slot and wrap counters, or the split ring's in-flight count. */
      const positions = () => [0, 1].map((i) => {
        const d = fe.ring(i)!;
        return d instanceof PackedDriver ? d.positions() : { inFlight: d.inFlight };
      });
      /** Packed descriptor `slot` of vring `i`, from guest memory. */
      const desc = (i: number, slot: number) => {
        const b = new Uint8Array(16);
        fe.memory.read(fe.vringAreas(i).desc + 16 * slot, b);
        const dv = new DataView(b.buffer);
        return { addr: Number(dv.getBigUint64(0, true)), len: dv.getUint32(8, true), id: dv.getUint16(12, true), flags: dv.getUint16(14, true) };
      };
      /** The model's resume point for a lost back-end that had consumed and completed everything (`done` buffers). */
      const resumeOf = (isPacked: boolean, done: number, at: ReturnType<typeof positions>) => {
        if (!isPacked) return expectedResumeIndex('qemu-7.2', 'split', { end: 'backend-lost', size: Q, lastAvail: { idx: done & 0xffff }, used: { idx: done & 0xffff } });
        // The old DPDK stopped where the guest's TX cursor is (all used); QEMU holds its start base.
        const tx = at[1] as PackedDriverPositions;
        const pos = { idx: tx.nextUsed, wrap: tx.usedWrap };
        return expectedResumeIndex('qemu-7.2', 'packed', { end: 'backend-lost', size: Q, lastAvail: pos, used: pos, frontendBase: { idx: 0, wrap: true } });
      };
      /**
       * The stale packed base as real DPDK plays it out (N = 2000, Q = 256: both guest cursors at
       * slot 208, TX wrap 0, RX posted one lap ahead, wrap 1). DPDK starts at slot 0 wrap 1:
       * - TX: slot 0 holds a used descriptor of wrap 0, so DPDK waits there; the guest's next
       *   frames go to slots 208…255 (wrap 0, never looked at) and, after its wrap, 0…: DPDK takes
       *   only those, sent − (Q − 208) of them;
       * - RX: slots 0…207 hold buffers the guest posted for its next lap (wrap 1), so DPDK fills
       *   them and marks them used with wrap 1, byte-correct, while the guest's used cursor waits at
       *   slot 208 on its own available descriptor: it receives nothing.
       * A stall with loss, one of the outcomes the model allows for a stale base.
       */
      const expectStalePackedResume = (r: ResumePoint, at: ReturnType<typeof positions>, t: { r: ExchangeResult; st: PortStats }) => {
        expect(r).toMatchObject({ source: 'front-end-stale-copy', exact: false, avail: { idx: 0, wrap: true } });
        const [rx, tx] = at as PackedDriverPositions[];
        expect(tx).toEqual({ nextAvail: N % Q, availWrap: false, nextUsed: N % Q, usedWrap: false });
        expect(rx).toEqual({ nextAvail: N % Q, availWrap: true, nextUsed: N % Q, usedWrap: false });
        const taken = t.r.sent - (Q - tx!.nextAvail);
        expect(taken).toBeGreaterThan(0);
        expect(t.r.received).toEqual([]);
        expect(t.r.bad).toEqual([]);
        expect([t.st.rxPackets, t.st.txPackets]).toEqual([taken, taken]);
        const first = N + (Q - tx!.nextAvail);
        const landed: number[] = [];
        for (let slot = 0; slot < taken; slot++) {
          const d = desc(0, slot);
          expect(d.flags & (AVAIL | USED | WRITE)).toBe(AVAIL | USED | WRITE);
          const b = new Uint8Array(d.len);
          fe.memory.read(d.addr, b);
          const v = verifyPacket(b);
          if (!v.ok) throw new Error(`RX slot ${slot}: ${v.why}`);
          landed.push(v.seq);
        }
        expect(landed).toEqual(seqs(first, taken));
        // The guest's RX cursor: its own available descriptor of wrap 0, not used.
        expect(desc(0, rx!.nextUsed).flags & (AVAIL | USED)).toBe(USED);
        expect(fe.ring(0)!.inFlight).toBe(Q);
      };
      fe.listen();

      // ---- first back-end: init, the guest boots (attach rounds, DRIVER_OK), vhost starts.
      const p0 = await launchReady();
      const s1 = await fe.waitForRunning(1);
      expect(s1.sent).toEqual([...INIT, ...ROUND, ...ROUND, ...START]);
      expect(fe.packed).toBe(packed);
      const acked = fe.ackedFeatures!;
      const log0 = p0.vhostLog();
      expect(eventsOf(log0, 'features').map((e) => e.value)).toEqual([acked]);
      // Both PC regions of the one memfd are mapped by DPDK.
      expect(eventsOf(log0, 'memory-region').map((e) => e.size)).toEqual([0xa0000n, BigInt((4 << 20) - 0xc0000)]);
      const t0 = await traffic(p0, 0, N, 15_000);
      expect(t0.r.bad).toEqual([]);
      expect(t0.r.received).toEqual(seqs(0, N));
      expect(t0.st.rxPackets).toBe(N);
      expect(t0.st.txPackets).toBe(N);
      await settleTx(fe);
      expect(fe.inFlight(1)).toBe(0);
      report.first = { acked: `0x${acked.toString(16)}`, ms: t0.r.ms };

      // ---- testpmd quits: chr_closed_bh on the dead socket.
      const at1 = positions();
      await p0.quit();
      await fe.waitForLoss(1);
      expect(s1.end).toBe('peer-closed');
      expect(fe.savedAckedFeatures).toBe(acked);
      const texts = fe.log.map((l) => l.text);
      expect(texts).toContain('vhost VQ 0 ring restore failed: -22: Invalid argument (22)');
      expect(texts).toContain('vhost VQ 1 ring restore failed: -22: Invalid argument (22)');
      // Split: last_avail_idx restored from used->idx; packed: the base it started with.
      expect([fe.vringBase(0), fe.vringBase(1)]).toEqual(packed ? [0x80008000, 0x80008000] : [N, N]);

      // ---- relaunch: the whole init again, no attach rounds, link up restarts vhost with the kept bases.
      const p1 = await launchReady();
      const s2 = await fe.waitForRunning(2);
      expect(s2.sent).toEqual([...INIT, ...START]);
      expect(fe.ackedFeatures).toBe(acked);
      const log1 = p1.vhostLog();
      expect(eventsOf(log1, 'features').map((e) => e.value)).toEqual([acked]);
      // Where the model says the new DPDK resumes, and where DPDK says it does.
      const resume1 = resumeOf(packed, N, at1);
      expect(eventsOf(log1, 'set-vring-base').map((e) => [e.lastAvailIdx, e.lastUsedIdx])).toEqual([0, 1].map(() => [resume1.avail.idx, resume1.avail.idx]));
      expect(eventsOf(log1, 'used-idx-mismatch')).toEqual([]);
      const t1 = await traffic(p1, N, N, packed ? 3_000 : 15_000);
      report.afterQuit = { sent: t1.r.sent, back: t1.r.received.length, rx: t1.st.rxPackets, tx: t1.st.txPackets, resume: resume1.avail, at: at1, now: positions() };
      if (!packed) {
        expect(resume1.exact).toBe(true);
        expect(t1.r.bad).toEqual([]);
        expect(t1.r.received).toEqual(seqs(N, N));
        expect([t1.st.rxPackets, t1.st.txPackets]).toEqual([N, N]);
      } else {
        expectStalePackedResume(resume1, at1, t1);
      }

      // ---- SIGKILL: no clean-up in testpmd; QEMU sees the same lost back-end.
      if (!packed) await settleTx(fe);
      const at2 = positions();
      await p1.kill();
      await fe.waitForLoss(2);
      expect(fe.savedAckedFeatures).toBe(acked);
      expect([fe.vringBase(0), fe.vringBase(1)]).toEqual(packed ? [0x80008000, 0x80008000] : [2 * N, 2 * N]);
      const p2 = await launchReady();
      const s3 = await fe.waitForRunning(3);
      expect(s3.sent).toEqual([...INIT, ...START]);
      const log2 = p2.vhostLog();
      expect(eventsOf(log2, 'features').map((e) => e.value)).toEqual([acked]);
      const resume2 = resumeOf(packed, 2 * N, at2);
      expect(eventsOf(log2, 'set-vring-base').map((e) => [e.lastAvailIdx, e.lastUsedIdx])).toEqual([0, 1].map(() => [resume2.avail.idx, resume2.avail.idx]));
      expect(eventsOf(log2, 'used-idx-mismatch')).toEqual([]);
      const t2 = await traffic(p2, 2 * N, N, packed ? 3_000 : 15_000);
      report.afterKill = { sent: t2.r.sent, back: t2.r.received.length, rx: t2.st.rxPackets, tx: t2.st.txPackets, resume: resume2.avail, now: positions() };
      if (!packed) {
        expect(t2.r.bad).toEqual([]);
        expect(t2.r.received).toEqual(seqs(2 * N, N));
        expect([t2.st.rxPackets, t2.st.txPackets]).toEqual([N, N]);
      } else {
        // DPDK is back at slot 0 wrap 1, where it left its own used descriptor last time: nothing
        // is available to it there, so it takes nothing, while the guest fills TX further on.
        expect(resume2.avail).toEqual({ idx: 0, wrap: true });
        expect(desc(1, 0).flags & (AVAIL | USED)).toBe(AVAIL | USED);
        expect(t2.r.received).toEqual([]);
        expect([t2.st.rxPackets, t2.st.txPackets]).toEqual([0, 0]);
        expect(t2.r.sent).toBeGreaterThan(0);
      }
      console.info(`real-model-frontend-qemu ${ring}: ${JSON.stringify(report)}`);

      // ---- the VM stops: vhost stops on the live back-end, then QEMU exits.
      await fe.quit();
      expect(s3.sent.slice(-STOP.length)).toEqual(STOP);
      expect(fe.leaks()).toEqual([]);
      expect(existsSync(socket)).toBe(false);
      await p2.quit();
      expect(liveTestpmds()).toEqual([]);
      for (const fp of [prefixes[0]!, prefixes[2]!]) expect(existsSync(runtimeDirFor(fp))).toBe(false);
    });
  }, 120_000);
});
