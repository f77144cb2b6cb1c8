import { existsSync, writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TransportError } from '../errors.ts';
import { FdRegistry } from '../fd.ts';
import { MemFd } from '../memfd.ts';
import { Scheduler } from '../../sim/scheduler.ts';
import { openFdNumbers, setPollBackend, type PollBackend } from './libc.ts';
import { RealEventFd, RealFdRegistry, RealMemFd } from './real-fd.ts';
import { RealSocketFd, RealUnixListener, connectUnix, realSocketpair, type RealFd } from './unix-socket.ts';
import { Inbox, fdsOpenedSince, pattern, sameBytes, settle, skipReason, tempDir, waitFor } from './test-support.ts';

/** A vhost-user-shaped message: 12-byte header (request, flags 1, size) + payload. */
function vmsg(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, 1, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, 12);
  return out;
}

const BACKENDS: PollBackend[] = ['uv', 'timer'];

describe.skipIf(skipReason !== undefined)(`real AF_UNIX channel${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  describe.each(BACKENDS)('with the %s poll backend', (backend) => {
    let reg: RealFdRegistry;
    let before: number[];
    beforeAll(() => setPollBackend(backend));
    afterAll(() => setPollBackend(undefined));
    beforeEach(() => {
      reg = new RealFdRegistry('test');
      before = openFdNumbers();
    });
    afterEach(() => {
      expect(reg.describeOpen()).toEqual([]);
      expect(fdsOpenedSince(before)).toEqual([]);
    });

    it('carries many messages of many sizes in order', async () => {
      const [a, b] = realSocketpair({ registry: reg, framing: 'stream' });
      const inbox = new Inbox(b);
      const sizes = [1, 2, 3, 7, 12, 100, 1000, 4095, 4096, 4097, 65535, 65536, 65537, 200_000];
      const sent: Uint8Array[] = [];
      for (let i = 0; i < 300; i++) {
        const msg = pattern(i, sizes[i % sizes.length]);
        sent.push(msg);
        expect(a.send(msg)).toBeUndefined();
      }
      const total = sent.reduce((n, m) => n + m.length, 0);
      await waitFor(() => inbox.received === total, 5000, 'all bytes');
      const got = inbox.bytes();
      let off = 0;
      for (const m of sent) {
        expect(sameBytes(got.subarray(off, off + m.length), m)).toBe(true);
        off += m.length;
      }
      expect(a.stats.messagesSent).toBe(300);
      expect(b.stats.bytesReceived).toBe(total);
      a.close();
      b.close();
    });

    it('queues what the socket buffer cannot take, keeps order, and sends queued fds with their first byte', async () => {
      const [a, b] = realSocketpair({ registry: reg, framing: 'stream' });
      const big = pattern(1, 4 << 20);
      const e = RealEventFd.create(0, { registry: reg });
      expect(a.send(big)).toBeUndefined();
      expect(a.queuedBytes).toBeGreaterThan(0);
      // Queued behind the big one; the caller may close its handle at once.
      expect(a.send(pattern(2, 10), [e])).toBeUndefined();
      e.close();
      expect(a.stats.queued).toBe(2);
      const inbox = new Inbox(b, true);
      await waitFor(() => inbox.received === big.length + 10, 10_000, 'big message');
      expect(sameBytes(inbox.bytes().subarray(0, big.length), big)).toBe(true);
      const withFd = inbox.chunks.filter((c) => c.fds.length > 0);
      expect(withFd).toHaveLength(1);
      // the fd chunk begins exactly at the small message (the kernel stops after it)
      const start = inbox.chunks.slice(0, inbox.chunks.indexOf(withFd[0])).reduce((n, c) => n + c.bytes.length, 0);
      expect(start + withFd[0].bytes.length).toBe(big.length + 10);
      expect(withFd[0].fds[0].kind).toBe('eventfd');
      (withFd[0].fds[0] as RealEventFd).write(1);
      for (const f of inbox.fds()) f.close();
      expect(a.queuedBytes).toBe(0);
      a.close();
      b.close();
    });

    it('vhost-user framing hands fds over on the chunk that starts their message; stream framing cannot', async () => {
      for (const framing of ['vhost-user', 'stream'] as const) {
        const [a, b] = realSocketpair({ registry: reg, framing });
        const m = RealMemFd.create('region', 4096, reg);
        const first = vmsg(1, pattern(1, 40));
        const second = vmsg(5, pattern(2, 8));
        a.send(first);
        a.send(second, [m]);
        a.send(vmsg(3, new Uint8Array(0)));
        m.close();
        // All three are in the kernel before the reader starts.
        const inbox = new Inbox(b, true);
        await waitFor(() => inbox.received === first.length + second.length + 12, 2000, framing);
        let off = 0;
        let fdAt = -1;
        for (const c of inbox.chunks) {
          if (c.fds.length > 0) fdAt = off;
          off += c.bytes.length;
        }
        expect(fdAt).toBe(framing === 'vhost-user' ? first.length : 0);
        if (framing === 'vhost-user') expect(inbox.chunks.map((c) => c.bytes.length)).toEqual([12, 40, 12, 8, 12]);
        for (const f of inbox.fds()) f.close();
        a.close();
        b.close();
      }
    });

    it('reports the peer close after the data sent before it, then EPIPE on send', async () => {
      const [a, b] = realSocketpair({ registry: reg, framing: 'stream' });
      let localClose = 0;
      a.onClose(() => localClose++);
      a.send(pattern(1, 1000));
      a.send(pattern(2, 500));
      a.close();
      expect(a.send(pattern(3, 1))?.code).toBe('EBADF');
      const inbox = new Inbox(b);
      await waitFor(() => inbox.closed !== undefined, 2000, 'close');
      expect(inbox.closed).toEqual({ info: { reason: 'eof' }, bytesBefore: 1500 });
      expect(b.peerClosed).toBe(true);
      const err = b.send(pattern(4, 10));
      expect(err).toBeInstanceOf(TransportError);
      expect(err?.code).toBe('EPIPE');
      // a late listener still hears about it, once, from the event loop
      let late = 0;
      b.onClose(() => late++);
      expect(late).toBe(0);
      await settle(5);
      expect(late).toBe(1);
      expect(localClose).toBe(0);
      b.close();
    });

    it('a close with sends still queued delivers them first, refusing the peer meanwhile', async () => {
      const [a, b] = realSocketpair({ registry: reg, framing: 'stream' });
      const big = pattern(3, 2 << 20);
      a.send(big);
      expect(a.queuedBytes).toBeGreaterThan(0);
      a.close();
      expect(a.closed).toBe(true);
      expect(a.osFdOpen).toBe(true);
      expect(reg.describeOpen().filter((d) => d.endsWith(' closing'))).toHaveLength(1);
      expect(b.send(pattern(4, 10))?.code).toBe('EPIPE'); // as if a had gone already
      const inbox = new Inbox(b);
      await waitFor(() => inbox.closed !== undefined, 5000, 'eof after the queue');
      expect(inbox.closed).toEqual({ info: { reason: 'eof' }, bytesBefore: big.length });
      expect(sameBytes(inbox.bytes(), big)).toBe(true);
      expect(a.osFdOpen).toBe(false);
      b.close();
    });

    it("reports 'reset' when the peer closes with our data unread", async () => {
      const [a, b] = realSocketpair({ registry: reg, framing: 'stream' });
      const inbox = new Inbox(a);
      a.send(pattern(1, 100)); // b never reads this
      b.send(pattern(2, 10));
      await settle(5);
      b.close();
      await waitFor(() => inbox.closed !== undefined, 2000, 'reset');
      expect(inbox.closed).toEqual({ info: { reason: 'reset' }, bytesBefore: 10 });
      expect(a.send(pattern(3, 1))?.code).toBe('EPIPE');
      a.close();
    });

    it('with only a close listener, data waits for a reader and the close comes after it', async () => {
      const [a, b] = realSocketpair({ registry: reg, framing: 'stream' });
      let closed = 0;
      b.onClose(() => closed++);
      a.send(pattern(1, 10));
      a.close();
      await settle(10);
      expect(closed).toBe(0);
      const got: number[] = [];
      b.onData((chunk) => got.push(chunk.length));
      await waitFor(() => closed === 1, 2000, 'close after data');
      expect(got).toEqual([10]);
      b.close();

      const [c, d] = realSocketpair({ registry: reg });
      let dClosed = 0;
      d.onClose(() => dClosed++);
      c.close();
      await waitFor(() => dClosed === 1, 2000, 'close with nothing pending');
      d.close();
    });

    it('takes 8 fds per recvmsg by default (DPDK), more when asked; the kernel closes the rest', async () => {
      for (const maxRecvFds of [undefined, 16]) {
        const [a, b] = realSocketpair({ registry: reg, maxRecvFds });
        const efds = Array.from({ length: 9 }, () => RealEventFd.create(0, { registry: reg }));
        expect(a.send(vmsg(2, new Uint8Array(8)), efds)).toBeUndefined();
        for (const e of efds) e.close();
        const inbox = new Inbox(b, true);
        await waitFor(() => inbox.received === 20, 2000, 'message');
        expect(inbox.fds()).toHaveLength(maxRecvFds === undefined ? 8 : 9);
        expect(b.stats.ctrunc).toBe(maxRecvFds === undefined ? 1 : 0);
        for (const f of inbox.fds()) f.close();
        a.close();
        b.close();
      }
    });

    it('refuses bad sends with typed errors', () => {
      const [a, b] = realSocketpair({ registry: reg });
      const e = RealEventFd.create(0, { registry: reg });
      e.close();
      expect(a.send(new Uint8Array(1), [e])?.code).toBe('EBADF');
      const live = RealEventFd.create(0, { registry: reg });
      expect(a.send(new Uint8Array(0), [live])?.code).toBe('EINVAL');
      expect(a.send(new Uint8Array(0))).toBeUndefined();
      const modelFd = MemFd.create(new FdRegistry(new Scheduler({ seed: 1 })), 'model', 8);
      expect(a.send(new Uint8Array(1), [modelFd as unknown as RealFd])?.code).toBe('EINVAL');
      expect(a.send(new Uint8Array(1), Array(254).fill(live))?.code).toBe('EINVAL');
      expect(() => a.send('text' as unknown as Uint8Array)).toThrow(TypeError);
      live.close();
      a.close();
      b.close();
      expect(() => a.onData(() => {})).toThrow(TransportError);
    });

    it('a socket received over a socket is a working channel', async () => {
      const [a, b] = realSocketpair({ registry: reg });
      const [x, y] = realSocketpair({ registry: reg, framing: 'stream' });
      a.send(vmsg(17, new Uint8Array(0)), [y]);
      y.close();
      const inbox = new Inbox(b, true);
      await waitFor(() => inbox.fds().length === 1, 2000, 'socket fd');
      const got = inbox.fds()[0];
      expect(got).toBeInstanceOf(RealSocketFd);
      const ch = got as RealSocketFd;
      const replies = new Inbox(x);
      expect(ch.send(pattern(9, 33))).toBeUndefined();
      await waitFor(() => replies.received === 33, 2000, 'reply over the received socket');
      expect(replies.bytes()).toEqual(pattern(9, 33));
      ch.close();
      await waitFor(() => replies.closed !== undefined, 2000, 'close over the received socket');
      for (const c of [a, b, x]) c.close();
    });

    describe('paths', () => {
      let tmp: ReturnType<typeof tempDir>;
      beforeEach(() => {
        tmp = tempDir();
      });
      afterEach(() => tmp.cleanup());

      it('listens, accepts, and answers connect errors as the kernel does', async () => {
        const path = tmp.path('s.sock');
        expect((connectUnix(path) as TransportError).code).toBe('ENOENT');
        const accepted: RealSocketFd[] = [];
        const l = RealUnixListener.listen(path, (c) => accepted.push(c), { registry: reg });
        if (l instanceof TransportError) throw l;
        expect((RealUnixListener.listen(path, () => {}, { registry: reg }) as TransportError).code).toBe('EADDRINUSE');
        const c = connectUnix(path, { registry: reg });
        if (c instanceof TransportError) throw c;
        await waitFor(() => accepted.length === 1, 2000, 'accept');
        expect(l.accepted).toBe(1);
        // closed without unlink: the stale file refuses connections
        l.close();
        expect(existsSync(path)).toBe(true);
        expect((connectUnix(path) as TransportError).code).toBe('ECONNREFUSED');
        // a file that is not a socket refuses too
        writeFileSync(tmp.path('plain'), 'x');
        expect((connectUnix(tmp.path('plain')) as TransportError).code).toBe('ECONNREFUSED');
        const l2 = RealUnixListener.listen(tmp.path('t.sock'), () => {}, { registry: reg });
        if (l2 instanceof TransportError) throw l2;
        l2.close({ unlink: true });
        expect(existsSync(tmp.path('t.sock'))).toBe(false);
        expect((connectUnix('x'.repeat(108)) as TransportError).code).toBe('EINVAL');
        expect((connectUnix('') as TransportError).code).toBe('EINVAL');
        expect((RealUnixListener.listen(tmp.path('no/such/dir.sock'), () => {}) as TransportError).code).toBe('ENOENT');
        c.close();
        accepted[0].close();
      });
    });
  });
});
