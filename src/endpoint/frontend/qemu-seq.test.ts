/**
 * The QEMU 7.2 event sequences every glue runs (in-process `QemuFrontend`, the real-socket
 * `RealQemuFrontend`), driven synchronously against a DPDK-like script with no transport.
 */
import { describe, expect, it } from 'vitest';
import { DPDK_22_11_PROTOCOL_FEATURES, FrontendRequest as FR, encode, makeReply, requestName, type Message, type Payload } from '../../protocol/index.ts';
import type { AnyFd, EventFd, MemFd } from '../../transport/index.ts';
import { VirtioFeature as F, hasFeature } from '../../virtio/index.ts';
import { FrontendError } from './errors.ts';
import { checkReply, runSequence, type OpResult, type ReplySpec, type Sequence, type SequenceIo } from './handshake.ts';
import { GUEST_DRIVERS } from './profiles.ts';
import { attachRounds, chrClosed, guestDriverOk, guestReset, netdevInit, newQemuState, setStatus, vmStop, type QemuEnv, type QemuState } from './qemu-seq.ts';
import { DPDK_TESTPMD_FEATURES } from './testing.ts';

const INIT = [
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'SET_SLAVE_REQ_FD', 'SET_OWNER', 'GET_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_ERR', 'SET_VRING_CALL', 'SET_VRING_ERR',
];
const START = [
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_FEATURES', 'GET_STATUS', 'SET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL',
  'GET_STATUS', 'SET_STATUS',
];

/** DPDK-like answers; `dead` makes every send fail as on a closed socket; GET_VRING_BASE answers `base`. */
class ScriptIo implements SequenceIo {
  sent: Message<AnyFd>[] = [];
  dead = false;
  status = 0;
  base = 0;
  private pending: Message<AnyFd> | undefined;
  send(msg: Message<AnyFd>): FrontendError | undefined {
    if (this.dead) return new FrontendError('transport', 'EPIPE', msg.request, 'Failed to set msg fds.');
    this.sent.push(msg);
    this.pending = msg;
    const p = msg.payload as Payload | undefined;
    if (msg.request === FR.SET_STATUS && p?.kind === 'status') this.status = p.status;
    return undefined;
  }
  read(spec: ReplySpec): OpResult {
    const m = this.pending!;
    const enc = encode(makeReply(m, this.reply(m)), { validate: false });
    const hdr = new DataView(enc.bytes.buffer);
    const err = checkReply({ header: { request: hdr.getUint32(0, true), flags: hdr.getUint32(4, true), size: hdr.getUint32(8, true) } }, spec);
    if (err) return { ok: false, error: err };
    return { ok: true, reply: { request: m.request, flags: 5, payload: enc.bytes.subarray(12) } };
  }
  names(): string[] {
    const n = this.sent.map((m) => requestName(m.request).replace(/^VHOST_USER_/, ''));
    this.sent = [];
    return n;
  }
  private reply(m: Message<AnyFd>): Payload {
    const p = m.payload as Payload;
    switch (m.request) {
      case FR.GET_FEATURES:
        return { kind: 'features', features: DPDK_TESTPMD_FEATURES };
      case FR.GET_PROTOCOL_FEATURES:
        return { kind: 'protocolFeatures', features: DPDK_22_11_PROTOCOL_FEATURES };
      case FR.GET_STATUS:
        return { kind: 'status', status: this.status };
      case FR.GET_QUEUE_NUM:
        return { kind: 'u64', value: 1n };
      case FR.GET_VRING_BASE:
        return { kind: 'vringState', index: p.kind === 'vringState' ? p.index : 0, num: this.base };
      default:
        return { kind: 'ack', value: 0n };
    }
  }
}

function run<T>(seq: Sequence<T>, io: SequenceIo): T {
  let out: { v: T } | undefined;
  runSequence(seq, io, (v) => {
    out = { v };
  });
  if (out === undefined) throw new Error('sequence did not finish synchronously');
  return out.v;
}

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
    expect(io.names()).toEqual(INIT);
    expect(st.linkUp).toBe(true);
    const st2 = newQemuState({ queuePairs: 1, queueSize: 256, packed: false });
    st2.savedAcked = 1n << 62n; // acked earlier, not offered now: refused
    const e = run(netdevInit(st2, env()), new ScriptIo());
    expect(e?.code).toBe('features-lacking');
    expect(st2.linkUp).toBe(false);
  });

  it('boot: attach rounds, then DRIVER_OK acks what the driver wants of what QEMU offers and starts vhost', () => {
    const { st, io } = booted();
    expect(io.names().slice(INIT.length)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_VRING_ENABLE', ...START]);
    expect(st.driverOk && st.vhostStarted).toBe(true);
    // The Linux driver against DPDK's offer through QEMU 7.2 (README: 0x17020e783 with bit 30).
    expect(st.devs![0]!.ackedFeatures).toBe(0x17020e783n);
    expect(hasFeature(st.guestAcked, F.RING_PACKED)).toBe(false);
  });

  it('chr_closed_bh on a dead socket keeps the acked features and restores a split ring from used->idx', () => {
    const { st, io, e } = booted();
    io.names();
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
    expect(io2.names()).toEqual([...INIT, ...START]);
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
    io.names();
    io.base = 77;
    expect(run(vmStop(st, e), io)).toBe('stopped');
    expect(io.names()).toEqual(['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(st.vqs.map((q) => q.lastAvailIdx)).toEqual([77, 77]);
    expect(st.vmRunning).toBe(false);
  });

  it('guest reset stops vhost, then zeroes the ring indices', () => {
    const { st, io, e } = booted();
    io.names();
    io.base = 5;
    expect(run(guestReset(st, e), io)).toBe('stopped');
    expect(io.names()).toEqual(['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(st.vqs.map((q) => q.lastAvailIdx)).toEqual([0, 0]);
    expect(st.guestAcked).toBe(0n);
  });
});
