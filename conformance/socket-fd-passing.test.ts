/**
 * The real transport against real kernels and a real non-Node peer: AF_UNIX sockets on a
 * path in a temp dir, fds passed as SCM_RIGHTS, memfd shared memory, eventfd counters,
 * the vhost-user codec over it, and a python3 process as the other end.
 *
 * Skips, with the reason in the suite name, off Linux or when koffi cannot load.
 */
import { spawn, spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Channel } from '../src/transport/channel.ts';
import type { AnyFd } from '../src/transport/fd.ts';
import { TransportError } from '../src/transport/errors.ts';
import { MessageChannel } from '../src/endpoint/message-channel.ts';
import { FrontendRequest as R, makeRequest, type DecodedMessage } from '../src/protocol/index.ts';
import {
  MappedGuestMemory,
  RealEventFd,
  RealFdRegistry,
  RealMemFd,
  RealUnixListener,
  connectUnix,
  openFdNumbers,
  pollBackend,
  setPollBackend,
  type RealFd,
  type RealSocketFd,
  type PollBackend,
} from '../src/transport/real/index.ts';
import { Inbox, fdsOpenedSince, pattern, sameBytes, skipReason, tempDir, waitFor } from '../src/transport/real/test-support.ts';

const title = `real AF_UNIX transport${skipReason ? ` (skipped: ${skipReason})` : ''}`;
if (skipReason) console.warn(`real-socket: skipped: ${skipReason}`);

const hasPython = spawnSync('python3', ['-c', 'import os, socket; os.eventfd; socket.send_fds'], { stdio: 'ignore' }).status === 0;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** A listener on `path` and one connection to it: [client end, accepted server end]. */
async function connectedPair(path: string, reg: RealFdRegistry, framing: 'vhost-user' | 'stream' = 'vhost-user') {
  let server: RealSocketFd | undefined;
  const listener = RealUnixListener.listen(path, (c) => (server = c), { registry: reg, framing });
  if (listener instanceof TransportError) throw listener;
  const client = connectUnix(path, { registry: reg, framing });
  if (client instanceof TransportError) throw client;
  await waitFor(() => server !== undefined, 2000, 'accept');
  return { listener, client, server: server! };
}

describe.skipIf(skipReason !== undefined)(title, () => {
  let reg: RealFdRegistry;
  let tmp: ReturnType<typeof tempDir>;
  let before: number[];
  beforeEach(() => {
    reg = new RealFdRegistry('conformance');
    tmp = tempDir();
    before = openFdNumbers();
  });
  afterEach(() => {
    tmp.cleanup();
    // The whole cycle leaves nothing open: not in our registry, not in the process.
    expect(reg.describeOpen()).toEqual([]);
    expect(fdsOpenedSince(before)).toEqual([]);
  });

  it('round-trips bytes in order across many messages and sizes, both ways', async () => {
    const { listener, client, server } = await connectedPair(tmp.path('bytes.sock'), reg, 'stream');
    const atServer = new Inbox(server);
    const atClient = new Inbox(client);
    const sizes = [1, 12, 13, 255, 4096, 9000, 65536, 70_000, 300_000];
    const up: Uint8Array[] = [];
    const down: Uint8Array[] = [];
    for (let i = 0; i < 200; i++) {
      const u = pattern(i, sizes[i % sizes.length]);
      const d = pattern(1000 + i, sizes[(i * 7) % sizes.length]);
      up.push(u);
      down.push(d);
      expect(client.send(u)).toBeUndefined();
      expect(server.send(d)).toBeUndefined();
    }
    const total = (xs: Uint8Array[]) => xs.reduce((n, x) => n + x.length, 0);
    await waitFor(() => atServer.received === total(up) && atClient.received === total(down), 10_000, 'all bytes');
    const check = (got: Uint8Array, sent: Uint8Array[]) => {
      let off = 0;
      for (const s of sent) {
        expect(sameBytes(got.subarray(off, off + s.length), s)).toBe(true);
        off += s.length;
      }
    };
    check(atServer.bytes(), up);
    check(atClient.bytes(), down);
    client.close();
    await waitFor(() => atServer.closed !== undefined, 2000, 'close');
    server.close();
    listener.close({ unlink: true });
  });

  it('shares a memfd: the receiver maps it and writes through either mapping are seen through the other', async () => {
    const { listener, client, server } = await connectedPair(tmp.path('mem.sock'), reg);
    const mem = RealMemFd.create('guest-ram', 1 << 20, reg);
    const mine = mem.map();
    mine.bytes().set(enc('written before sending'), 0x100);
    const inbox = new Inbox(server, true);
    expect(client.send(enc('\x05\0\0\0\x01\0\0\0\0\0\0\0'), [mem])).toBeUndefined();
    mem.close(); // the peer's copy keeps the file alive
    await waitFor(() => inbox.fds().length === 1, 2000, 'fd');
    const got = inbox.fds()[0];
    expect(got.kind).toBe('memfd');
    const theirs = (got as RealMemFd).map();
    got.close();
    expect(theirs.size).toBe(1 << 20);
    expect(dec(theirs.bytes(0x100, 22))).toBe('written before sending');
    theirs.bytes().set(enc('receiver wrote this'), 0x80000);
    expect(dec(mine.bytes(0x80000, 19))).toBe('receiver wrote this');
    // Atomics work on a mapping (not Atomics.wait: the buffer is not shared by JS's definition)
    const a = new Uint32Array(mine.buffer, mine.byteOffset, 16);
    const b = new Uint32Array(theirs.buffer, theirs.byteOffset, 16);
    Atomics.store(a, 3, 0xfeedface);
    expect(Atomics.load(b, 3)).toBe(0xfeedface);
    mine.release();
    theirs.release();
    client.close();
    server.close();
    listener.close({ unlink: true });
  });

  it('shares an eventfd: a write on one side is read as the count on the other', async () => {
    const { listener, client, server } = await connectedPair(tmp.path('ev.sock'), reg);
    const call = RealEventFd.create(0, { registry: reg });
    const inbox = new Inbox(server, true);
    client.send(enc('\x0d\0\0\0\x01\0\0\0\x08\0\0\0\0\0\0\0\0\0\0\0'), [call]);
    await waitFor(() => inbox.fds().length === 1, 2000, 'fd');
    const theirs = inbox.fds()[0] as RealEventFd;
    expect(theirs.kind).toBe('eventfd');
    theirs.write(3);
    theirs.write(4);
    expect(call.read()).toBe(7n);
    expect(call.read()).toBe(0n);
    // and the other way, observed from the event loop
    let signalled = 0n;
    theirs.onSignal(() => (signalled += theirs.read()));
    call.write(2);
    await waitFor(() => signalled === 2n, 2000, 'signal');
    theirs.close();
    call.close();
    client.close();
    server.close();
    listener.close({ unlink: true });
  });

  it('sees the peer close after the data still pending, and EPIPE after it', async () => {
    const { listener, client, server } = await connectedPair(tmp.path('close.sock'), reg, 'stream');
    for (let i = 0; i < 50; i++) client.send(pattern(i, 10_000));
    client.close();
    const inbox = new Inbox(server);
    await waitFor(() => inbox.closed !== undefined, 5000, 'close');
    expect(inbox.closed).toEqual({ info: { reason: 'eof' }, bytesBefore: 500_000 });
    expect(server.send(enc('anyone?'))?.code).toBe('EPIPE');
    server.close();
    listener.close({ unlink: true });
  });

  it('answers connect with ENOENT (no file) and ECONNREFUSED (stale file), as DPDK client mode sees them', () => {
    const path = tmp.path('gone.sock');
    const r1 = connectUnix(path, { registry: reg });
    expect(r1).toBeInstanceOf(TransportError);
    expect((r1 as TransportError).code).toBe('ENOENT');
    expect((r1 as TransportError).path).toBe(path);
    const l = RealUnixListener.listen(path, () => {}, { registry: reg });
    if (l instanceof TransportError) throw l;
    l.close(); // a killed process: the file stays
    const r2 = connectUnix(path, { registry: reg });
    expect((r2 as TransportError).code).toBe('ECONNREFUSED');
  });

  it('leaks no fd over a connect / send-fds / map / close cycle', async () => {
    for (let round = 0; round < 5; round++) {
      const { listener, client, server } = await connectedPair(tmp.path(`cycle${round}.sock`), reg);
      const m = RealMemFd.create('cycle', 65536, reg);
      const e = RealEventFd.create(0, { registry: reg });
      const inbox = new Inbox(server, true);
      const d = m.dup();
      client.send(enc('\x05\0\0\0\x01\0\0\0\0\0\0\0'), [m, e, d]);
      for (const f of [m, e, d]) f.close();
      await waitFor(() => inbox.fds().length === 3, 2000, 'fds');
      const map = (inbox.fds()[0] as RealMemFd).map();
      map.release();
      for (const f of inbox.fds()) f.close();
      client.close();
      server.close();
      listener.close({ unlink: true });
      expect(reg.describeOpen()).toEqual([]);
    }
  });

  it('a use-after-release of a mapping throws a typed error and does not crash', async () => {
    const m = RealMemFd.create('uar', 8192, reg);
    const gm = new MappedGuestMemory([{ gpa: 0, mapping: m.map() }]);
    m.close();
    const memory = gm.memory;
    memory.writeU32(16, 1234);
    gm.release();
    expect(() => gm.memory).toThrow(TransportError);
    try {
      void gm.memory;
    } catch (e) {
      expect((e as TransportError).code).toBe('EBADF');
    }
    // A GuestMemory reference kept by mistake reaches private zero pages, not freed memory.
    expect(memory.readU32(16)).toBe(0);
    memory.writeU32(16, 1);
  });

  it('runs the vhost-user MessageChannel over the real socket, with a memfd and an eventfd', async () => {
    const { listener, client, server } = await connectedPair(tmp.path('vhost.sock'), reg);
    // MessageChannel is typed for the model's fds; it only counts, forwards and closes them.
    const front = new MessageChannel(client as unknown as Channel<AnyFd>, { role: 'frontend' });
    const back = new MessageChannel(server as unknown as Channel<AnyFd>, { role: 'backend' });
    const got: DecodedMessage<AnyFd>[] = [];
    back.on({ message: (m) => got.push(m), fatal: (e) => expect.fail(e.message), closed: () => {} });
    front.on({ message: () => {}, fatal: (e) => expect.fail(e.message), closed: () => {} });

    const ram = RealMemFd.create('guest', 2 << 20, reg);
    const mine = ram.map();
    mine.bytes().set(enc('descriptor table lives here'), 0x1000);
    const kick = RealEventFd.create(0, { registry: reg });
    const region = { guestPhysAddr: 0n, memorySize: BigInt(2 << 20), userspaceAddr: 0x7f0000000000n, mmapOffset: 0n };
    const sends = [
      makeRequest(R.GET_FEATURES),
      makeRequest(R.SET_MEM_TABLE, { kind: 'memoryTable', regions: [region] }, { fds: [ram] }),
      makeRequest(R.SET_VRING_KICK, { kind: 'vringFile', index: 0, noFd: false }, { fds: [kick] }),
      makeRequest(R.SET_VRING_ENABLE, { kind: 'vringState', index: 0, num: 1 }),
    ];
    // Back to back, before the reader runs: the framing must keep each fd with its message.
    for (const m of sends) expect(front.send(m as never)).toBeUndefined();
    ram.close();
    await waitFor(() => got.length === 4, 2000, 'four messages');
    expect(got.map((m) => m.header.request)).toEqual([R.GET_FEATURES, R.SET_MEM_TABLE, R.SET_VRING_KICK, R.SET_VRING_ENABLE]);
    expect(got.map((m) => m.fds.length)).toEqual([0, 1, 1, 0]);
    expect(got.every((m) => m.error === undefined)).toBe(true);
    const table = got[1].decoded;
    if (table?.kind !== 'memoryTable') throw new Error('not a memory table');
    expect(table.regions).toEqual([region]);

    const regionFd = got[1].fds[0] as unknown as RealFd;
    expect(regionFd.kind).toBe('memfd');
    const gm = new MappedGuestMemory([
      { gpa: Number(region.guestPhysAddr), uva: Number(region.userspaceAddr), mapping: (regionFd as RealMemFd).map(Number(region.mmapOffset), Number(region.memorySize)) },
    ]);
    regionFd.close();
    const out = new Uint8Array(27);
    gm.memory.read(gm.memory.uvaToGpa(0x7f0000001000, 27), out);
    expect(dec(out)).toBe('descriptor table lives here');

    const kickFd = got[2].fds[0] as unknown as RealEventFd;
    kick.write(1);
    expect(kickFd.read()).toBe(1n);
    kickFd.close();
    kick.close();
    gm.release();
    mine.release();
    front.close();
    back.close();
    listener.close({ unlink: true });
  });

  it.skipIf(!hasPython)('interoperates with a python3 peer: it sends a memfd and an eventfd with socket.send_fds', async () => {
    const path = tmp.path('py.sock');
    let back: MessageChannel | undefined;
    const got: DecodedMessage<AnyFd>[] = [];
    let gm: MappedGuestMemory | undefined;
    const listener = RealUnixListener.listen(
      path,
      (ch) => {
        back = new MessageChannel(ch as unknown as Channel<AnyFd>, { role: 'backend' });
        back.on({
          message: (m) => {
            got.push(m);
            const fds = m.fds as unknown as RealFd[];
            if (m.header.request === R.SET_MEM_TABLE && m.decoded?.kind === 'memoryTable') {
              const r = m.decoded.regions[0];
              gm = new MappedGuestMemory([{ gpa: Number(r.guestPhysAddr), uva: Number(r.userspaceAddr), mapping: (fds[0] as RealMemFd).map(0, Number(r.memorySize)) }]);
              fds[0].close();
              gm.memory.write(0x100, enc('pong from node'));
            } else if (m.header.request === R.SET_VRING_CALL) {
              (fds[0] as RealEventFd).write(3);
              fds[0].close();
            } else for (const f of fds) f.close();
          },
          fatal: (e) => expect.fail(e.message),
          closed: () => {},
        });
      },
      { registry: reg },
    );
    if (listener instanceof TransportError) throw listener;

    const py = `
import os, socket, struct, mmap, sys, json
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
SIZE = 1 << 16
mfd = os.memfd_create('py-guest')
os.ftruncate(mfd, SIZE)
mem = mmap.mmap(mfd, SIZE)
mem[0:17] = b'hello from python'
region = struct.pack('<QQQQ', 0, SIZE, 0x7f0000000000, 0)
payload = struct.pack('<II', 1, 0) + region
socket.send_fds(s, [struct.pack('<III', 5, 1, len(payload)) + payload], [mfd])
efd = os.eventfd(0)
socket.send_fds(s, [struct.pack('<III', 13, 1, 8) + struct.pack('<Q', 0)], [efd])
count = os.eventfd_read(efd)
print(json.dumps({'count': count, 'pong': mem[0x100:0x10e].decode()}))
s.close()
`;
    const child = spawn('python3', ['-c', py, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ count: 3, pong: 'pong from node' });
    expect(got.map((m) => [m.header.request, m.fds.length, m.error?.code])).toEqual([
      [R.SET_MEM_TABLE, 1, undefined],
      [R.SET_VRING_CALL, 1, undefined],
    ]);
    const text = new Uint8Array(17);
    gm!.memory.read(0, text);
    expect(dec(text)).toBe('hello from python');
    gm!.release();
    await waitFor(() => back?.closed === true || got.length === 2, 2000, 'python gone');
    back!.close();
    listener.close({ unlink: true });
  });

  describe.each(['uv', 'timer'] as PollBackend[])('round-trip latency with the %s poll backend', (backend) => {
    it('measures a 12-byte ping-pong over the socket path', async () => {
      setPollBackend(backend);
      try {
        const { listener, client, server } = await connectedPair(tmp.path(`lat-${backend}.sock`), reg);
        const n = backend === 'uv' ? 2000 : 100;
        const ping = enc('\x01\0\0\0\x01\0\0\0\0\0\0\0');
        server.onData((chunk) => server.send(chunk));
        const times: number[] = [];
        let t0 = 0n;
        await new Promise<void>((done) => {
          client.onData(() => {
            times.push(Number(process.hrtime.bigint() - t0) / 1000);
            if (times.length === n) return done();
            t0 = process.hrtime.bigint();
            client.send(ping);
          });
          t0 = process.hrtime.bigint();
          client.send(ping);
        });
        times.sort((a, b) => a - b);
        const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(1);
        console.log(`real-socket ${pollBackend()} backend: round trip median ${q(0.5)} µs, p90 ${q(0.9)} µs, p99 ${q(0.99)} µs over ${n}`);
        // Loose bounds: catch a broken wake-up (seconds), not a slow machine.
        expect(times[Math.floor(n / 2)]).toBeLessThan(backend === 'uv' ? 2000 : 20_000);
        client.close();
        server.close();
        listener.close({ unlink: true });
      } finally {
        setPollBackend(undefined);
      }
    });
  });
});
