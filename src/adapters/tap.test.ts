import { existsSync, readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeTraceRecords } from '../cli/trace-decode.ts';
import { isEventRecord, isMessageRecord, parseTrace, type TraceRecord } from '../sim/trace.ts';
import { TransportError } from '../transport/errors.ts';
import { RealFdRegistry, RealMemFd, RealUnixListener, connectUnix, openFdNumbers, type RealFd, type RealSocketFd } from '../transport/real/index.ts';
import { fdsOpenedSince, settle, skipReason, tempDir, waitFor } from '../transport/real/test-support.ts';
import { VhostUserTap } from './tap.ts';

/** A vhost-user message: header (request, flags, size) + payload. */
function vmsg(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, 12);
  return out;
}
const u64 = (v: bigint): Uint8Array => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};
/** SET_MEM_TABLE payload with one region (gpa, size, uva, offset). */
function memTable(size: number): Uint8Array {
  const b = new Uint8Array(8 + 32);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 1, true);
  dv.setBigUint64(8, 0x100000n, true);
  dv.setBigUint64(16, BigInt(size), true);
  dv.setBigUint64(24, 0x7f0000000000n, true);
  dv.setBigUint64(32, 0n, true);
  return b;
}

/** One end's received messages (chunks joined) and fds (kept open until the test closes them). */
class Peer {
  bytes: number[] = [];
  fds: RealFd[] = [];
  closed = false;
  constructor(readonly ch: RealSocketFd) {
    ch.onData((chunk, fds) => {
      this.bytes.push(...chunk);
      this.fds.push(...fds);
    });
    ch.onClose(() => (this.closed = true));
  }
  release(): void {
    for (const f of this.fds) f.close();
    this.ch.close();
  }
}

describe.skipIf(skipReason !== undefined)(`vhost-user tap${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let reg: RealFdRegistry;
  let before: number[];
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => {
    reg = new RealFdRegistry('tap-test');
    before = openFdNumbers();
    dir = tempDir('vhostsim-tap-');
  });
  afterEach(() => {
    dir.cleanup();
    expect(reg.describeOpen()).toEqual([]);
    expect(fdsOpenedSince(before)).toEqual([]);
  });

  it('relays messages with fds both ways, records them, and follows reconnects', async () => {
    const sockF = dir.path('f.sock');
    const sockB = dir.path('b.sock');
    const out = dir.path('trace.jsonl');
    // The real front-end listens; every connection it accepts is a "front-end side".
    const frontSides: Peer[] = [];
    const fe = RealUnixListener.listen(sockF, (ch) => frontSides.push(new Peer(ch)), { registry: reg });
    if (fe instanceof TransportError) throw fe;
    const records: TraceRecord[] = [];
    const tap = VhostUserTap.start({ frontend: sockF, listen: sockB, out, registry: reg, onRecord: (r) => records.push(r) });
    if (tap instanceof TransportError) throw tap;
    try {
      // Session 1: the back-end connects to the tap; the tap connects to the front-end.
      const b1 = connectUnix(sockB, { registry: reg });
      if (b1 instanceof TransportError) throw b1;
      const back1 = new Peer(b1);
      await waitFor(() => frontSides.length === 1, 3000, 'tap connects to the front-end');
      const f1 = frontSides[0]!;

      // f2b: GET_FEATURES, then SET_MEM_TABLE with a memfd; b2f: the GET_FEATURES reply.
      const mem = RealMemFd.create('tap-test-guest', 4096, reg);
      const w = mem.map(0, 4096, 'writer');
      w.bytes()[0] = 0xab;
      w.release();
      expect(f1.ch.send(vmsg(1, 1, new Uint8Array()))).toBeUndefined();
      expect(f1.ch.send(vmsg(5, 1 | 8, memTable(4096)), [mem])).toBeUndefined();
      mem.close();
      await waitFor(() => back1.fds.length === 1 && back1.bytes.length === 12 + 12 + 40, 3000, 'messages at the back-end');
      expect(b1.send(vmsg(1, 1 | 4, u64(0x140008000n)))).toBeUndefined();
      await waitFor(() => f1.bytes.length === 20, 3000, 'reply at the front-end');

      // The memfd crossed the tap: same file, its contents visible to the receiver.
      const got = back1.fds[0]!;
      expect(got.kind).toBe('memfd');
      expect(got.target()).toMatch(/^\/memfd:tap-test-guest/);
      const m = (got as RealMemFd).map(0, 4096, 'reader');
      expect(m.bytes()[0]).toBe(0xab);
      m.release();
      expect(tap.messages).toBe(3);

      // The back-end quits: the tap closes the front-end side too.
      back1.release();
      await waitFor(() => f1.closed, 3000, 'front-end sees the close');
      f1.release();
      expect(tap.openSessions).toBe(0);

      // Session 2: the relaunched back-end gets a fresh connection to the front-end.
      const b2 = connectUnix(sockB, { registry: reg });
      if (b2 instanceof TransportError) throw b2;
      const back2 = new Peer(b2);
      await waitFor(() => frontSides.length === 2, 3000, 'second front-end connection');
      const f2 = frontSides[1]!;
      expect(f2.ch.send(vmsg(18, 1, new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0])))).toBeUndefined();
      await waitFor(() => back2.bytes.length === 20, 3000, 'SET_VRING_ENABLE at the back-end');
      // This time the front-end goes first.
      f2.release();
      await waitFor(() => back2.closed, 3000, 'back-end sees the close');
      back2.release();
      await settle();
    } finally {
      tap.stop();
      fe.close({ unlink: true });
    }
    expect(existsSync(sockB)).toBe(false);

    // The file holds what onRecord saw, and reads back as a valid trace.
    const trace = parseTrace(readFileSync(out, 'utf8'));
    expect(trace).toEqual(records);
    const shape = trace.map((r) => (isEventRecord(r) ? `${r.event} ${r.n}` : `${r.dir} ${r.request} ${r.flags} ${r.size} ${r.nfds}`));
    expect(shape).toEqual(['session 1', 'f2b 1 1 0 0', 'f2b 5 9 40 1', 'b2f 1 5 8 0', 'closed 1', 'session 2', 'f2b 18 1 8 0', 'closed 2']);
    const msgs = trace.filter(isMessageRecord);
    expect(msgs[2]!.payload).toBe('0080004001000000');
    expect(msgs[1]!.payload.slice(0, 16)).toBe('0100000000000000');
    // Times are seconds since the tap started, in order.
    const ts = trace.map((r) => r.t);
    expect([...ts].sort((a, b) => a - b)).toEqual(ts);
    expect(ts.at(-1)!).toBeLessThan(30);
    // Extra fields: who closed, which session a message belongs to.
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[4]).toMatchObject({ event: 'closed', n: 1, by: 'backend' });
    expect(lines[7]).toMatchObject({ event: 'closed', n: 2, by: 'frontend' });
    expect(lines[6]).toMatchObject({ session: 2 });
    // Every record decodes.
    const decoded = decodeTraceRecords(trace);
    expect(decoded.filter((l) => l.includes('!'))).toEqual([]);
    expect(decoded[2]).toContain('SET_MEM_TABLE');
  });

  it('drops a back-end when the front-end is not listening, and keeps listening', async () => {
    const warnings: string[] = [];
    const tap = VhostUserTap.start({ frontend: dir.path('nobody.sock'), listen: dir.path('b.sock'), registry: reg, onWarning: (w) => warnings.push(w) });
    if (tap instanceof TransportError) throw tap;
    try {
      const b = connectUnix(dir.path('b.sock'), { registry: reg });
      if (b instanceof TransportError) throw b;
      const peer = new Peer(b);
      await waitFor(() => peer.closed, 3000, 'back-end dropped');
      peer.release();
      expect(tap.sessions).toBe(0);
      expect(warnings[0]).toMatch(/front-end is not reachable/);
    } finally {
      tap.stop();
    }
  });

  it('stop() closes open pairs and records them as closed by the tap', async () => {
    const frontSides: Peer[] = [];
    const fe = RealUnixListener.listen(dir.path('f.sock'), (ch) => frontSides.push(new Peer(ch)), { registry: reg });
    if (fe instanceof TransportError) throw fe;
    const records: Array<[TraceRecord, Readonly<Record<string, unknown>>]> = [];
    const tap = VhostUserTap.start({ frontend: dir.path('f.sock'), listen: dir.path('b.sock'), registry: reg, onRecord: (r, x) => records.push([r, x]) });
    if (tap instanceof TransportError) throw tap;
    const b = connectUnix(dir.path('b.sock'), { registry: reg });
    if (b instanceof TransportError) throw b;
    const back = new Peer(b);
    await waitFor(() => frontSides.length === 1, 3000, 'pair up');
    tap.stop();
    await waitFor(() => back.closed && frontSides[0]!.closed, 3000, 'both peers see the close');
    back.release();
    frontSides[0]!.release();
    fe.close({ unlink: true });
    expect(records.map(([r, x]) => ({ ...r, ...x, t: 0 }))).toEqual([
      { t: 0, event: 'session', n: 1 },
      { t: 0, event: 'closed', n: 1, by: 'tap' },
    ]);
  });
});
