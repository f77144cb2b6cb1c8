import { describe, expect, it } from 'vitest';
import { FrontendRequest as FR, encode, makeReply, type Payload } from '../../protocol/index.ts';
import { Scheduler } from '../../sim/scheduler.ts';
import { SocketNamespace } from '../../transport/index.ts';
import type { PackedDriver } from '../../ring/packed/index.ts';
import { VirtioUserFrontend, type VirtioUserFrontendOptions } from './virtio-user.ts';
import { ScriptedBackend, runUntil, type ScriptedBackendOptions } from './testing.ts';

const PATH = 'run/vu.sock';

function setup(opts: Partial<VirtioUserFrontendOptions> = {}) {
  const sched = new Scheduler({ seed: 7 });
  const ns = new SocketNamespace({ scheduler: sched });
  const fe = new VirtioUserFrontend({ ns, path: PATH, ramSize: 2 << 20, ...opts });
  fe.start();
  const backend = (o: Partial<ScriptedBackendOptions> = {}) => new ScriptedBackend({ ns, path: PATH, mode: 'client', ...o }).start();
  const settle = (pred: () => boolean, t = 10) => runUntil(sched, pred, t);
  return { sched, ns, fe, backend, settle };
}

function decoded(be: ScriptedBackend, name: string): Payload[] {
  return be.messages(name).map((m) => m.decoded!);
}

function raw(to: { request: number; flags?: number }, payload: Payload, flags?: number): Uint8Array {
  const bytes = encode(makeReply(to, payload), { validate: false }).bytes;
  if (flags !== undefined) new DataView(bytes.buffer).setUint32(4, flags, true);
  return bytes;
}

function fillRing(fe: VirtioUserFrontend, vring: number, n: number): void {
  const d = fe.guest.vring(vring).driver!;
  const area = fe.guest.bufferArea();
  for (let i = 0; i < n; i++) d.add([{ addr: area.gpa + i * 2048, len: 2048, writable: true }], i);
  d.publish();
}

const PROBE = [
  'SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES',
  'SET_STATUS', 'GET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const RECONNECT = [
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', ...PROBE.slice(10),
];

describe('virtio-user-22.11: probe (first back-end)', () => {
  it('server=1 waits for a back-end: nothing is sent and the guest has no rings until one connects', () => {
    const { fe, sched, backend, settle } = setup();
    sched.run({ until: 100 });
    expect(fe.phase).toBe('waiting');
    expect(fe.guest.kind).toBeUndefined();
    const be = backend();
    expect(settle(() => be.isReady)).toBe(true);
    expect(fe.guest.kind).toBe('split');
  });

  it('init order: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES; protocol features = offer ∩ {MQ, REPLY_ACK, STATUS} = 0x10009', () => {
    const { backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    expect(be.names().slice(0, 4)).toEqual(['SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES']);
    expect(decoded(be, 'SET_PROTOCOL_FEATURES')).toEqual([{ kind: 'protocolFeatures', features: 0x10009n }]);
  });

  it('the whole probe comes out in the captured order', () => {
    const { backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    expect(be.names()).toEqual(PROBE);
  });

  it('FEATURES_OK: SET_VRING_CALL for every vring, rx vrings first (queues=2: 0, 2, 1, 3), each with its fd', () => {
    const { backend, settle } = setup({ queues: 2 });
    const be = backend();
    settle(() => be.messages('SET_FEATURES').length > 0);
    expect(be.messages('SET_VRING_CALL').map((m) => [m.decoded!.kind === 'vringFile' && m.decoded!.index, m.nfds])).toEqual([
      [0, 1],
      [2, 1],
      [1, 1],
      [3, 1],
    ]);
  });

  it('SET_FEATURES 0x950008000 with the defaults (MAC, CTRL_VQ, STATUS stripped; bit 30 ORed)', () => {
    const { fe, backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    expect(decoded(be, 'SET_FEATURES')).toEqual([{ kind: 'features', features: 0x950008000n }]);
    expect(fe.ackedFeatures).toBe(0x950008000n);
  });

  it('SET_STATUS(0x0b) with NEED_REPLY, then GET_STATUS twice (FEATURES_OK check, read-back before DRIVER_OK)', () => {
    const { backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    const st = be.messages('SET_STATUS');
    expect(st.map((m) => [m.flags, m.decoded])).toEqual([
      [0x9, { kind: 'status', status: 0x0b }],
      [0x9, { kind: 'status', status: 0x0f }],
    ]);
    const names = be.names();
    expect(names.slice(names.indexOf('SET_STATUS'), names.indexOf('SET_MEM_TABLE'))).toEqual(['SET_STATUS', 'GET_STATUS', 'GET_STATUS']);
  });

  it('DRIVER_OK: SET_MEM_TABLE with NEED_REPLY and GPA == VA; per vring NUM 256, BASE 0, ADDR (flags 0, log 0), KICK; ENABLE(1) pair; SET_STATUS(0x0f)', () => {
    const { fe, backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady && fe.phase === 'running');
    const mt = be.messages('SET_MEM_TABLE')[0];
    expect(mt.flags).toBe(0x9);
    expect(mt.nfds).toBe(1);
    const table = mt.decoded!;
    if (table.kind !== 'memoryTable') throw new Error('memory table');
    expect(table.regions).toHaveLength(1);
    expect(table.regions[0].guestPhysAddr).toBe(table.regions[0].userspaceAddr);
    expect(decoded(be, 'SET_VRING_NUM')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 256 })));
    expect(decoded(be, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0 })));
    const addr = decoded(be, 'SET_VRING_ADDR');
    expect(addr.map((a) => (a.kind === 'vringAddr' ? [a.index, a.flags, a.log, a.desc] : []))).toEqual(
      [0, 1].map((i) => [i, 0, 0n, fe.guest.vringAddr(i).desc]),
    );
    expect(decoded(be, 'SET_VRING_ENABLE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 1 })));
    expect(fe.phase).toBe('running');
  });

  it('packed_vq=1: packed rings, SET_VRING_BASE carries 1<<15 (avail 0, wrap counter 1)', () => {
    const { fe, backend, settle } = setup({ packedVq: true });
    const be = backend();
    settle(() => be.isReady);
    expect(fe.guest.kind).toBe('packed');
    expect(decoded(be, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0x8000 })));
  });

  it('status 0 is never sent: the reset at probe and at close stays local', () => {
    const { fe, backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    fe.quit();
    settle(() => fe.phase === 'closed');
    expect(be.messages('SET_STATUS').map((m) => m.decoded)).not.toContainEqual({ kind: 'status', status: 0 });
  });

  it('client mode (server=0) connects at probe and does not reconnect after the back-end leaves', () => {
    const sched = new Scheduler({ seed: 3 });
    const ns = new SocketNamespace({ scheduler: sched });
    const be = new ScriptedBackend({ ns, path: PATH, mode: 'server' }).start();
    const fe = new VirtioUserFrontend({ ns, path: PATH, ramSize: 2 << 20, server: false });
    fe.start();
    runUntil(sched, () => be.isReady);
    expect(be.names()).toEqual(PROBE);
    be.stop();
    sched.run({ until: sched.now + 10 });
    expect(fe.phase).toBe('disconnected');
    expect(fe.sessions).toBe(1);
  });
});

describe('virtio-user-22.11: server reconnect', () => {
  it('a new back-end gets ENABLE(0)×2 and GET_VRING_BASE×2 first, then features and protocol negotiation without SET_OWNER, one GET_STATUS, base 0', () => {
    const { fe, backend, settle } = setup();
    const be1 = backend();
    settle(() => be1.isReady);
    be1.stop();
    const be2 = backend();
    expect(settle(() => be2.isReady && fe.phase === 'running')).toBe(true);
    expect(be2.names()).toEqual(RECONNECT);
    expect(decoded(be2, 'SET_VRING_ENABLE').slice(0, 2)).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0 })));
    expect(decoded(be2, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0 })));
    expect(fe.eventsOf('reconnected')).toHaveLength(1);
    expect(fe.phase).toBe('running');
  });

  it('GET_VRING_BASE request num: uninitialised for the first vring (staleVringNum), the previous reply for the next', () => {
    const { backend, settle } = setup({ staleVringNum: 0x559e });
    const be1 = backend();
    settle(() => be1.isReady);
    be1.stop();
    const be2 = backend({
      tamper: (m) =>
        m.request === FR.GET_VRING_BASE && m.decoded?.kind === 'vringState' && m.decoded.index === 0
          ? raw({ request: FR.GET_VRING_BASE }, { kind: 'vringState', index: 0, num: 7 })
          : undefined,
    });
    settle(() => be2.isReady);
    expect(decoded(be2, 'GET_VRING_BASE')).toEqual([
      { kind: 'vringState', index: 0, num: 0x559e },
      { kind: 'vringState', index: 1, num: 7 },
    ]);
  });

  it('split rings are not reset on reconnect: same driver, buffers still in flight (the back-end re-bases from used->idx)', () => {
    const { fe, backend, settle } = setup();
    const be1 = backend();
    settle(() => be1.isReady);
    fillRing(fe, 0, 5);
    const before = fe.guest.vring(0);
    const gen = before.generation;
    const drv = before.driver;
    be1.stop();
    const be2 = backend();
    settle(() => be2.isReady);
    expect(fe.guest.vring(0).generation).toBe(gen);
    expect(fe.guest.vring(0).driver).toBe(drv);
    expect(drv!.inFlight).toBe(5);
    expect(fe.guest.availIdx(0)).toBe(5);
    expect(fe.eventsOf('rings-reset')).toEqual([]);
  });

  it('packed rings are reset on reconnect and in-flight buffers dropped ("Packets on the fly will be dropped when packed ring reconnecting.")', () => {
    const { fe, backend, settle } = setup({ packedVq: true });
    const be1 = backend();
    settle(() => be1.isReady);
    fillRing(fe, 0, 4);
    fillRing(fe, 1, 2);
    const gen = fe.guest.vring(0).generation;
    be1.stop();
    const be2 = backend();
    settle(() => be2.isReady);
    const resets = fe.eventsOf('rings-reset');
    expect(resets.map((e) => e.dropped)).toEqual([6]);
    expect(fe.guest.vring(0).generation).toBe(gen + 1);
    expect((fe.guest.vring(0).driver as PackedDriver).positions()).toEqual({ nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true });
    expect(decoded(be2, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0x8000 })));
    expect(fe.logs.map((l) => l.text)).toContain('Packets on the fly will be dropped when packed ring reconnecting.');
  });

  it('packed rings are not reset when the previous reconnect attempt died before the reset (upstream old_status test)', () => {
    const { fe, backend, settle, sched } = setup({ packedVq: true });
    const be1 = backend();
    settle(() => be1.isReady);
    fillRing(fe, 0, 3);
    be1.stop();
    // The second back-end vanishes at GET_FEATURES: after the reset (status 0 → ACK → DRIVER), before the ring reset.
    const be2 = backend({ vanishAt: 5 });
    settle(() => !be2.connected && be2.received.length >= 5);
    sched.run({ until: sched.now + 1 });
    const be3 = backend();
    expect(settle(() => be3.isReady)).toBe(true);
    expect(fe.eventsOf('rings-reset')).toEqual([]);
    expect(fe.guest.vring(0).driver!.inFlight).toBe(3);
    // The third attempt starts at GET_FEATURES: the status it replaces had no DRIVER_OK, so no stop either.
    expect(be3.names()[0]).toBe('GET_FEATURES');
  });

  it('a back-end offering fewer features is taken: the acked set shrinks silently (dev->features &= offer)', () => {
    const { fe, backend, settle } = setup();
    const be1 = backend();
    settle(() => be1.isReady);
    be1.stop();
    const be2 = backend({ features: 0xd7c66e7cbn & ~(1n << 35n) });
    settle(() => be2.isReady);
    expect(decoded(be2, 'SET_FEATURES')).toEqual([{ kind: 'features', features: 0x950008000n & ~(1n << 35n) }]);
    expect(fe.eventsOf('refused')).toEqual([]);
  });

  it('only one back-end is served: a second connection waits unaccepted until the first leaves', () => {
    const { fe, backend, settle, sched } = setup();
    const be1 = backend();
    settle(() => be1.isReady);
    const be2 = backend();
    sched.run({ until: sched.now + 5 });
    expect(be2.received).toEqual([]);
    be1.stop();
    expect(settle(() => be2.isReady)).toBe(true);
    expect(be2.names()).toEqual(RECONNECT);
    expect(fe.sessions).toBe(2);
  });

  it('quit: ENABLE(0)×2, GET_VRING_BASE×2, then the socket closes and the path is unlinked', () => {
    const { fe, ns, backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    const n = be.received.length;
    fe.quit();
    settle(() => fe.phase === 'closed');
    expect(be.names().slice(n)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(ns.exists(PATH)).toBe(false);
    expect(fe.eventsOf('quit')).toHaveLength(1);
  });

  it('lifecycle events carry virtual time: connected, negotiated, started, backend-lost, connected, stopped, negotiated, started, reconnected', () => {
    const { fe, backend, settle, sched } = setup();
    const be1 = backend();
    settle(() => be1.isReady);
    sched.run({ until: 3 });
    be1.stop();
    sched.run({ until: 5 });
    const be2 = backend();
    settle(() => be2.isReady && fe.phase === 'running');
    expect(fe.events.map((e) => e.type)).toEqual([
      'listening', 'connected', 'negotiated', 'started', 'backend-lost', 'connected', 'stopped', 'negotiated', 'started', 'reconnected',
    ]);
    const lost = fe.eventsOf('backend-lost')[0];
    expect(lost.t).toBe(3);
    expect(fe.eventsOf('reconnected')[0].t).toBeGreaterThanOrEqual(5);
  });
});

describe('virtio-user-22.11: misbehaving back-ends', () => {
  it('a reply with flags other than 0x5 fails the probe (bad-reply-flags); the next back-end is probed from scratch', () => {
    const { fe, backend, settle, sched } = setup();
    const be1 = backend({ tamper: (m) => (m.request === FR.GET_FEATURES ? raw({ request: FR.GET_FEATURES }, { kind: 'features', features: 0xd7c66e7cbn }, 0x1) : undefined) });
    sched.run({ until: 5 });
    expect(fe.lastError?.code).toBe('bad-reply-flags');
    expect(be1.connected).toBe(false);
    be1.stop();
    const be2 = backend();
    expect(settle(() => be2.isReady)).toBe(true);
    expect(be2.names()).toEqual(PROBE);
  });

  it('garbage that cannot be framed: typed error (bad-framing), the back-end is dropped, its reconnection is served', () => {
    const { fe, backend, settle } = setup();
    const be1 = backend();
    settle(() => be1.isReady);
    be1.stop();
    let tampered = false;
    const be2 = backend({
      tamper: (m) => {
        if (m.request !== FR.GET_VRING_BASE || tampered) return undefined;
        tampered = true;
        return new Uint8Array(12).fill(0xff);
      },
    });
    expect(settle(() => be2.isReady && fe.phase === 'running')).toBe(true);
    expect(fe.eventsOf('error').map((e) => e.error?.code)).toContain('bad-framing');
    // The client back-end reconnected after being dropped (DPDK client=1 retries every second).
    expect(fe.sessions).toBe(3);
    // The attempt that failed had already reset the status: the next one starts at GET_FEATURES.
    expect(be2.names(2)[0]).toBe('GET_FEATURES');
  });

  it('a wrong request code in an ack is logged and the sequence goes on (virtio_set_status ignores the failure)', () => {
    const { fe, backend, settle } = setup();
    const be = backend({ tamper: (m) => (m.request === FR.SET_STATUS ? raw({ request: FR.SET_MEM_TABLE }, { kind: 'ack', value: 0n }) : undefined) });
    expect(settle(() => be.isReady)).toBe(true);
    expect(fe.logs.map((l) => l.text)).toContain('Failed to set backend status');
  });

  it('a back-end vanishing inside a reply: truncated, then the next back-end is served', () => {
    const { fe, backend, settle, sched } = setup();
    backend({ vanishAt: 3, vanishMode: 'mid-reply' });
    sched.run({ until: 5 });
    expect(fe.lastError?.code).toBe('truncated');
    expect(fe.phase).toBe('waiting');
    const be2 = backend();
    expect(settle(() => be2.isReady)).toBe(true);
  });

  it('dispose releases every fd', () => {
    const { fe, ns, backend, settle } = setup();
    const be = backend();
    settle(() => be.isReady);
    be.stop();
    fe.dispose();
    expect(ns.openHandles()).toEqual([]);
  });
});
