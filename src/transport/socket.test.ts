import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Scheduler } from '../sim/scheduler.ts';
import {
  FdRegistry,
  MemFd,
  SocketNamespace,
  TransportError,
  closeAfter,
  closeMidMessage,
  type AnyFd,
  type ChannelFaults,
  type Chunking,
  type Channel,
  type FdObject,
  type SocketFd,
} from './index.ts';
import { world, concat, Recorder, bytesOf } from './test-support.ts';

const chunkingArb: fc.Arbitrary<Chunking> = fc.oneof(
  fc.constantFrom<Chunking>('whole', 'bytes', 'random'),
  fc.integer({ min: 1, max: 13 }).map((size): Chunking => ({ kind: 'fixed', size })),
);

const faultsArb: fc.Arbitrary<ChannelFaults> = fc.record(
  {
    delay: fc.constantFrom<ChannelFaults['delay']>(0, 0.01, { min: 0, max: 0.3 }),
    chunkGap: fc.constantFrom<ChannelFaults['chunkGap']>(0, { min: 0, max: 0.05 }),
    chunking: chunkingArb,
    coalesce: fc.boolean(),
  },
  { requiredKeys: [] },
);

interface MsgSpec {
  from: 0 | 1;
  at: number;
  bytes: Uint8Array;
  fds: ('memfd' | 'eventfd')[];
}
const msgArb: fc.Arbitrary<MsgSpec> = fc.record({
  from: fc.constantFrom<0 | 1>(0, 1),
  at: fc.constantFrom(0, 0.05, 0.1, 0.5),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }),
  fds: fc.array(fc.constantFrom<'memfd' | 'eventfd'>('memfd', 'eventfd'), { maxLength: 2 }),
});

interface Sent {
  bytes: Uint8Array;
  objects: FdObject[];
}

/** Plays messages over a socketpair; returns what each direction sent (in the order sends happened) and each end's recorder. */
function playPair(seed: number, faults: ChannelFaults, msgs: readonly MsgSpec[]) {
  const { sched, ns } = world(seed);
  const ends = ns.socketpair({ faults });
  const rec = [new Recorder(ends[0], sched, true), new Recorder(ends[1], sched, true)];
  const sent: Sent[][] = [[], []];
  msgs.forEach((m, i) => {
    sched.at(m.at, () => {
      const fds: AnyFd[] = m.fds.map((k, j) => (k === 'memfd' ? ns.memfd(`m${i}.${j}`, 8) : ns.eventfd(`e${i}.${j}`)));
      expect(ends[m.from].send(m.bytes, fds)).toBeUndefined();
      sent[m.from].push({ bytes: m.bytes, objects: fds.map((f) => f.object) });
      for (const f of fds) f.close(); // the sender may close right after sendmsg; the message holds its own reference
    });
  });
  sched.run();
  return { sched, ns, ends, rec, sent };
}

/** Checks one direction: bytes in order exactly once, fds with the first chunk of their message. */
function checkDirection(sent: Sent[], rec: Recorder): void {
  expect(rec.bytes).toEqual(concat(sent.map((s) => s.bytes)));
  const starts = new Map<number, Sent>();
  let off = 0;
  for (const s of sent) {
    starts.set(off, s);
    off += s.bytes.length;
  }
  let withFds = 0;
  for (const c of rec.chunks) {
    const m = starts.get(c.offset);
    const expected = m?.objects ?? [];
    expect(c.fds.map((f) => f.object)).toEqual(expected);
    if (c.fds.length > 0) withFds++;
    // No message carrying fds may begin strictly inside a chunk.
    for (const [o, s] of starts) if (o > c.offset && o < c.offset + c.bytes.length) expect(s.objects).toEqual([]);
  }
  expect(withFds).toBe(sent.filter((s) => s.objects.length > 0).length);
}

function closeAll(fds: Iterable<{ close(): void }>): void {
  for (const f of fds) f.close();
}

function noLeaks(reg: FdRegistry): void {
  expect(reg.describeOpen()).toEqual([]);
}

describe('Channel delivery without cuts', () => {
  it('property: in-order exactly-once delivery per direction, and fds arrive with the first chunk of their message', () => {
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 25 }), faultsArb, fc.integer(), (msgs, faults, seed) => {
        const { ns, ends, rec, sent } = playPair(seed, faults, msgs);
        checkDirection(sent[0], rec[1]);
        checkDirection(sent[1], rec[0]);
        closeAll(rec.flatMap((r) => r.chunks.flatMap((c) => c.fds)));
        closeAll(ends);
        noLeaks(ns.registry);
      }),
    );
  });

  it('property: the same seed gives an identical delivery schedule', () => {
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 15 }), faultsArb, fc.integer(), (msgs, faults, seed) => {
        const schedule = () =>
          playPair(seed, faults, msgs).rec.flatMap((r, side) => r.chunks.map((c) => `${side}@${c.t}:${c.bytes.length}/${c.fds.length}`));
        expect(schedule()).toEqual(schedule());
      }),
    );
  });

  it('different seeds give different schedules when delays and chunking are random', () => {
    const msgs: MsgSpec[] = Array.from({ length: 6 }, (_, i) => ({ from: (i % 2) as 0 | 1, at: 0, bytes: new Uint8Array(20).fill(i), fds: [] }));
    const faults: ChannelFaults = { delay: { min: 0, max: 1 }, chunking: 'random' };
    const schedules = new Set<string>();
    for (let seed = 0; seed < 10; seed++) {
      schedules.add(
        playPair(seed, faults, msgs)
          .rec.flatMap((r, side) => r.chunks.map((c) => `${side}@${c.t}:${c.bytes.length}`))
          .join(' '),
      );
    }
    expect(schedules.size).toBe(10);
  });

  it('a message is delivered after its delay, in chunks as configured', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { delay: 0.25, chunking: { kind: 'fixed', size: 4 }, chunkGap: 0.01 } });
    const rec = new Recorder(b, sched);
    a.send(bytesOf(1, 2, 3, 4, 5, 6, 7, 8, 9, 10));
    sched.run();
    expect(rec.chunks.map((c) => [c.t, c.bytes.length])).toEqual([
      [0.25, 4],
      [0.26, 4],
      [0.27, 2],
    ]);
  });

  it('random delays never reorder a direction (a later message waits for an earlier, slower one)', () => {
    const { sched, ns } = world(3);
    let i = 0;
    const [a, b] = ns.socketpair({ faults: { delay: () => [5, 0, 3, 0][i++ % 4] } });
    const rec = new Recorder(b, sched);
    for (let k = 0; k < 4; k++) a.send(bytesOf(k));
    sched.run();
    expect([...rec.bytes]).toEqual([0, 1, 2, 3]);
    expect(rec.chunks.every((c) => c.t === 5)).toBe(true);
  });

  it('coalescing joins due chunks across messages but never past an fd boundary', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { coalesce: true } });
    const rec = new Recorder(b, sched);
    const e = ns.eventfd('kick');
    a.send(bytesOf(1, 1));
    a.send(bytesOf(2, 2));
    a.send(bytesOf(3), [e]);
    a.send(bytesOf(4));
    e.close();
    sched.run();
    expect(rec.chunks.map((c) => [[...c.bytes], c.fds.length])).toEqual([
      [[1, 1, 2, 2], 0],
      [[3, 4], 1],
    ]);
  });

  it('data sent before the reader registers waits, then arrives in order before a close', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair();
    a.send(bytesOf(1));
    a.send(bytesOf(2));
    a.close();
    sched.run();
    expect(b.peerClosed).toBe(false); // the close stays behind unread data
    const rec = new Recorder(b, sched);
    sched.run();
    expect([...rec.bytes]).toEqual([1, 2]);
    expect(rec.closed?.bytesBefore).toBe(2);
    expect(b.peerClosed).toBe(true);
  });

  it('the kernel copies at send: changing the buffer afterwards changes nothing', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { delay: 1 } });
    const rec = new Recorder(b, sched);
    const buf = bytesOf(7, 7, 7);
    a.send(buf);
    buf.fill(0);
    sched.run();
    expect([...rec.bytes]).toEqual([7, 7, 7]);
  });

  it('counts messages, bytes and fds per direction', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { chunking: 'bytes' } });
    new Recorder(b, sched);
    const m = ns.memfd('mem', 4);
    a.send(bytesOf(1, 2, 3), [m]);
    a.send(bytesOf(4));
    sched.run();
    expect(a.connection.stats('client')).toMatchObject({ messagesSent: 2, bytesSent: 4, fdsSent: 1, chunksDelivered: 4, bytesDelivered: 4, fdsDelivered: 1 });
    expect(b.connection.stats('server').messagesSent).toBe(0);
  });
});

describe('Channel send errors', () => {
  it('returns typed errors instead of throwing', () => {
    const { ns } = world(1);
    const [a, b] = ns.socketpair();
    const other = new FdRegistry(ns.scheduler, 'elsewhere');
    const foreign = MemFd.create(other, 'x', 1);
    const closedFd = ns.eventfd('gone');
    closedFd.close();
    const code = (r: TransportError | undefined) => r?.code;
    expect(code(a.send(new Uint8Array(0)))).toBeUndefined();
    expect(code(a.send(new Uint8Array(0), [ns.eventfd()]))).toBe('EINVAL');
    expect(code(a.send(bytesOf(1), [foreign]))).toBe('EINVAL');
    expect(code(a.send(bytesOf(1), [closedFd]))).toBe('EBADF');
    const many = Array.from({ length: 254 }, () => closedFd);
    expect(code(a.send(bytesOf(1), many))).toBe('EINVAL');
    expect(() => a.send([1, 2] as unknown as Uint8Array)).toThrow(TypeError);
    b.close();
    expect(code(a.send(bytesOf(1)))).toBe('EPIPE');
    a.close();
    expect(code(a.send(bytesOf(1)))).toBe('EBADF');
    expect(() => a.onData(() => {})).toThrow(/EBADF/);
  });

  it('an empty send is not a message: nothing is delivered and it does not count', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { cuts: [closeAfter('client', 1)] } });
    const rec = new Recorder(b, sched);
    a.send(new Uint8Array(0));
    sched.run();
    expect(rec.chunks).toEqual([]);
    expect(rec.closed).toBeUndefined();
    a.send(bytesOf(9));
    sched.run();
    expect([...rec.bytes]).toEqual([9]);
    expect(rec.closed?.info.reason).toBe('eof');
  });
});

describe('close semantics', () => {
  it('property: a close is observed after all data sent before it, and nothing after', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.constantFrom(0, 0.1, 0.2), bytes: fc.uint8Array({ minLength: 1, maxLength: 30 }) }), { maxLength: 20 }),
        fc.constantFrom(0, 0.1, 0.2, 0.3),
        faultsArb,
        fc.integer(),
        (msgs, closeAt, faults, seed) => {
          const { sched, ns } = world(seed);
          const [a, b] = ns.socketpair({ faults });
          const rec = new Recorder(b, sched);
          const delivered: Uint8Array[] = [];
          for (const m of msgs) {
            sched.at(m.at, () => {
              const r = a.send(m.bytes);
              if (r === undefined) delivered.push(m.bytes);
              else expect(r.code).toBe('EBADF'); // only after our own close
            });
          }
          sched.at(closeAt, () => a.close());
          sched.run();
          expect(rec.bytes).toEqual(concat(delivered));
          expect(rec.closed).toBeDefined();
          expect(rec.closed!.bytesBefore).toBe(rec.bytes.length);
          expect(rec.closed!.info.reason).toBe('eof');
          expect(rec.dataAfterClose).toBe(0);
          b.close();
          noLeaks(ns.registry);
        },
      ),
    );
  });

  it('the closing end gets no close callback; the peer gets exactly one', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair();
    let aClosed = 0;
    let bClosed = 0;
    a.onClose(() => aClosed++);
    b.onClose(() => bClosed++);
    a.close();
    b.close();
    sched.run();
    expect([aClosed, bClosed]).toEqual([0, 0]); // b closed before a's close reached it
    const [c, d] = ns.socketpair();
    d.onClose(() => bClosed++);
    c.close();
    sched.run();
    expect(bClosed).toBe(1);
    expect(d.send(bytesOf(1))?.code).toBe('EPIPE');
  });

  it('closing with unread data makes the peer see a reset, and closes fds that were in flight', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { delay: 1 } });
    const recA = new Recorder(a, sched);
    new Recorder(b, sched);
    const mem = ns.memfd('guest', 64);
    a.send(bytesOf(1), [mem]);
    mem.close();
    expect(ns.openHandles().map((h) => h.origin)).toContain('in flight on c→s of host:socketpair#1');
    sched.at(0.5, () => b.close());
    sched.run();
    expect(recA.closed?.info.reason).toBe('reset');
    expect(mem.object.released).toBe(true);
    a.close();
    noLeaks(ns.registry);
  });

  it('a late onClose listener is still told, through the scheduler', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair();
    a.close();
    sched.run();
    expect(b.peerClosed).toBe(true);
    let told = false;
    b.onClose(() => (told = true));
    expect(told).toBe(false);
    sched.run();
    expect(told).toBe(true);
  });

  it('the end stays open while any handle to it is open (dup), and its FIN follows the last close', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair();
    const rec = new Recorder(b, sched);
    const a2 = a.dup();
    a.close();
    sched.run();
    expect(rec.closed).toBeUndefined();
    expect(a2.send(bytesOf(5))).toBeUndefined();
    a2.close();
    sched.run();
    expect([...rec.bytes]).toEqual([5]);
    expect(rec.closed?.info.reason).toBe('eof');
  });

  it('a reader registered through a handle goes away with that handle; data then waits', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair();
    const b2 = b.dup();
    const first: number[] = [];
    b.onData((c) => first.push(...c));
    b.close();
    a.send(bytesOf(1));
    sched.run();
    expect(first).toEqual([]);
    const second = new Recorder(b2, sched);
    sched.run();
    expect([...second.bytes]).toEqual([1]);
  });

  it('a reader that closes its end from inside onData stops delivery; the sender then gets EPIPE', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { chunking: 'bytes' } });
    const got: number[] = [];
    b.onData((c) => {
      got.push(...c);
      b.close();
    });
    a.send(bytesOf(1, 2, 3));
    sched.run();
    expect(got).toEqual([1]);
    expect(a.send(bytesOf(4))?.code).toBe('EPIPE');
    a.close();
    noLeaks(ns.registry);
  });
});

describe('cut faults', () => {
  it('property: a cut truncates exactly where asked, then both ends see a close and later sends get EPIPE', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 30 }), { minLength: 1, maxLength: 10 }),
        fc.nat(),
        fc.option(fc.nat({ max: 35 }), { nil: null }),
        faultsArb,
        fc.integer(),
        (msgs, nRaw, k, faults, seed) => {
          const n = (nRaw % msgs.length) + 1;
          const cut = k === null ? closeAfter('client', n) : closeMidMessage('client', n, k);
          const { sched, ns } = world(seed);
          const [a, b] = ns.socketpair({ faults: { ...faults, cuts: [cut] } });
          const recB = new Recorder(b, sched);
          const recA = new Recorder(a, sched);
          const results: (string | undefined)[] = [];
          msgs.forEach((m, i) =>
            sched.at((i + 1) * 0.1, () => {
              const e = ns.eventfd(`e${i}`);
              results.push(a.send(m, [e])?.code);
              e.close();
            }),
          );
          sched.at(0.05, () => expect(b.send(bytesOf(0xee))).toBeUndefined()); // server→client data before the cut
          sched.run();
          const last = k === null ? msgs[n - 1] : msgs[n - 1].subarray(0, k);
          const expected = concat([...msgs.slice(0, n - 1), last]);
          expect(recB.bytes).toEqual(expected);
          expect(recB.closed?.info.reason).toBe('eof');
          expect(recB.closed?.bytesBefore).toBe(expected.length);
          expect(recB.chunks.reduce((s, c) => s + c.fds.length, 0)).toBe(last.length > 0 ? n : n - 1);
          expect(results).toEqual(msgs.map((_, i) => (i < n ? undefined : 'EPIPE')));
          expect(b.send(bytesOf(1))?.code).toBe('EPIPE');
          // The sender's side also sees the close, after the data that was on its way to it.
          expect([...recA.bytes]).toEqual([0xee]);
          expect(recA.closed?.info.reason).toBe('eof');
          expect(a.connection.cut).toBe(true);
          a.close();
          b.close();
          noLeaks(ns.registry);
        },
      ),
    );
  });

  it("'any' counts messages over both directions; a server-side rule counts only the server's", () => {
    const play = (cut: ReturnType<typeof closeAfter>) => {
      const { sched, ns } = world(1);
      const [c, s] = ns.socketpair({ faults: { cuts: [cut] } });
      const recC = new Recorder(c, sched);
      const recS = new Recorder(s, sched);
      const codes: (string | undefined)[] = [];
      for (let i = 0; i < 6; i++) sched.at(i, () => codes.push((i % 2 === 0 ? c : s).send(bytesOf(i))?.code));
      sched.run();
      return { toServer: [...recS.bytes], toClient: [...recC.bytes], codes };
    };
    expect(play(closeAfter('any', 3))).toEqual({ toServer: [0, 2], toClient: [1], codes: [undefined, undefined, undefined, 'EPIPE', 'EPIPE', 'EPIPE'] });
    expect(play(closeAfter('server', 2))).toEqual({ toServer: [0, 2], toClient: [1, 3], codes: [undefined, undefined, undefined, undefined, 'EPIPE', 'EPIPE'] });
    expect(play(closeMidMessage('client', 1, 0))).toEqual({ toServer: [], toClient: [], codes: [undefined, 'EPIPE', 'EPIPE', 'EPIPE', 'EPIPE', 'EPIPE'] });
  });

  it('a vhost-user-sized message cut after its 12-byte header delivers exactly the header and its fds', () => {
    const { sched, ns } = world(1);
    const [fe, be] = ns.socketpair({ faults: { chunking: 'random', cuts: [closeMidMessage('client', 1, 12)] } });
    const rec = new Recorder(be, sched, true);
    const msg = new Uint8Array(12 + 8 + 32).fill(0xab);
    const mem = ns.memfd('guest', 4096);
    fe.send(msg, [mem]);
    mem.close();
    sched.run();
    expect(rec.bytes.length).toBe(12);
    expect(rec.chunks[0].fds.map((f) => f.kind)).toEqual(['memfd']);
    expect(rec.closed?.info.reason).toBe('eof');
  });
});

describe('cuts on a live connection', () => {
  it('addCut counts from the start of the connection; cutNow shuts both ways after queued data', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair();
    const recA = new Recorder(a, sched);
    const recB = new Recorder(b, sched);
    a.send(bytesOf(1));
    sched.run();
    a.connection.addCut(closeMidMessage('client', 3, 1));
    expect(() => a.connection.addCut(closeAfter('server', 0))).toThrow(RangeError);
    a.send(bytesOf(2));
    a.send(bytesOf(3, 3));
    sched.run();
    expect([...recB.bytes]).toEqual([1, 2, 3]);
    expect(recB.closed?.info.reason).toBe('eof');
    const [c, d] = ns.socketpair({ faults: { delay: 1 } });
    const recD = new Recorder(d, sched);
    new Recorder(c, sched);
    c.send(bytesOf(7));
    c.connection.cutNow();
    expect(d.send(bytesOf(8))?.code).toBe('EPIPE');
    sched.run();
    expect([...recD.bytes]).toEqual([7]);
    expect(recD.closed?.info.reason).toBe('eof');
    expect(recA.closed?.info.reason).toBe('eof');
  });
});

describe('passing fds', () => {
  it('a received memfd maps the same memory; a received eventfd signals the sender', () => {
    const { sched, ns } = world(1);
    const [fe, be] = ns.socketpair();
    const mem = ns.memfd('guest', 16);
    const call = ns.eventfd('call0');
    let rxMem: AnyFd | undefined;
    let rxCall: AnyFd | undefined;
    be.onData((_, fds) => ([rxMem, rxCall] = fds));
    fe.send(bytesOf(1), [mem, call]);
    sched.run();
    if (rxMem?.kind !== 'memfd' || rxCall?.kind !== 'eventfd') throw new Error('fds missing');
    rxMem.bytes()[3] = 42;
    expect(mem.bytes()[3]).toBe(42);
    let calls = 0n;
    call.onSignal(() => (calls += call.read()));
    rxCall.write();
    sched.run();
    expect(calls).toBe(1n);
    expect(rxMem.origin).toBe('received on host:socketpair#1/server');
    closeAll([rxMem, rxCall, mem, call, fe, be]);
    noLeaks(ns.registry);
  });

  it('one end of a socketpair, passed over a connection, becomes the back-end channel (SET_SLAVE_REQ_FD)', () => {
    const { sched, ns } = world(1);
    const [fe, be] = ns.socketpair();
    const [feSide, beSide] = ns.socketpair(); // the front-end keeps feSide and sends beSide
    const feHeard = new Recorder(feSide, sched);
    let backChannel: SocketFd | undefined;
    be.onData((_, fds) => {
      const fd = fds[0];
      if (fd?.kind !== 'socket') throw new Error('expected a socket fd');
      backChannel = fd;
    });
    fe.send(bytesOf(21), [beSide]);
    beSide.close();
    sched.run();
    const chan: Channel = backChannel!;
    expect(chan.send(bytesOf(0x55))).toBeUndefined();
    sched.run();
    expect([...feHeard.bytes]).toEqual([0x55]);
    chan.close();
    sched.run();
    expect(feHeard.closed?.info.reason).toBe('eof');
    closeAll([feSide, fe, be]);
    noLeaks(ns.registry);
  });

  it('property: no handle leaks whatever is sent, dropped in flight or closed, once every owner closes what it holds', () => {
    const opArb = fc.record({
      at: fc.constantFrom(0, 0.1, 0.2, 0.3),
      from: fc.constantFrom<0 | 1>(0, 1),
      kind: fc.constantFrom('send', 'send', 'send', 'close'),
      fds: fc.array(fc.constantFrom('memfd', 'eventfd', 'socket'), { maxLength: 3 }),
      keep: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 20 }), faultsArb, fc.boolean(), fc.integer(), (ops, faults, cut, seed) => {
        const { sched, ns } = world(seed);
        const ends = ns.socketpair({ faults: { ...faults, cuts: cut ? [closeMidMessage('any', 3, 2)] : [] } });
        const held: { close(): void }[] = [...ends];
        for (const end of ends) {
          end.onData((_, fds) => {
            for (const fd of fds) fd.close();
          });
          end.onClose(() => end.close()); // what endpoint code does on EOF
        }
        for (const op of ops) {
          sched.at(op.at, () => {
            if (op.kind === 'close') return ends[op.from].close();
            const fds = op.fds.map((k) => {
              if (k === 'memfd') return ns.memfd('m', 8);
              if (k === 'eventfd') return ns.eventfd('e');
              const [mine, theirs] = ns.socketpair();
              held.push(mine);
              return theirs;
            });
            ends[op.from].send(bytesOf(1, 2, 3), fds);
            if (op.keep) held.push(...fds);
            else closeAll(fds);
          });
        }
        sched.run();
        closeAll(held);
        sched.run();
        noLeaks(ns.registry);
      }),
    );
  });
});

describe('scheduler integration', () => {
  it('delivery happens only through scheduler events (nothing is delivered synchronously)', () => {
    const sched = new Scheduler({ seed: 1, log: true });
    const ns = new SocketNamespace({ scheduler: sched });
    const [a, b] = ns.socketpair();
    const got: number[] = [];
    b.onData((c) => got.push(...c));
    a.send(bytesOf(1));
    expect(got).toEqual([]);
    sched.step();
    expect(got).toEqual([1]);
    expect(sched.log.map((e) => e.label)).toEqual(['host:socketpair#1 c→s']);
  });

  it('an exception in a reader surfaces from run with the delivery label, and the pipe keeps going', () => {
    const { sched, ns } = world(1);
    const [a, b] = ns.socketpair({ faults: { chunking: 'bytes' } });
    const got: number[] = [];
    b.onData((c) => {
      got.push(...c);
      if (c[0] === 2) throw new Error('decoder choked');
    });
    a.send(bytesOf(1, 2, 3));
    expect(() => sched.run()).toThrow(/host:socketpair#1 c→s.*decoder choked/);
    sched.run();
    expect(got).toEqual([1, 2, 3]);
  });
});
