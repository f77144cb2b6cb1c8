import { describe, expect, it } from 'vitest';
import { FrontendRequest as FR, makeReply, type Payload } from '../../protocol/index.ts';
import { Scheduler } from '../../sim/scheduler.ts';
import { SocketNamespace, type EventFd, type MemFd } from '../../transport/index.ts';
import { MessageChannel } from '../message-channel.ts';
import { Conversation, checkReply, runSequence, send, type OpResult, type Sequence, type SequenceIo } from './handshake.ts';
import { VIRTIO_USER_DEFAULTS } from './profiles.ts';
import { newVirtioUserState, probe, serverReconnect, type VirtioUserEnv } from './virtio-user-seq.ts';
import { ackGuestFeatures, newQemuState, setStatus, vhostUserStart, type QemuEnv } from './qemu-seq.ts';
import { ScriptIo, VIRTIO_USER_PROBE, runSync } from './testing.ts';


function fakeFd(): EventFd {
  return {} as EventFd;
}

function virtioUserEnv(): VirtioUserEnv & { allocated: number; resets: number } {
  const env = {
    cfg: VIRTIO_USER_DEFAULTS,
    allocated: 0,
    resets: 0,
    connected: () => true,
    callFd: fakeFd,
    kickFd: fakeFd,
    memoryTable: () => ({ regions: [{ guestPhysAddr: 0x1000n, memorySize: 0x1000n, userspaceAddr: 0x1000n, mmapOffset: 0n }], fds: [{} as MemFd] }),
    vringAddr: (i: number) => ({ desc: BigInt(0x1000 * i), avail: 1n, used: 2n }),
    allocQueues: () => {
      env.allocated++;
    },
    resetPackedQueues: () => {
      env.resets++;
    },
    log: () => {},
    milestone: () => {},
  };
  return env;
}

const CAPTURED_PROBE = VIRTIO_USER_PROBE;
/** GET_QUEUE_NUM answers 128. */
const scriptIo = (answer?: ConstructorParameters<typeof ScriptIo>[0]) => new ScriptIo(answer, 128n);

describe('sans-IO sequences', () => {
  it('virtio-user probe against a DPDK-like script produces the captured order with no transport', () => {
    const io = scriptIo();
    const st = newVirtioUserState(VIRTIO_USER_DEFAULTS);
    const env = virtioUserEnv();
    expect(runSync(probe(st, env), io)).toEqual({ probed: true, started: true });
    expect(io.names()).toEqual(CAPTURED_PROBE);
    expect(env.allocated).toBe(1);
    expect(st.lastSetFeatures).toBe(0x950008000n);
    expect(st.status).toBe(0x0f);
  });

  it('virtio-user reconnect: stop on the new back-end first, no SET_OWNER, one GET_STATUS', () => {
    const io = scriptIo();
    const st = newVirtioUserState(VIRTIO_USER_DEFAULTS);
    runSync(probe(st, virtioUserEnv()), io);
    const io2 = scriptIo();
    expect(runSync(serverReconnect(st, virtioUserEnv()), io2)).toBe(true);
    expect(io2.names()).toEqual([
      'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
      'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', ...CAPTURED_PROBE.slice(10),
    ]);
  });

  it('virtio-user: a FEATURES_OK the device does not keep fails the probe ("Failed to set FEATURES_OK status!")', () => {
    const io = scriptIo((m) => (m.request === FR.GET_STATUS ? { kind: 'status', status: 0x03 } : undefined));
    const r = runSync(probe(newVirtioUserState(VIRTIO_USER_DEFAULTS), virtioUserEnv()), io);
    expect(r.probed).toBe(false);
    if (!r.probed) expect(r.error.code).toBe('features-ok');
  });

  it('qemu init: GET_FEATURES, protocol features, GET_QUEUE_NUM, SET_SLAVE_REQ_FD, SET_OWNER, GET_FEATURES, CALL+ERR per vring', () => {
    const io = scriptIo();
    const st = newQemuState({ queuePairs: 1, queueSize: 256, packed: false });
    const env = {
      ringKind: () => 'split',
      initNotifiers: () => ({ masked: fakeFd(), err: fakeFd() }),
      backendChannel: () => [{ close() {} }, { close() {} }],
      dropBackendChannel: () => {},
      log: () => {},
      milestone: () => {},
    } as unknown as QemuEnv;
    expect(runSync(vhostUserStart(st, env), io)).toBeUndefined();
    expect(io.names()).toEqual([
      'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'SET_SLAVE_REQ_FD', 'SET_OWNER', 'GET_FEATURES',
      'SET_VRING_CALL', 'SET_VRING_ERR', 'SET_VRING_CALL', 'SET_VRING_ERR',
    ]);
    expect(io.sent[4].flags).toBe(0x9);
    expect(st.devs![0].ackedFeatures).toBe(0x40000000n);
  });

  it('qemu stop: SET_STATUS(0) then GET_VRING_BASE per vring, each reply stored as last_avail_idx for the next start', () => {
    const io = scriptIo((m) => {
      const p = m.payload as Payload | undefined;
      return m.request === FR.GET_VRING_BASE && p?.kind === 'vringState' ? { kind: 'vringState', index: p.index, num: 10 + p.index } : undefined;
    });
    const st = newQemuState({ queuePairs: 1, queueSize: 256, packed: false });
    const env = {
      ringKind: () => 'split',
      initNotifiers: () => ({ masked: fakeFd(), err: fakeFd() }),
      backendChannel: () => [{ close() {} }, { close() {} }],
      dropBackendChannel: () => {},
      kickFd: fakeFd,
      callFd: fakeFd,
      memoryTable: () => ({ regions: [], fds: [] }),
      vringAddr: () => ({ desc: 0n, avail: 0n, used: 0n, usedGpa: 0n }),
      usedIdx: () => 99,
      log: () => {},
      milestone: () => {},
    } as unknown as QemuEnv;
    runSync(vhostUserStart(st, env), io);
    ackGuestFeatures(st, 0x100000000n);
    st.driverOk = true;
    st.linkUp = true;
    expect(runSync(setStatus(st, env), io)).toBe('started');
    const n = io.sent.length;
    st.driverOk = false;
    expect(runSync(setStatus(st, env), io)).toBe('stopped');
    expect(io.names().slice(n)).toEqual(['SET_STATUS', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(st.vqs.map((q) => q.lastAvailIdx)).toEqual([10, 11]);
    st.driverOk = true;
    runSync(setStatus(st, env), io);
    expect(io.sent.filter((m) => m.request === FR.SET_VRING_BASE).slice(-2).map((m) => m.payload)).toEqual([
      { kind: 'vringState', index: 0, num: 10 },
      { kind: 'vringState', index: 1, num: 11 },
    ]);
  });

  it('runSequence resumes from a later reply and sends nothing while waiting', () => {
    let resume: ((r: OpResult) => void) | undefined;
    const sent: number[] = [];
    const io: SequenceIo = {
      send: (m) => {
        sent.push(m.request);
        return undefined;
      },
      read: (_spec, cb) => {
        resume = cb;
        return 'wait';
      },
    };
    function* seq(): Sequence<string> {
      const r = yield send({ request: FR.GET_FEATURES, flags: 1 }, { request: FR.GET_FEATURES, size: 8 });
      yield send({ request: FR.SET_OWNER, flags: 1 });
      return r.ok ? 'ok' : 'failed';
    }
    let result: string | undefined;
    runSequence(seq(), io, (r) => {
      result = r;
    });
    expect(sent).toEqual([FR.GET_FEATURES]);
    resume!({ ok: true, reply: { request: 1, flags: 5, payload: new Uint8Array(8) } });
    expect(sent).toEqual([FR.GET_FEATURES, FR.SET_OWNER]);
    expect(result).toBe('ok');
  });
});

describe('reply checks (both readers)', () => {
  const spec = { request: FR.GET_FEATURES, size: 8 };
  it('flags must be exactly VERSION|REPLY (0x5)', () => {
    for (const flags of [0x1, 0x4, 0x7, 0xd, 0x15]) {
      expect(checkReply({ header: { request: 1, flags, size: 8 } }, spec)?.code).toBe('bad-reply-flags');
    }
    expect(checkReply({ header: { request: 1, flags: 5, size: 8 } }, spec)).toBeUndefined();
  });
  it('the reply must echo the request code', () => {
    expect(checkReply({ header: { request: 15, flags: 5, size: 8 } }, spec)?.code).toBe('unexpected-request');
  });
  it('fixed-size replies must have their size; acks read by QEMU are not size-checked', () => {
    expect(checkReply({ header: { request: 1, flags: 5, size: 4 } }, spec)?.code).toBe('bad-reply-size');
    expect(checkReply({ header: { request: 5, flags: 5, size: 4 } }, { request: 5 })).toBeUndefined();
  });
});

describe('Conversation', () => {
  it('a message nobody asked for is taken as the next reply (neither front-end reads the socket otherwise)', () => {
    const sched = new Scheduler({ seed: 1 });
    const ns = new SocketNamespace({ scheduler: sched });
    const [a, b] = ns.socketpair();
    const conv = new Conversation(new MessageChannel(a, { role: 'frontend' }));
    const peer = new MessageChannel(b, { role: 'backend' });
    peer.on({ message: () => {}, fatal: () => {}, closed: () => {} });
    peer.send(makeReply({ request: FR.GET_STATUS }, { kind: 'status', status: 8 }), { validate: false });
    sched.run();
    expect(conv.pendingMessages).toBe(1);
    let got: OpResult | undefined;
    function* seq(): Sequence<void> {
      got = yield send({ request: FR.GET_FEATURES, flags: 1 }, { request: FR.GET_FEATURES, size: 8 });
    }
    runSequence(seq(), conv, () => {});
    expect(got?.ok).toBe(false);
    if (got && !got.ok) expect(got.error.code).toBe('unexpected-request');
    conv.close();
    peer.close();
  });

  it('the peer closing while a reply is awaited fails the read with eof; sends then fail with EPIPE', () => {
    const sched = new Scheduler({ seed: 1 });
    const ns = new SocketNamespace({ scheduler: sched });
    const [a, b] = ns.socketpair();
    const conv = new Conversation(new MessageChannel(a, { role: 'frontend' }));
    const results: OpResult[] = [];
    function* seq(): Sequence<void> {
      results.push(yield send({ request: FR.GET_FEATURES, flags: 1 }, { request: FR.GET_FEATURES, size: 8 }));
      results.push(yield send({ request: FR.SET_OWNER, flags: 1 }));
    }
    runSequence(seq(), conv, () => {});
    b.close();
    sched.run();
    expect(results.map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(['eof', 'transport']);
    conv.close();
  });
});
