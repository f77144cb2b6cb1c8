import { describe, expect, it } from 'vitest';
import { FrontendRequest as FR, ProtocolFeature, encode, makeReply, protocolFeatureMask, type Payload } from '../../protocol/index.ts';
import { Scheduler } from '../../sim/scheduler.ts';
import { SocketNamespace, TransportError } from '../../transport/index.ts';
import { SplitDevice } from '../../ring/split/index.ts';
import { PackedDevice } from '../../ring/packed/index.ts';
import { DescriptorChain } from '../../ring/types.ts';
import { VirtioFeature as F, featureMask } from '../../virtio/index.ts';
import { QemuFrontend, type QemuFrontendOptions } from './qemu.ts';
import {
  ScriptedBackend,
  runUntil,
  DPDK_TESTPMD_FEATURES,
  QEMU_INIT as INIT,
  QEMU_ROUND as ROUND,
  QEMU_START as START,
  QEMU_STOP as STOP,
  type ScriptedBackendOptions,
} from './testing.ts';

const PATH = 'run/qs.sock';

function setup(opts: Partial<QemuFrontendOptions> = {}) {
  const sched = new Scheduler({ seed: 11 });
  const ns = new SocketNamespace({ scheduler: sched });
  const fe = new QemuFrontend({ ns, path: PATH, ramSize: 4 << 20, guestDriver: 'ipxe', ...opts });
  const backend = (o: Partial<ScriptedBackendOptions> = {}) => new ScriptedBackend({ ns, path: PATH, mode: 'client', ...o }).start();
  const settle = (pred: () => boolean, t = 30) => runUntil(sched, pred, t);
  return { sched, ns, fe, backend, settle };
}

function decoded(be: ScriptedBackend, name: string, conn?: number): Payload[] {
  return be.received.filter((m) => m.name === name && (conn === undefined || m.conn === conn)).map((m) => m.decoded!);
}

/** The guest posts `n` buffers on vring `i` and a device half completes `used` of them (split). */
function splitTraffic(fe: QemuFrontend, i: number, n: number, used: number): void {
  const v = fe.guest.vring(i);
  const area = fe.guest.bufferArea();
  for (let k = 0; k < n; k++) v.driver!.add([{ addr: area.gpa + (i * 64 + k) * 2048, len: 2048, writable: true }], k);
  v.driver!.publish();
  const l = v.layout!;
  if (l.kind !== 'split') throw new Error('split');
  const dev = new SplitDevice(fe.guest.memory, l, { indirect: false, eventIdx: true, inOrder: false }, undefined, {});
  const chain = new DescriptorChain(256);
  for (let k = 0; k < used; k++) {
    dev.pop(chain);
    dev.push(chain.id, 0);
  }
  dev.flush();
}

describe('qemu-7.2: connection and start', () => {
  it('chardev server: the guest does not start until the first back-end connects', () => {
    const { fe, sched, backend, settle } = setup();
    fe.start();
    sched.run({ until: 100 });
    expect(fe.phase).toBe('waiting');
    expect(fe.guest.kind).toBeUndefined();
    expect(fe.logs[0].text).toBe(`QEMU waiting for connection on: disconnected:unix:${PATH},server=on`);
    const be = backend();
    expect(settle(() => be.isReady && fe.phase === 'running')).toBe(true);
    expect(fe.eventsOf('started')[0].t).toBeGreaterThanOrEqual(100);
  });

  it('backend init order: GET_FEATURES, GET/SET_PROTOCOL_FEATURES (0x10cbf), GET_QUEUE_NUM, SET_SLAVE_REQ_FD (NEED_REPLY, one fd), SET_OWNER, GET_FEATURES, CALL+ERR per vring', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be = backend();
    settle(() => be.isReady);
    expect(be.names().slice(0, INIT.length)).toEqual(INIT);
    expect(decoded(be, 'SET_PROTOCOL_FEATURES')).toEqual([{ kind: 'protocolFeatures', features: 0x10cbfn }]);
    const slave = be.messages('SET_SLAVE_REQ_FD')[0];
    expect([slave.flags, slave.nfds]).toEqual([0x9, 1]);
    expect(be.messages('SET_VRING_ERR').map((m) => m.nfds)).toEqual([1, 1]);
  });

  it('protocol features: CONFIG is dropped with a warning', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be = backend({ protocolFeatures: 0x10cbfn | protocolFeatureMask(ProtocolFeature.CONFIG) });
    settle(() => be.isReady);
    expect(decoded(be, 'SET_PROTOCOL_FEATURES')).toEqual([{ kind: 'protocolFeatures', features: 0x10cbfn }]);
    expect(fe.logs.map((l) => l.text)).toContain('vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not.');
  });

  it('GET_QUEUE_NUM below the configured queue pairs fails the init ("you are asking more queues than supported")', () => {
    const { fe, backend, sched } = setup({ queuePairs: 2 });
    fe.start();
    const be = backend({ queueNum: 1n });
    sched.run({ until: 5 });
    expect(fe.lastError?.code).toBe('queue-num');
    expect(be.received.length).toBeGreaterThan(0);
    expect(fe.guest.kind).toBeUndefined();
  });

  it('iPXE start as observed (vh2/vc1): five ENABLE(1) pairs, SET_FEATURES 0x140000000, GET_STATUS + SET_STATUS(0x08), memory, rings, GET_STATUS + SET_STATUS(0x0f)', () => {
    const { fe, backend, settle } = setup({ ramSize: 128 * 1024 * 1024 });
    fe.start();
    const be = backend();
    settle(() => be.isReady);
    expect(be.names()).toEqual([...INIT, ...ROUND, ...ROUND, ...ROUND, ...ROUND, ...START]);
    expect(decoded(be, 'SET_FEATURES')).toEqual([{ kind: 'features', features: 0x140000000n }]);
    expect(decoded(be, 'SET_STATUS').map((p) => (p.kind === 'status' ? p.status : -1))).toEqual([0x08, 0x0f]);
    expect(be.messages('SET_STATUS').map((m) => m.flags)).toEqual([1, 1]);
    const mt = be.messages('SET_MEM_TABLE')[0];
    expect(mt.flags).toBe(0x9);
    expect(mt.nfds).toBe(2);
    const t = mt.decoded!;
    if (t.kind !== 'memoryTable') throw new Error('table');
    expect(t.regions.map((r) => [r.guestPhysAddr, r.memorySize, r.mmapOffset])).toEqual([
      [0n, 0xa0000n, 0n],
      [0xc0000n, 0x7f40000n, 0xc0000n],
    ]);
    expect(decoded(be, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0 })));
  });

  it('SET_VRING_ADDR carries front-end VAs and log_guest_addr = the used ring GPA (flags 0)', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be = backend();
    settle(() => be.isReady);
    const a = decoded(be, 'SET_VRING_ADDR')[0];
    if (a.kind !== 'vringAddr') throw new Error('addr');
    const g = fe.guest.vringAddr(0);
    expect([a.desc, a.avail, a.used, a.log, a.flags]).toEqual([g.desc, g.avail, g.used, g.usedGpa, 0]);
    expect(a.desc).not.toBe(a.log);
  });

  it('add_status: SET_STATUS is only written when the status read back lacks the bits', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be = backend({
      tamper: (m) => (m.request === FR.GET_STATUS ? encode(makeReply({ request: FR.GET_STATUS }, { kind: 'status', status: 0x0f }), { validate: false }).bytes : undefined),
    });
    settle(() => fe.phase === 'running');
    expect(be.messages('SET_STATUS')).toEqual([]);
    expect(be.names().filter((n) => n === 'GET_STATUS')).toHaveLength(2);
  });

  it('guest driver kinds change only the acked features: virtio-net 0x17020e783, virtio-pmd 0x150208000', () => {
    for (const [driver, want] of [
      ['virtio-net', 0x17020e783n],
      ['virtio-pmd', 0x150208000n],
    ] as const) {
      const { fe, backend, settle } = setup({ guestDriver: driver });
      fe.start();
      const be = backend();
      settle(() => be.isReady);
      expect(decoded(be, 'SET_FEATURES')).toEqual([{ kind: 'features', features: want }]);
      expect(fe.guest.features & ~want & featureMask(F.RING_EVENT_IDX)).toBe(0n);
    }
  });

  it('two queue pairs: per-device requests (GET_QUEUE_NUM, SET_SLAVE_REQ_FD, SET_OWNER, SET_MEM_TABLE) once, the rest per vhost_dev; the guest\'s MQ command enables pair 1', () => {
    const { fe, backend, settle, sched } = setup({ queuePairs: 2, guestDriver: 'virtio-net' });
    fe.start();
    const be = backend();
    settle(() => fe.phase === 'running' && be.isReady);
    const names = be.names();
    for (const once of ['GET_QUEUE_NUM', 'SET_SLAVE_REQ_FD', 'SET_OWNER', 'SET_MEM_TABLE']) expect(names.filter((n) => n === once)).toHaveLength(1);
    expect(names.filter((n) => n === 'GET_PROTOCOL_FEATURES')).toHaveLength(2);
    expect(names.filter((n) => n === 'SET_FEATURES')).toHaveLength(2);
    expect(be.messages('SET_VRING_KICK').map((m) => (m.decoded?.kind === 'vringFile' ? m.decoded.index : -1))).toEqual([0, 1, 2, 3]);
    // The device status is set once, by the last vhost_dev.
    expect(decoded(be, 'SET_STATUS').map((p) => (p.kind === 'status' ? p.status : -1))).toEqual([0x08, 0x0f]);
    expect(be.vring(2)?.enabled).toBe(false);
    fe.guestSetQueuePairs(2);
    sched.run({ until: sched.now + 1 });
    expect([be.vring(2)?.enabled, be.vring(3)?.enabled]).toEqual([true, true]);
  });

  it('chardev client with reconnect=N: retries every N seconds until a back-end listens', () => {
    const { fe, ns, sched, settle } = setup({ chardev: { mode: 'client', reconnect: 2 } });
    fe.start();
    sched.run({ until: 5.5 });
    expect(fe.logs.filter((l) => l.text.startsWith('Failed to connect')).map((l) => l.t)).toEqual([0, 2, 4]);
    const be = new ScriptedBackend({ ns, path: PATH, mode: 'server' }).start();
    expect(settle(() => be.isReady)).toBe(true);
    expect(fe.eventsOf('connected')[0].t).toBe(6);
  });

  it('chardev client without reconnect: a failed first connect is fatal', () => {
    const { fe, sched } = setup({ chardev: { mode: 'client' } });
    fe.start();
    sched.run({ until: 5 });
    expect(fe.phase).toBe('closed');
    expect(fe.lastError?.code).toBe('socket');
  });
});

describe('qemu-7.2: stop, reset, back-end loss', () => {
  it('guest reboot: SET_STATUS(0), GET_VRING_BASE per vring (stored as last_avail_idx), one attach round, then a start with base 0 and rebuilt rings', () => {
    const { fe, backend, settle, sched } = setup();
    fe.start();
    const be = backend({
      tamper: (m) => (m.request === FR.GET_VRING_BASE && m.decoded?.kind === 'vringState' ? encode(makeReply({ request: FR.GET_VRING_BASE }, { kind: 'vringState', index: m.decoded.index, num: 10 }), { validate: false }).bytes : undefined),
    });
    settle(() => fe.phase === 'running' && be.isReady);
    const gen = fe.guest.vring(0).generation;
    const n = be.received.length;
    fe.rebootGuest({ restart: false });
    settle(() => fe.phase === 'idle' && fe.idle);
    sched.run({ until: sched.now + 1 });
    expect(be.names().slice(n)).toEqual([...STOP, ...ROUND]);
    expect(decoded(be, 'SET_STATUS').at(-1)).toEqual({ kind: 'status', status: 0 });
    fe.rebootGuest();
    settle(() => fe.phase === 'running' && fe.eventsOf('started').length === 2);
    // The reset zeroed QEMU's indices (the 10 read back is gone) and the driver rebuilt its rings.
    expect(decoded(be, 'SET_VRING_BASE').slice(-2)).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0 })));
    expect(fe.guest.vring(0).generation).toBeGreaterThan(gen);
    expect(fe.eventsOf('guest-reset')).toHaveLength(2);
  });

  it('the same guest reboot as observed (vh2): init, five rounds, start, then SET_STATUS(0), GET_VRING_BASE×2, ENABLE(1)×2', () => {
    const { fe, ns, sched, settle } = setup({ chardev: { mode: 'client', reconnect: 1 } });
    const be = new ScriptedBackend({ ns, path: PATH, mode: 'server' }).start();
    fe.start();
    settle(() => fe.phase === 'running');
    fe.rebootGuest({ restart: false });
    sched.run({ until: sched.now + 10 });
    expect(be.names()).toEqual([...INIT, ...ROUND, ...ROUND, ...ROUND, ...ROUND, ...START, ...STOP, ...ROUND]);
  });

  it('back-end lost: acked features kept; GET_VRING_BASE fails on the dead socket; split last_avail_idx := used->idx from guest memory', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be1 = backend();
    settle(() => fe.phase === 'running');
    splitTraffic(fe, 0, 9, 7);
    splitTraffic(fe, 1, 7, 7);
    be1.stop();
    settle(() => fe.phase === 'link-down' && fe.idle);
    expect(fe.savedAckedFeatures).toBe(0x140000000n);
    expect([fe.vringBase(0), fe.vringBase(1)]).toEqual([7, 7]);
    expect(fe.logs.map((l) => l.text)).toContain('vhost VQ 0 ring restore failed: -22: Invalid argument (22)');
    const be2 = backend();
    settle(() => be2.isReady && fe.phase === 'running');
    // vc2: the new connection sees the full init, one ENABLE round, and bases 7 from guest memory.
    expect(be2.names()).toEqual([...INIT, ...START]);
    expect(decoded(be2, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 7 })));
    expect(decoded(be2, 'SET_FEATURES')).toEqual([{ kind: 'features', features: 0x140000000n }]);
    expect(fe.eventsOf('reconnected')).toHaveLength(1);
  });

  it('back-end lost with packed rings: nothing to restore from, the previous base is kept (0x80008000 from the start)', () => {
    const { fe, backend, settle } = setup({ packed: true, guestDriver: 'virtio-net' });
    fe.start();
    const be1 = backend();
    settle(() => fe.phase === 'running');
    expect(fe.guest.kind).toBe('packed');
    expect(decoded(be1, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0x80008000 })));
    const v = fe.guest.vring(0);
    const l = v.layout!;
    if (l.kind !== 'packed') throw new Error('packed');
    const area = fe.guest.bufferArea();
    for (let k = 0; k < 5; k++) v.driver!.add([{ addr: area.gpa + k * 2048, len: 2048, writable: true }], k);
    const dev = new PackedDevice(fe.guest.memory, l, { indirect: false, eventIdx: false, inOrder: false });
    const chain = new DescriptorChain(256);
    for (let k = 0; k < 5; k++) {
      dev.pop(chain);
      dev.push(chain.id, 0);
    }
    dev.flush();
    be1.stop();
    settle(() => fe.phase === 'link-down' && fe.idle);
    const be2 = backend();
    settle(() => be2.isReady);
    expect(decoded(be2, 'SET_VRING_BASE')).toEqual([0, 1].map((index) => ({ kind: 'vringState', index, num: 0x80008000 })));
  });

  it('after a clean stop the packed base is what GET_VRING_BASE returned (DPDK: avail half only, used half 0)', () => {
    const { fe, backend, settle } = setup({ packed: true, guestDriver: 'virtio-net' });
    fe.start();
    const be = backend({
      tamper: (m) => (m.request === FR.GET_VRING_BASE && m.decoded?.kind === 'vringState' ? encode(makeReply({ request: FR.GET_VRING_BASE }, { kind: 'vringState', index: m.decoded.index, num: 0x8005 }), { validate: false }).bytes : undefined),
    });
    settle(() => fe.phase === 'running');
    fe.rebootGuest({ restart: false });
    settle(() => fe.phase === 'idle' && fe.idle);
    expect([fe.vringBase(0), fe.vringBase(1)]).toEqual([0, 0]); // the reset zeroes them: packed kind is gone with the features
    expect(be.messages('GET_VRING_BASE')).toHaveLength(2);
  });

  it('refuses a back-end that lacks acked features ("vhost lacks feature mask"): its init runs, then QEMU disconnects; the next good one is taken', () => {
    const { fe, backend, settle, sched } = setup({ guestDriver: 'virtio-net' });
    fe.start();
    const be1 = backend();
    settle(() => fe.phase === 'running');
    const acked = fe.ackedFeatures!;
    be1.stop();
    settle(() => fe.phase === 'link-down' && fe.idle);
    const be2 = backend({ features: DPDK_TESTPMD_FEATURES & ~featureMask(F.NET_MRG_RXBUF), retry: 1000 });
    sched.run({ until: sched.now + 5 });
    expect(be2.names()).toEqual(INIT);
    expect(be2.connected).toBe(false);
    const refused = fe.eventsOf('refused');
    expect(refused).toHaveLength(1);
    expect(refused[0].error?.upstream).toBe('vhost lacks feature mask 0x8000 for backend');
    be2.stop();
    const be3 = backend();
    expect(settle(() => be3.isReady && fe.phase === 'running')).toBe(true);
    expect(decoded(be3, 'SET_FEATURES')).toEqual([{ kind: 'features', features: acked }]);
  });

  it('a back-end without VHOST_USER_F_PROTOCOL_FEATURES is refused after a reconnect (acked features include bit 30)', () => {
    const { fe, backend, settle, sched } = setup();
    fe.start();
    const be1 = backend();
    settle(() => fe.phase === 'running');
    be1.stop();
    settle(() => fe.phase === 'link-down' && fe.idle);
    const be2 = backend({ features: DPDK_TESTPMD_FEATURES & ~(1n << 30n), retry: 1000 });
    sched.run({ until: sched.now + 5 });
    expect(fe.eventsOf('refused')[0].error?.upstream).toBe('vhost lacks feature mask 0x40000000 for backend');
    expect(be2.names()).toEqual(['GET_FEATURES', 'SET_OWNER', 'GET_FEATURES', 'SET_VRING_CALL', 'SET_VRING_ERR', 'SET_VRING_CALL', 'SET_VRING_ERR']);
  });

  it('quit: the VM stops (SET_STATUS 0, GET_VRING_BASE×2), the socket closes and its file is removed; kill leaves the file', () => {
    const a = setup();
    a.fe.start();
    const be = a.backend({ retry: 1000 });
    a.settle(() => a.fe.phase === 'running' && be.isReady);
    const n = be.received.length;
    a.fe.quit();
    a.settle(() => a.fe.phase === 'closed');
    expect(be.names().slice(n)).toEqual(STOP);
    expect(a.ns.exists(PATH)).toBe(false);

    const b = setup();
    b.fe.start();
    const be2 = b.backend({ retry: 1000 });
    b.settle(() => b.fe.phase === 'running' && be2.isReady);
    const m = be2.received.length;
    b.fe.kill();
    b.sched.run({ until: b.sched.now + 1 });
    expect(be2.received.length).toBe(m);
    let result: unknown;
    b.ns.connect(PATH, (r) => {
      result = r;
    });
    b.sched.run({ until: b.sched.now + 1 });
    expect(result instanceof TransportError && result.code).toBe('ECONNREFUSED');
  });
});

describe('qemu-7.2: misbehaving back-ends', () => {
  it('a reply with wrong flags during init: "Failed to read msg header", treated as a disconnect, the next back-end is served', () => {
    const { fe, backend, settle, sched } = setup();
    fe.start();
    const be1 = backend({
      retry: 1000,
      tamper: (m) => {
        if (m.request !== FR.GET_PROTOCOL_FEATURES) return undefined;
        const bytes = encode(makeReply({ request: m.request }, { kind: 'protocolFeatures', features: 0x10cbfn }), { validate: false }).bytes;
        new DataView(bytes.buffer).setUint32(4, 0x1, true);
        return bytes;
      },
    });
    sched.run({ until: 5 });
    expect(fe.lastError?.upstream).toBe('Failed to read msg header. Flags 0x1 instead of 0x5.');
    expect(be1.connected).toBe(false);
    expect(fe.phase).toBe('waiting');
    be1.stop();
    const be2 = backend();
    expect(settle(() => be2.isReady && fe.phase === 'running')).toBe(true);
  });

  it('a back-end vanishing inside a reply during start: vhost start fails, the loss is handled, the next back-end starts with restored bases', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be1 = backend({ tamper: (m) => (m.request === FR.SET_MEM_TABLE ? 'close-mid-reply' : undefined) });
    settle(() => be1.received.some((m) => m.name === 'SET_MEM_TABLE') && fe.idle);
    settle(() => fe.phase === 'link-down' && fe.idle);
    expect(fe.eventsOf('error').map((e) => e.error?.code)).toContain('truncated');
    const be2 = backend();
    expect(settle(() => be2.isReady && fe.phase === 'running')).toBe(true);
    expect(be2.names()).toEqual([...INIT, ...START]);
  });

  it('the back-end channel: requests with NEED_REPLY get an ack', () => {
    const { fe, backend, settle } = setup();
    fe.start();
    const be = backend();
    settle(() => fe.phase === 'running');
    expect(be.messages('SET_SLAVE_REQ_FD')).toHaveLength(1);
  });

  it('dispose releases every fd', () => {
    const { fe, ns, backend, settle } = setup();
    fe.start();
    const be = backend({ retry: 1000 });
    settle(() => fe.phase === 'running');
    be.stop();
    fe.dispose();
    expect(ns.openHandles().map((h) => h.describe())).toEqual([]);
  });
});
