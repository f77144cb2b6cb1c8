import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { skipReason, waitFor } from '../../../transport/real/test-support.ts';
import { QEMU_INIT as INIT, QEMU_ROUND as ROUND, QEMU_START as START } from '../../frontend/testing.ts';
import { RealFrontendFixture, seqs } from '../testing.ts';
import { RealQemuFrontend } from './real-qemu.ts';
import { exchange } from './traffic.ts';

describe.skipIf(skipReason !== undefined)(`qemu-7.2 model front-end on a real socket${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  const fx = new RealFrontendFixture('vhostsim-real-qemu-');
  beforeEach(() => fx.setUp());
  afterEach(() => fx.tearDown());

  function setup(packed: boolean) {
    const path = fx.path('qemu.sock');
    const fe = new RealQemuFrontend({ path, packed });
    return { fe, launch: fx.echoBackends(fe, path) };
  }

  it('split: init, attach rounds and start; frames both ways; a lost back-end restores the bases from used->idx', async () => {
    const { fe, launch } = setup(false);
    fe.listen();
    const b0 = launch();
    const s1 = await fe.waitForRunning(1);
    expect(s1.sent).toEqual([...INIT, ...ROUND, ...ROUND, ...START]);
    expect(fe.packed).toBe(false);
    const r0 = await exchange(fe, 0, 300);
    expect(r0.bad).toEqual([]);
    expect(r0.received).toEqual(seqs(0, 300));
    const acked = fe.ackedFeatures;

    b0.quit();
    await fe.waitForLoss(1);
    expect(fe.savedAckedFeatures).toBe(acked);
    expect(fe.log.map((l) => l.text)).toContain('vhost VQ 0 ring restore failed: -22: Invalid argument (22)');
    expect([fe.vringBase(0), fe.vringBase(1)]).toEqual([300, 300]);

    launch();
    const s2 = await fe.waitForRunning(2);
    expect(s2.sent).toEqual([...INIT, ...START]);
    expect(fe.ackedFeatures).toBe(acked);
    const r1 = await exchange(fe, 300, 300);
    expect(r1.bad).toEqual([]);
    expect(r1.received).toEqual(seqs(300, 300));

    await fe.quit();
    expect(s2.sent.slice(-3)).toEqual(['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(fe.leaks()).toEqual([]);
  });

  it('packed: after a lost back-end the base stays the one it started with (0x80008000)', async () => {
    const { fe, launch } = setup(true);
    fe.listen();
    const b0 = launch();
    await fe.waitForRunning(1);
    expect(fe.packed).toBe(true);
    const r0 = await exchange(fe, 0, 100);
    expect(r0.received).toEqual(seqs(0, 100));
    b0.quit();
    await fe.waitForLoss(1);
    expect([fe.vringBase(0), fe.vringBase(1)]).toEqual([0x80008000, 0x80008000]);
    launch();
    const s2 = await waitFor(() => fe.sessions[1]?.outcome !== undefined, 5_000).then(() => fe.sessions[1]!);
    expect(s2.sent.slice(0, INIT.length)).toEqual(INIT);
  });

  it('waits for the first back-end and serves one at a time', async () => {
    const { fe, launch } = setup(false);
    fe.listen();
    expect(fe.sessions).toEqual([]);
    launch();
    await fe.waitForRunning(1);
    await waitFor(() => fe.running, 1_000);
    expect(fe.session?.n).toBe(1);
  });
});
