import { describe, expect, it } from 'vitest';
import { encode, makeRequest, FrontendRequest as R } from '../../protocol/index.ts';
import { TransportError, type SocketFd } from '../../transport/index.ts';
import { TraceRecorder } from '../trace-recorder.ts';
import { isMessageRecord } from '../../sim/trace.ts';
import { parseVhostLog } from '../../adapters/dpdk/vhost-log.ts';
import { DpdkBackend } from './backend.ts';
import { formatVhostLog, type VhostLogEvent } from './log.ts';
import { DescriptorChain } from '../../ring/types.ts';
import { Guest, ScriptedFrontend, simHost, virtioUserHandshake } from './testing.ts';

const PATH = '/tmp/vhost-user.sock';
const texts = (evs: readonly VhostLogEvent[]) => evs.filter((e) => e.source === 'config').map((e) => e.text);
const at = (evs: readonly VhostLogEvent[], kind: VhostLogEvent['kind']) => evs.filter((e) => e.kind === kind).map((e) => e.t);

function pair(seed = 1, opts: { client?: boolean; reconnect?: boolean } = {}) {
  const { sched, ns } = simHost(seed);
  const guest = new Guest(ns);
  const fe = new ScriptedFrontend({ ns, path: PATH, guest, mode: opts.client === false ? 'client' : 'server' });
  const be = new DpdkBackend({ ns, path: PATH, profile: { client: opts.client ?? true, ...(opts.reconnect !== undefined ? { reconnect: opts.reconnect } : {}) } });
  return { sched, ns, guest, fe, be };
}

describe('client mode (fact sheet §5.1)', () => {
  it('connects at start without a "connected" line and reaches ready', () => {
    const { sched, fe, be } = pair();
    fe.start();
    be.start();
    sched.run({ until: 1 });
    expect(texts(be.events).slice(0, 2)).toEqual(['vhost-user client: socket created, fd: 100', 'new device, handle is 0']);
    expect(texts(be.events)).not.toContain('connected');
    expect(texts(be.events)).toContain('virtio is now ready for processing.');
    expect(be.device?.running).toBe(true);
    expect(be.vring(0)).toBeDefined();
    expect(fe.current?.done).toBe(true);
  });

  it('a failed connect logs WARNING "failed to connect: No such file or directory" and "reconnecting...", then retries every 1 s forever', () => {
    const { sched, fe, be } = pair();
    be.start();
    sched.run({ until: 10.5 });
    expect(texts(be.events)).toEqual(['vhost-user client: socket created, fd: 100', 'failed to connect: No such file or directory', 'reconnecting...']);
    expect(be.events.find((e) => e.kind === 'connect-failed')!.level).toBe('WARNING');
    expect(be.state).toBe('retrying');
    fe.start();
    sched.run({ until: 12 });
    expect(at(be.events, 'connected')).toEqual([11]);
    expect(texts(be.events)).toContain('virtio is now ready for processing.');
  });

  it('a socket file with nobody listening gives "Connection refused"', () => {
    const { sched, ns, be } = pair();
    const l = ns.listen(PATH, () => {});
    (l as { close(o: { unlink?: boolean }): void }).close({ unlink: false });
    be.start();
    sched.run({ until: 0.5 });
    expect(texts(be.events)).toContain('failed to connect: Connection refused');
  });

  it('with NO_RECONNECT a failed connect fails the start and nothing is retried', () => {
    const { sched, be } = pair(1, { reconnect: false });
    be.start();
    sched.run({ until: 5 });
    expect(be.state).toBe('failed');
    expect(texts(be.events)).not.toContain('reconnecting...');
    expect(sched.pending).toBe(0);
  });

  it('peer close: "vhost peer closed", device destroyed, a new socket, and the connect/retry cycle again', () => {
    const { sched, guest, ns, be } = pair();
    const fe = new ScriptedFrontend({ ns, path: PATH, guest });
    fe.start();
    be.start();
    sched.run({ until: 1 });
    const first = be.device!;
    fe.stop(); // virtio-user quits: connection closed, socket file removed
    sched.run({ until: 3.5 });
    expect(first.isDestroyed).toBe(true);
    expect(be.device).toBeUndefined();
    expect(texts(be.events).slice(-4)).toEqual([
      'vhost peer closed',
      'vhost-user client: socket created, fd: 101',
      'failed to connect: No such file or directory',
      'reconnecting...',
    ]);
    expect(texts(be.events).filter((t) => t.startsWith('vhost-user client: socket created'))).toHaveLength(2);
    expect(be.events.filter((e) => e.kind === 'device-destroyed')).toHaveLength(1);
    // The front-end comes back at t=5.2: the next retry (t=6 after failures at 4, 5) connects.
    sched.at(5.2, () => new ScriptedFrontend({ ns, path: PATH, guest }).start());
    sched.run({ until: 7 });
    expect(at(be.events, 'connected')).toEqual([6]);
    expect(be.device).not.toBe(first);
    expect(be.device?.running).toBe(true);
    expect(be.connections).toBe(2);
  });

  it('nothing of the first connection survives into the second (fresh device: base 0, no features)', () => {
    const { sched, guest, ns, be } = pair();
    const fe = new ScriptedFrontend({ ns, path: PATH, guest });
    fe.start();
    be.start();
    sched.run({ until: 1 });
    // Traffic moved vring 1 to 3.
    const drv = guest.splitDriver<number>(1, undefined, false);
    for (let i = 0; i < 3; i++) drv.add([{ addr: guest.base + 0x80000, len: 64, writable: false }], i);
    drv.publish();
    sched.run({ until: 1.1 });
    const v = be.vring(1)!;
    const chain = new DescriptorChain(64);
    while (v.pop(chain)) v.device.push(chain.id, 0);
    v.notify();
    fe.current!.channel.close();
    sched.run({ until: 2 });
    const d2 = be.device!;
    expect(d2.vid).toBe(0);
    expect(fe.sessions).toHaveLength(2);
    // The reconnect sequence's GET_VRING_BASE went to the fresh device: 0.
    const replies = fe.sessions[1]!.replies.filter((m) => m.header.request === R.GET_VRING_BASE);
    expect(replies.map((m) => m.decoded)).toEqual([
      { kind: 'vringState', index: 0, num: 0 },
      { kind: 'vringState', index: 1, num: 0 },
    ]);
    // And at its kick DPDK re-based vring 1 to the guest's used->idx.
    expect(be.events.some((e) => e.kind === 'used-idx-mismatch' && e.usedIdx === 3)).toBe(true);
  });
});

describe('server mode (fact sheet §5.2)', () => {
  it('bind fails if the path exists: "failed to bind: Address already in use; remove it and try again"', () => {
    const { sched, ns, be } = pair(1, { client: false });
    ns.listen(PATH, () => {});
    const err = be.start();
    sched.run();
    expect(err).toBeInstanceOf(TransportError);
    expect(be.state).toBe('failed');
    expect(texts(be.events)).toEqual(['vhost-user server: socket created, fd: 100', 'failed to bind: Address already in use; remove it and try again']);
  });

  it('accepts a connection per device; after a disconnect the listener accepts a fresh one', () => {
    const { sched, guest, ns, be } = pair(1, { client: false });
    expect(be.start()).toBeUndefined();
    expect(texts(be.events)).toEqual(['vhost-user server: socket created, fd: 100', 'binding succeeded']);
    const fe = new ScriptedFrontend({ ns, path: PATH, guest, mode: 'client' });
    fe.start();
    sched.run({ until: 1 });
    expect(texts(be.events).some((t) => /^new vhost user connection is \d+$/.test(t))).toBe(true);
    expect(be.device?.running).toBe(true);
    fe.stop();
    sched.run({ until: 2 });
    expect(be.device).toBeUndefined();
    expect(be.state).toBe('listening');
    new ScriptedFrontend({ ns, path: PATH, guest, mode: 'client', script: (_s, ne) => virtioUserHandshake(guest, { session: 2, newEventfd: ne }) }).start();
    sched.run({ until: 3 });
    expect(be.device?.running).toBe(true);
    expect(be.connections).toBe(2);
  });
});

describe('quit and kill', () => {
  it('quit (testpmd graceful quit): "free connfd N", device destroyed, server socket unlinked, no reconnect', () => {
    const { sched, guest, ns, be } = pair(1, { client: false });
    be.start();
    new ScriptedFrontend({ ns, path: PATH, guest, mode: 'client' }).start();
    sched.run({ until: 1 });
    be.quit();
    expect(texts(be.events).at(-1)).toMatch(/^free connfd \d+$/);
    expect(be.events.at(-1)!.kind).toBe('device-destroyed');
    expect(ns.exists(PATH)).toBe(false);
    sched.run({ until: 5 });
    expect(be.state).toBe('stopped');
  });

  it('quit in client mode cancels the reconnect cycle', () => {
    const { sched, be } = pair();
    be.start();
    sched.run({ until: 2.5 });
    be.quit();
    const n = be.events.length;
    sched.run({ until: 10 });
    expect(be.events.length).toBe(n);
    expect(sched.pending).toBe(0);
  });

  it('kill (crash): nothing sent or logged, every fd closed by the "kernel", the server socket file stays (ECONNREFUSED)', () => {
    const { sched, guest, ns, be } = pair(1, { client: false });
    be.start();
    const fe = new ScriptedFrontend({ ns, path: PATH, guest, mode: 'client' });
    fe.start();
    sched.run({ until: 1 });
    const d = be.device!;
    const n = be.events.length;
    be.kill();
    expect(be.events.length).toBe(n);
    expect(d.isDestroyed).toBe(true);
    expect(ns.exists(PATH)).toBe(true);
    sched.run({ until: 2 });
    expect(fe.current!.closed).toBe(true);
    let refused: unknown;
    ns.connect(PATH, (r) => (refused = r));
    sched.run({ until: 3 });
    expect(refused).toBeInstanceOf(TransportError);
    expect((refused as TransportError).code).toBe('ECONNREFUSED');
    // Only the front-end's own handles remain open.
    const backendHeld = ns.openHandles().filter((h) => h.origin.startsWith('received on') && h.origin.includes('/server'));
    expect(backendHeld).toEqual([]);
  });

  it('a killed client back-end is replaced by a new one that connects and reaches ready', () => {
    const { sched, guest, ns, fe, be } = pair();
    fe.start();
    be.start();
    sched.run({ until: 1 });
    be.kill();
    sched.run({ until: 2 });
    const be2 = new DpdkBackend({ ns, path: PATH, profile: { client: true } });
    be2.start();
    sched.run({ until: 3 });
    expect(be2.device?.running).toBe(true);
    expect(fe.sessions).toHaveLength(2);
    void guest;
  });
});

describe('robustness on the socket', () => {
  it('a failed request without NEED_REPLY closes the connection; the client reconnects and the next connection reaches ready', () => {
    const { sched, guest, ns, be } = pair();
    let n = 0;
    const fe = new ScriptedFrontend({
      ns,
      path: PATH,
      guest,
      script: (s, ne) => {
        n = s;
        const steps = virtioUserHandshake(guest, { session: s, newEventfd: ne });
        if (s === 1) steps.splice(2, 0, { label: 'bad', msg: makeRequest(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 1n << 13n }), expectReply: false });
        return steps;
      },
    });
    fe.start();
    be.start();
    sched.run({ until: 2 });
    expect(n).toBe(2);
    expect(texts(be.events)).toContain('vhost message handling failed.');
    expect(be.device?.running).toBe(true);
  });

  it('an oversized message closes the connection: "invalid msg size"', () => {
    const { sched, ns, be } = pair(1, { client: false });
    be.start();
    let sock: SocketFd | undefined;
    ns.connect(PATH, (r) => {
      sock = r as SocketFd;
      const h = new Uint8Array(12);
      new DataView(h.buffer).setUint32(0, 1, true);
      new DataView(h.buffer).setUint32(4, 1, true);
      new DataView(h.buffer).setUint32(8, 4096, true);
      sock.send(h);
    });
    sched.run({ until: 1 });
    expect(texts(be.events)).toContain('invalid msg size: 4096');
    expect(sock!.peerClosed).toBe(true);
    expect(be.state).toBe('listening');
  });

  it('records f2b and b2f messages and sessions in a trace recorder', () => {
    const { sched, ns } = simHost(2);
    const guest = new Guest(ns);
    const rec = new TraceRecorder(sched);
    const fe = new ScriptedFrontend({ ns, path: PATH, guest });
    const be = new DpdkBackend({ ns, path: PATH, profile: { client: true }, recorder: rec });
    fe.start();
    be.start();
    sched.run({ until: 1 });
    const msgs = rec.records.filter(isMessageRecord);
    expect(rec.records[0]).toMatchObject({ event: 'session', n: 1 });
    expect(msgs[0]).toMatchObject({ dir: 'f2b', request: R.SET_OWNER });
    expect(msgs[2]).toMatchObject({ dir: 'b2f', request: R.GET_FEATURES, flags: 5, payload: 'cbe7667c0d000000' });
    expect(msgs.filter((m) => m.dir === 'b2f')).toHaveLength(7); // as in the capture's first session
    const bytes = encode(makeRequest(R.GET_FEATURES)).bytes;
    expect(bytes.length).toBe(12);
  });

  it("the model's log parses like a real testpmd log", () => {
    const { sched, fe, be } = pair();
    fe.start();
    be.start();
    sched.run({ until: 1 });
    const log = parseVhostLog(formatVhostLog(be.events, { configLevel: 'DEBUG' }));
    expect(log.sessions).toHaveLength(1);
    expect(log.sessions[0]!.ready).toBe(true);
    expect(log.sessions[0]!.protocolFeatures).toBe(0x10009n);
    expect(log.sessions[0]!.messages[0]!.name).toBe('SET_OWNER');
  });
});
