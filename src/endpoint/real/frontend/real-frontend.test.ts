import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectUnix } from '../../../transport/real/index.ts';
import { skipReason, waitFor } from '../../../transport/real/test-support.ts';
import { eventsOfKind } from '../../backend/index.ts';
import { VIRTIO_USER_PROBE as PROBE } from '../../frontend/testing.ts';
import { RealModelBackend } from '../real-backend.ts';
import { RealFrontendFixture, seqs } from '../testing.ts';
import { RealModelFrontend } from './real-frontend.ts';
import { exchange, numberedPacket, verifyPacket } from './traffic.ts';


describe('numbered packets', () => {
  it('verify when intact and fail when a byte changes', () => {
    const p = numberedPacket(1234, 100);
    expect(verifyPacket(p)).toEqual({ ok: true, seq: 1234 });
    const q = p.slice();
    q[12 + 60]! ^= 1;
    expect(verifyPacket(q).ok).toBe(false);
  });
});

/** Sends `n` numbered packets and waits until all came back intact; returns their numbers. */
async function roundTrip(fe: RealModelFrontend, from: number, n: number): Promise<number[]> {
  const r = await exchange(fe, from, n);
  expect(r.bad).toEqual([]);
  expect(r.sent).toBe(n);
  return r.received;
}

describe.skipIf(skipReason !== undefined)(`model front-end on a real socket${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  const fx = new RealFrontendFixture('vhostsim-real-frontend-');
  beforeEach(() => fx.setUp());
  afterEach(() => fx.tearDown());

  it('probes the model back-end, moves numbered frames both ways, reconnects keeping split rings', async () => {
    const path = fx.path('vu.sock');
    const fe = new RealModelFrontend({ path });
    const launch = fx.echoBackends(fe, path);
    fe.listen();
    const b0 = launch();
    const s1 = await fe.waitForRunning(1);
    expect(s1.sent).toEqual(PROBE);
    const got = await roundTrip(fe, 0, 500);
    expect(got).toEqual(seqs(0, 500));
    expect(b0.stats!.txMalformed).toBe(0);

    b0.quit();
    await waitFor(() => fe.session === undefined, 5_000);
    const b1 = launch();
    const s2 = await fe.waitForRunning(2);
    expect(s2.sent.slice(0, 4)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(s2.sent).not.toContain('SET_OWNER');
    const bs = await b1.waitForReady();
    // The new device resumes where the split rings are (used->idx of the kept rings).
    expect(eventsOfKind(bs.events, 'used-idx-mismatch').length).toBeGreaterThan(0);
    const again = await roundTrip(fe, 500, 300);
    expect(again).toEqual(seqs(500, 300));
    await fe.quit();
    expect(fe.leaks()).toEqual([]);
  });

  it('packed rings: reset on reconnect, the posted RX buffers dropped and counted, traffic resumes', async () => {
    const path = fx.path('vu.sock');
    const fe = new RealModelFrontend({ path, packedVq: true });
    const launch = fx.echoBackends(fe, path);
    fe.listen();
    const b0 = launch();
    await fe.waitForRunning(1);
    expect(fe.packed).toBe(true);
    expect(await roundTrip(fe, 0, 400)).toEqual(seqs(0, 400));
    const posted = fe.inFlight(0);
    expect(posted).toBeGreaterThan(0);
    b0.quit();
    await waitFor(() => fe.session === undefined, 5_000);
    launch();
    const s2 = await fe.waitForRunning(2);
    expect(s2.sent).not.toContain('SET_OWNER');
    expect(fe.droppedOnReset).toBe(posted);
    expect(await roundTrip(fe, 400, 400)).toEqual(seqs(400, 400));
  });

  it('drops a back-end whose reply cannot be framed, then probes the next one afresh', async () => {
    const path = fx.path('vu.sock');
    const fe = new RealModelFrontend({ path });
    const backends: RealModelBackend[] = [];
    const raw = connectUnix(path, { registry: fx.reg });
    expect(raw).toBeInstanceOf(Error);
    fe.listen();
    const sock = connectUnix(path, { registry: fx.reg });
    if (sock instanceof Error) throw sock;
    fx.cleanup.push(() => {
      sock.close();
      for (const b of backends) b.quit();
      fe.shutdown();
      expect(fe.leaks()).toEqual([]);
    });
    let got = 0;
    sock.onData((chunk, fds) => {
      for (const f of fds) f.close();
      got += chunk.length;
    });
    // SET_OWNER (12 bytes) then GET_FEATURES (12 bytes), which waits for its reply.
    await waitFor(() => got >= 24, 3_000);
    // A reply header with a payload size beyond what virtio-user's message buffer holds.
    const bad = new Uint8Array(12);
    new DataView(bad.buffer).setUint32(0, 1, true);
    new DataView(bad.buffer).setUint32(4, 0x5, true);
    new DataView(bad.buffer).setUint32(8, 4096, true);
    expect(sock.send(bad, [])).toBeUndefined();
    await waitFor(() => fe.sessions[0]?.outcome === 'failed' && fe.session === undefined, 3_000);
    expect(fe.sessions[0]!.sent).toEqual(['SET_OWNER', 'GET_FEATURES']);
    const b = new RealModelBackend({ path, registry: fx.reg, dataPath: { rx: 'echo' } });
    backends.push(b);
    expect(b.start()).toBeUndefined();
    const s2 = await fe.waitForRunning(2);
    expect(s2.sent).toEqual(PROBE);
  });
});
