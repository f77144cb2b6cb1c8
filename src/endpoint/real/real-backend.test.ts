import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RealFdRegistry, openFdNumbers } from '../../transport/real/index.ts';
import { fdsOpenedSince, skipReason, tempDir, waitFor } from '../../transport/real/test-support.ts';
import { eventsOfKind } from '../backend/index.ts';
import { RealModelBackend } from './real-backend.ts';
import { TestFrontend, udpFrame } from './testing.ts';

const FIRST = [
  'SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_VRING_CALL', 'SET_VRING_CALL',
  'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const RECONNECT = ['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE', ...FIRST.slice(1)];

const frames = (n: number, len = 64, seq = 0): Uint8Array[] => Array.from({ length: n }, (_, i) => udpFrame(len, seq + i));

describe.skipIf(skipReason !== undefined)(`model back-end on a real socket${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let reg: RealFdRegistry;
  let tmp: ReturnType<typeof tempDir>;
  let before: number[];
  let fe: TestFrontend | undefined;
  const backends: RealModelBackend[] = [];
  const launch = (opts: ConstructorParameters<typeof RealModelBackend>[0]): RealModelBackend => {
    const b = new RealModelBackend(opts);
    backends.push(b);
    return b;
  };

  beforeEach(() => {
    reg = new RealFdRegistry('frontend');
    tmp = tempDir('vhostsim-real-backend-');
    before = openFdNumbers();
  });
  afterEach(() => {
    const bs = backends.splice(0);
    try {
      for (const b of bs) b.quit();
      fe?.stop();
      fe = undefined;
    } finally {
      tmp.cleanup();
    }
    for (const b of bs) {
      expect(b.leaks()).toEqual([]);
      for (const s of b.sessions) expect(s.device.internalErrors).toEqual([]);
    }
    expect(reg.describeOpen()).toEqual([]);
    expect(fdsOpenedSince(before)).toEqual([]);
  });

  it('retries every second until the front-end listens, reaches ready, and moves frames both ways', async () => {
    const path = tmp.path('vu.sock');
    const b = launch({ path, dataPath: { rx: 'echo' } });
    expect(b.start()).toBeUndefined();
    expect(b.state).toBe('retrying');
    expect(b.events.map((e) => e.text)).toEqual(['vhost-user client: socket created, fd: 100', 'failed to connect: No such file or directory', 'reconnecting...']);
    const t0 = Date.now();
    fe = new TestFrontend({ path, registry: reg });
    fe.listen();
    const s = await b.waitForReady({ timeoutMs: 3000 });
    // The next attempt comes a period after the failed one, not at once.
    expect(Date.now() - t0).toBeGreaterThan(500);
    expect(b.events.some((e) => e.kind === 'connected')).toBe(true);
    expect(s.n).toBe(1);
    expect(s.messages).toEqual(FIRST);
    expect(eventsOfKind(s.events, 'ready')).toHaveLength(1);
    // The device names the real fds it was given.
    const calls = eventsOfKind(s.events, 'vring-call').map((e) => e.fd);
    expect(calls.every((fd) => fd >= 3 && fd < 100_000)).toBe(true);

    expect(fe.postRx(64)).toBe(64);
    expect(fe.send(frames(50, 64))).toBe(50);
    await waitFor(() => b.stats!.txPackets === 50 && b.stats!.rxPackets === 50, 2000, 'frames');
    expect(b.stats!.txBytes).toBe(50 * 64);
    expect(b.stats!.txMalformed).toBe(0);
    expect(b.stats!.etherTypes).toEqual({ '0800': 50 });
    expect(fe.reclaimTx()).toBe(50);
    const got = fe.receive();
    expect(got).toHaveLength(50);
    got.forEach((p, i) => {
      expect(p.length).toBe(12 + 64);
      expect(p[10]).toBe(1); // num_buffers
      expect(Buffer.from(p.subarray(12)).equals(Buffer.from(udpFrame(64, i)))).toBe(true);
    });
  });

  it('counts malformed frames without echoing them, and keeps going', async () => {
    const path = tmp.path('vu.sock');
    fe = new TestFrontend({ path, registry: reg });
    fe.listen();
    const b = launch({ path, dataPath: { rx: 'echo' } });
    b.start();
    await b.waitForReady();
    fe.postRx(8);
    const bad = udpFrame(64);
    bad[24] ^= 0xff;
    fe.send([udpFrame(64), bad, new Uint8Array(10), udpFrame(100)]);
    await waitFor(() => b.stats!.txPackets === 4, 2000, 'frames');
    expect(b.stats!.txMalformed).toBe(2);
    expect(b.stats!.problems).toEqual({ 'ipv4-checksum': 1, runt: 1 });
    expect(b.stats!.samples.map((s) => s.problem)).toEqual(['ipv4-checksum', 'runt']);
    expect(b.stats!.rxPackets).toBe(2);
    expect(fe.reclaimTx()).toBe(4);
  });

  it('on the peer closing: destroys the device, reconnects at once, and resumes at used->idx', async () => {
    const path = tmp.path('vu.sock');
    fe = new TestFrontend({ path, registry: reg });
    fe.listen();
    const b = launch({ path });
    b.start();
    const s1 = await b.waitForReady();
    fe.send(frames(30));
    await waitFor(() => b.stats!.txPackets === 30, 2000, 'frames');
    expect(fe.reclaimTx()).toBe(30);
    expect(b.adapters.liveMappings).toBe(1);

    fe.dropConnection();
    const s2 = await b.waitForReady({ session: 2, timeoutMs: 3000 });
    expect(s1.end).toBe('peer-closed');
    const tail = s1.events.map((e) => e.text);
    expect(tail).toContain('vhost peer closed');
    expect(tail).toContain('Vhost device 0 destroyed');
    expect(s2.messages).toEqual(RECONNECT);
    // A fresh device answers base 0; the split ring is resynchronised to used->idx from guest memory.
    expect(eventsOfKind(s2.events, 'get-vring-base').map((e) => [e.index, e.num])).toEqual([[0, 0], [1, 0]]);
    expect(eventsOfKind(s2.events, 'used-idx-mismatch').map((e) => [e.index, e.usedIdx])).toEqual([[1, 30]]);
    // The old connection's mapping went with its device; the new one has its own.
    expect(b.adapters.liveMappings).toBe(1);
    fe.send(frames(20));
    await waitFor(() => b.stats!.txPackets === 50, 2000, 'frames after reconnect');
    expect(fe.reclaimTx()).toBe(20);
  });

  it('a relaunched back-end is taken through the reconnect sequence; the old one left nothing behind', async () => {
    const path = tmp.path('vu.sock');
    fe = new TestFrontend({ path, registry: reg });
    fe.listen();
    const b1 = launch({ path });
    b1.start();
    await b1.waitForReady();
    fe.send(frames(10));
    await waitFor(() => b1.stats!.txPackets === 10, 2000, 'frames');
    b1.quit();
    expect(b1.state).toBe('stopped');
    expect(b1.sessions[0]!.end).toBe('closed-locally');
    expect(b1.events.map((e) => e.text)).toContain(`free connfd ${eventsOfKind(b1.events, 'closed-locally')[0]!.fd}`);
    expect(b1.leaks()).toEqual([]);
    await waitFor(() => fe!.current!.closed, 2000, 'front-end sees the close');

    const b2 = launch({ path });
    b2.start();
    const s = await b2.waitForReady();
    expect(fe.sessions).toHaveLength(2);
    expect(s.messages).toEqual(RECONNECT);
    fe.reclaimTx();
    fe.send(frames(5));
    await waitFor(() => b2.stats!.txPackets === 5, 2000, 'frames');
  });

  it('after the front-end exits: a clean destroy, then connect failures every second until quit', async () => {
    const path = tmp.path('vu.sock');
    fe = new TestFrontend({ path, registry: reg });
    fe.listen();
    const b = launch({ path });
    b.start();
    await b.waitForReady();
    fe.stop();
    fe = undefined;
    await waitFor(() => b.state === 'retrying', 2000, 'retrying');
    const texts = b.events.map((e) => e.text);
    expect(texts.slice(-3)).toEqual(['vhost-user client: socket created, fd: 101', 'failed to connect: No such file or directory', 'reconnecting...']);
    expect(b.adapters.liveMappings).toBe(0);
    b.quit();
    expect(b.state).toBe('stopped');
    await expect(b.waitForReady()).rejects.toThrow(/stopped/);
  });

  it('without reconnect a failed connect fails the start', () => {
    const b = launch({ path: tmp.path('nobody.sock'), profile: { reconnect: false } });
    // connect(2) on a path nobody created: ENOENT, as DPDK logs it ("No such file or directory").
    expect(b.start()?.code).toBe('ENOENT');
    expect(b.state).toBe('failed');
  });
});
