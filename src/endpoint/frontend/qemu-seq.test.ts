/**
 * The QEMU 7.2 event sequences every glue runs (in-process `QemuFrontend`, the real-socket
 * `RealQemuFrontend`), driven synchronously against a DPDK-like script with no transport.
 */
import { describe, expect, it } from 'vitest';
import { FrontendRequest as FR, type Payload } from '../../protocol/index.ts';
import type { AnyFd, EventFd, MemFd } from '../../transport/index.ts';
import { VirtioFeature as F, hasFeature } from '../../virtio/index.ts';
import { GUEST_DRIVERS } from './profiles.ts';
import { attachRounds, chrClosed, guestDriverOk, guestReset, netdevInit, newQemuState, setStatus, vmStop, type QemuEnv, type QemuState } from './qemu-seq.ts';
import { QEMU_INIT as INIT, QEMU_START as START, ScriptIo, runSync as run } from './testing.ts';

function env(usedIdx = 0): QemuEnv & { logs: string[]; usedIdx: (i: number) => number; used: number } {
  const fd = { close() {} } as unknown as EventFd;
  const e = {
    logs: [] as string[],
    used: usedIdx,
    ringKind: () => 'split' as const,
    initNotifiers: () => ({ masked: fd, err: fd }),
    kickFd: () => fd,
    callFd: () => fd,
    memoryTable: () => ({ regions: [{ guestPhysAddr: 0n, memorySize: 0x1000n, userspaceAddr: 0x1000n, mmapOffset: 0n }], fds: [{} as MemFd] }),
    vringAddr: () => ({ desc: 0x1000n, avail: 0x2000n, used: 0x3000n, usedGpa: 0x3000n }),
    usedIdx: () => e.used,
    backendChannel: () => [fd, fd] as [AnyFd, AnyFd],
    dropBackendChannel: () => {},
    log: (_: string, text: string) => {
      e.logs.push(text);
    },
    milestone: () => {},
  };
  return e;
}

/** A started session: init, the guest's boot, vhost running. */
function booted(packed = false): { st: QemuState; io: ScriptIo; e: ReturnType<typeof env> } {
  const st = newQemuState({ queuePairs: 1, queueSize: 256, packed });
  const io = new ScriptIo();
  const e = env();
  if (packed) e.ringKind = () => 'packed' as 'split';
  expect(run(netdevInit(st, e), io)).toBeUndefined();
  run(attachRounds(st, 2), io);
  let laidOut: bigint | undefined;
  expect(run(guestDriverOk(st, e, GUEST_DRIVERS['virtio-net'].wants, (a) => (laidOut = a)), io)).toBe('started');
  expect(laidOut).toBe(st.guestAcked);
  return { st, io, e };
}

describe('qemu-7.2 event sequences', () => {
  it('netdev init brings the link up only when it succeeds', () => {
    const st = newQemuState({ queuePairs: 1, queueSize: 256, packed: false });
    const io = new ScriptIo();
    expect(run(netdevInit(st, env()), io)).toBeUndefined();
    expect(io.take()).toEqual(INIT);
    expect(st.linkUp).toBe(true);
    const st2 = newQemuState({ queuePairs: 1, queueSize: 256, packed: false });
    st2.savedAcked = 1n << 62n; // acked earlier, not offered now: refused
    const e = run(netdevInit(st2, env()), new ScriptIo());
    expect(e?.code).toBe('features-lacking');
    expect(st2.linkUp).toBe(false);
  });

  it('boot: attach rounds, then DRIVER_OK acks what the driver wants of what QEMU offers and starts vhost', () => {
    const { st, io } = booted();
    expect(io.take().slice(INIT.length)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_VRING_ENABLE', ...START]);
    expect(st.driverOk && st.vhostStarted).toBe(true);
    // The Linux driver against DPDK's offer through QEMU 7.2 (README: 0x17020e783 with bit 30).
    expect(st.devs![0]!.ackedFeatures).toBe(0x17020e783n);
    expect(hasFeature(st.guestAcked, F.RING_PACKED)).toBe(false);
  });

  it('chr_closed_bh on a dead socket keeps the acked features and restores a split ring from used->idx', () => {
    const { st, io, e } = booted();
    io.take();
    const acked = st.devs![0]!.ackedFeatures;
    io.dead = true;
    e.used = 1234;
    expect(run(chrClosed(st, e), io)).toBe('stopped');
    expect(st.savedAcked).toBe(acked);
    expect(st.linkUp).toBe(false);
    expect(st.vqs.map((q) => q.lastAvailIdx)).toEqual([1234, 1234]);
    expect(e.logs).toContain('vhost VQ 1 ring restore failed: -22: Invalid argument (22)');
    // The next back-end: init again, link up restarts vhost with those bases.
    const io2 = new ScriptIo();
    expect(run(netdevInit(st, e), io2)).toBeUndefined();
    expect(run(setStatus(st, e), io2)).toBe('started');
    const bases = io2.sent.filter((m) => m.request === FR.SET_VRING_BASE).map((m) => (m.payload as Payload & { num: number }).num);
    expect(io2.take()).toEqual([...INIT, ...START]);
    expect(bases).toEqual([1234, 1234]);
  });

  it('chr_closed_bh with packed rings keeps the base it held (nothing to restore from)', () => {
    const { st, io, e } = booted(true);
    io.dead = true;
    expect(run(chrClosed(st, e), io)).toBe('stopped');
    expect(st.vqs.map((q) => [q.lastAvailIdx, q.lastAvailWrap])).toEqual([[0, true], [0, true]]);
  });

  it('VM stop on a live back-end: SET_STATUS 0, then GET_VRING_BASE stores the replies', () => {
    const { st, io, e } = booted();
    io.take();
    io.base = 77;
    expect(run(vmStop(st, e), io)).toBe('stopped');
    expect(io.take()).toEqual(['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(st.vqs.map((q) => q.lastAvailIdx)).toEqual([77, 77]);
    expect(st.vmRunning).toBe(false);
  });

  it('guest reset stops vhost, then zeroes the ring indices', () => {
    const { st, io, e } = booted();
    io.take();
    io.base = 5;
    expect(run(guestReset(st, e), io)).toBe('stopped');
    expect(io.take()).toEqual(['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(st.vqs.map((q) => q.lastAvailIdx)).toEqual([0, 0]);
    expect(st.guestAcked).toBe(0n);
  });
});
