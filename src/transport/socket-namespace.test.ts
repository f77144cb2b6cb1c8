import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Scheduler } from '../sim/scheduler.ts';
import { SocketNamespace, TransportError, Listener, closeAfter, type SocketFd, type ConnectCallback } from './index.ts';
import { world, Recorder, bytesOf } from './test-support.ts';

const PATH = '/tmp/vhost-net0.sock';

/** Connects and returns what the callback got, after running the scheduler. */
function connectNow(ns: SocketNamespace, sched: Scheduler, path = PATH): SocketFd | TransportError {
  let result: SocketFd | TransportError | undefined;
  ns.connect(path, (r) => (result = r));
  sched.run();
  if (result === undefined) throw new Error('connect callback never ran');
  return result;
}

function codeOf(r: unknown): string | undefined {
  return r instanceof TransportError ? r.code : undefined;
}

function mustListen(r: Listener | TransportError): Listener {
  if (r instanceof TransportError) throw r;
  return r;
}

describe('paths and errors', () => {
  it('ENOENT without a file, ECONNREFUSED with a stale one, success while listening', () => {
    const { sched, ns } = world(1);
    expect(codeOf(connectNow(ns, sched))).toBe('ENOENT');
    const l = mustListen(ns.listen(PATH, (s) => s.close()));
    const ok = connectNow(ns, sched);
    expect(codeOf(ok)).toBeUndefined();
    (ok as SocketFd).close();
    l.close(); // a killed server: the file stays
    expect(ns.exists(PATH)).toBe(true);
    expect(codeOf(connectNow(ns, sched))).toBe('ECONNREFUSED');
    expect(codeOf(ns.unlink(PATH))).toBeUndefined();
    expect(codeOf(connectNow(ns, sched))).toBe('ENOENT');
    expect(codeOf(ns.unlink(PATH))).toBe('ENOENT');
  });

  it('listen fails with EADDRINUSE on an existing path, live or stale, until it is unlinked', () => {
    const { ns } = world(1);
    const l = mustListen(ns.listen(PATH, () => {}));
    expect(codeOf(ns.listen(PATH, () => {}))).toBe('EADDRINUSE');
    l.close();
    expect(codeOf(ns.listen(PATH, () => {}))).toBe('EADDRINUSE');
    ns.unlink(PATH);
    expect(ns.listen(PATH, () => {})).toBeInstanceOf(Listener);
  });

  it('a listener closed with unlink removes its file; a graceful restart can listen again at once', () => {
    const { sched, ns } = world(1);
    const l = mustListen(ns.listen(PATH, () => {}));
    l.close({ unlink: true });
    expect(ns.exists(PATH)).toBe(false);
    expect(ns.paths()).toEqual([]);
    expect(codeOf(connectNow(ns, sched))).toBe('ENOENT');
    expect(ns.listen(PATH, () => {})).toBeInstanceOf(Listener);
  });

  it('unlink removes whatever is at the path now, even a newer listener’s file (as unlink(2) does)', () => {
    const { sched, ns } = world(1);
    const old = mustListen(ns.listen(PATH, () => {}));
    ns.unlink(PATH);
    const fresh = mustListen(ns.listen(PATH, (s) => s.close()));
    old.close({ unlink: true });
    expect(ns.exists(PATH)).toBe(false);
    expect(fresh.closed).toBe(false);
    expect(codeOf(connectNow(ns, sched))).toBe('ENOENT');
  });

  it('refuses empty and over-long paths (sun_path is 108 bytes)', () => {
    const { sched, ns } = world(1);
    expect(codeOf(ns.listen('', () => {}))).toBe('EINVAL');
    expect(codeOf(ns.listen('/' + 'x'.repeat(107), () => {}))).toBe('EINVAL');
    expect(ns.listen('/' + 'x'.repeat(106), () => {})).toBeInstanceOf(Listener);
    expect(codeOf(connectNow(ns, sched, '/' + 'y'.repeat(200)))).toBe('EINVAL');
  });
});

describe('connecting', () => {
  it('is asynchronous: the client callback and the server accept are scheduled events after their delays', () => {
    const { sched, ns } = world(1, { connectDelay: 0.1, acceptDelay: 0.3 });
    const log: string[] = [];
    mustListen(ns.listen(PATH, (s) => log.push(`accept@${sched.now} ${s.role} ${s.peer}`)));
    ns.connect(PATH, (r) => log.push(`connected@${sched.now} ${(r as SocketFd).id}`));
    expect(log).toEqual([]);
    sched.run();
    expect(log).toEqual([`connected@0.1 host:${PATH}#1/client`, `accept@0.3 server host:${PATH}#1/client`]);
  });

  it('failures are reported through the scheduler too', () => {
    const { sched, ns } = world(1, { connectDelay: 0.5 });
    let got: string | undefined;
    ns.connect(PATH, (r) => (got = `${codeOf(r)}@${sched.now}`));
    expect(got).toBeUndefined();
    sched.run();
    expect(got).toBe('ENOENT@0.5');
  });

  it('data the client sends before the accept waits for the server’s reader', () => {
    const { sched, ns } = world(1, { acceptDelay: 2 });
    let rec: Recorder | undefined;
    mustListen(ns.listen(PATH, (s) => (rec = new Recorder(s, sched))));
    ns.connect(PATH, (r) => {
      (r as SocketFd).send(bytesOf(1, 2, 3));
      (r as SocketFd).close();
    });
    sched.run();
    expect([...rec!.bytes]).toEqual([1, 2, 3]);
    expect(rec!.chunks[0].t).toBe(2);
    expect(rec!.closed?.info.reason).toBe('eof');
  });

  it('connections not yet accepted when the listener closes are reset; the client sees it', () => {
    const { sched, ns } = world(1, { acceptDelay: 5 });
    const l = mustListen(ns.listen(PATH, () => {
      throw new Error('must not be accepted');
    }));
    let client: SocketFd | undefined;
    ns.connect(PATH, (r) => (client = r as SocketFd));
    sched.run({ until: 1 });
    expect(l.backlog).toBe(1);
    const rec = new Recorder(client!, sched);
    l.close();
    sched.run();
    expect(rec.closed?.info.reason).toBe('reset');
    expect(l.accepted).toBe(0);
    expect(client!.send(bytesOf(1))?.code).toBe('EPIPE');
    client!.close();
    expect(ns.openHandles()).toEqual([]);
  });

  it('cancel() before the callback drops the attempt; a connection already made is closed', () => {
    const { sched, ns } = world(1, { connectDelay: 1 });
    let serverSide: Recorder | undefined;
    mustListen(ns.listen(PATH, (s) => (serverSide = new Recorder(s, sched))));
    let called = false;
    const p = ns.connect(PATH, () => (called = true));
    sched.run({ until: 0.5 });
    expect(p.settled).toBe(false);
    expect(p.cancel()).toBe(true);
    expect(p.cancel()).toBe(false);
    sched.run();
    expect(called).toBe(false);
    expect(serverSide?.closed?.info.reason).toBe('eof');
    serverSide!.ch.close();
    expect(ns.openHandles()).toEqual([]);
    const q = ns.connect('/nowhere', () => {});
    sched.run();
    expect(q.settled).toBe(true);
    expect(q.cancel()).toBe(false);
  });

  it('property: the same seed gives the same connect/accept timeline under random delays', () => {
    fc.assert(
      fc.property(fc.integer(), fc.array(fc.constantFrom(0, 0.5, 1, 2), { minLength: 1, maxLength: 6 }), (seed, starts) => {
        const timeline = () => {
          const { sched, ns } = world(seed, { connectDelay: { min: 0, max: 1 }, acceptDelay: { min: 0, max: 1 }, faults: { delay: { min: 0, max: 0.1 }, chunking: 'random' } });
          const log: string[] = [];
          mustListen(ns.listen(PATH, (s) => {
            log.push(`accept ${s.id}@${sched.now}`);
            s.onData((c) => log.push(`data ${s.id} ${c.length}@${sched.now}`));
          }));
          for (const t of starts) sched.at(t, () => ns.connect(PATH, (r) => {
            log.push(`conn ${(r as SocketFd).id}@${sched.now}`);
            (r as SocketFd).send(new Uint8Array(16));
          }));
          sched.run();
          return log;
        };
        expect(timeline()).toEqual(timeline());
      }),
    );
  });
});

describe('reconnect loops built on connect', () => {
  it("DPDK's client mode: retry every second until the server appears (ENOENT, then ECONNREFUSED on a stale file)", () => {
    const { sched, ns } = world(1);
    const attempts: string[] = [];
    let session: SocketFd | undefined;
    const attempt = () =>
      ns.connect(PATH, (r) => {
        attempts.push(`${codeOf(r) ?? 'ok'}@${sched.now}`);
        if (r instanceof TransportError) sched.after(1, attempt, 'vhost_reconn');
        else session = r;
      });
    attempt();
    sched.at(1.5, () => {
      // A server that died before: its file is there, nobody listens.
      mustListen(ns.listen(PATH, () => {})).close();
    });
    let accepted = 0;
    sched.at(3.5, () => {
      ns.unlink(PATH);
      mustListen(ns.listen(PATH, () => accepted++));
    });
    sched.run({ until: 10 });
    expect(attempts).toEqual(['ENOENT@0', 'ENOENT@1', 'ECONNREFUSED@2', 'ECONNREFUSED@3', 'ok@4']);
    expect(session?.closed).toBe(false);
    expect(accepted).toBe(1);
  });

  it('QEMU reconnect=N: after the back-end goes away the client reconnects N seconds later and a new session starts', () => {
    const { sched, ns } = world(1);
    const sessions: string[] = [];
    const RECONNECT = 2;
    const connect = () =>
      ns.connect(PATH, (r) => {
        if (r instanceof TransportError) return void sched.after(RECONNECT, connect, 'qemu reconnect');
        sessions.push(`open@${sched.now}`);
        r.onData(() => {});
        r.onClose(() => {
          sessions.push(`closed@${sched.now}`);
          r.close();
          sched.after(RECONNECT, connect, 'qemu reconnect');
        });
      });
    // The back-end listens, is killed at t=3 (file left behind), and relaunched at t=6.
    let live: SocketFd[] = [];
    const launch = () => mustListen(ns.listen(PATH, (s) => live.push(s)));
    let backend = launch();
    sched.at(3, () => {
      for (const s of live) s.close();
      live = [];
      backend.close();
    });
    sched.at(6, () => {
      ns.unlink(PATH);
      backend = launch();
    });
    connect();
    sched.run({ until: 20 });
    expect(sessions).toEqual(['open@0', 'closed@3', 'open@7']);
  });
});

describe('fault policy', () => {
  it('a namespace policy chooses faults per connection; connect options override it', () => {
    const { sched, ns } = world(1, { faults: (info) => (info.pathIndex === 1 ? { cuts: [closeAfter('client', 1)] } : undefined) });
    const recs: Recorder[] = [];
    mustListen(ns.listen(PATH, (s) => recs.push(new Recorder(s, sched))));
    const clients: SocketFd[] = [];
    const cb: ConnectCallback = (r) => {
      const c = r as SocketFd;
      clients.push(c);
      c.send(bytesOf(1));
      c.send(bytesOf(2));
    };
    ns.connect(PATH, cb);
    sched.run();
    ns.connect(PATH, cb);
    sched.run();
    ns.connect(PATH, cb, { faults: { cuts: [closeAfter('client', 2)] } });
    sched.run();
    expect(recs.map((r) => [...r.bytes])).toEqual([[1], [1, 2], [1, 2]]);
    expect(recs.map((r) => r.closed?.info.reason)).toEqual(['eof', undefined, 'eof']);
    expect(clients.map((c) => c.connection.info.pathIndex)).toEqual([1, 2, 3]);
  });

  it('socketpairs take the namespace policy too, as kind "socketpair"', () => {
    const kinds: string[] = [];
    const { ns } = world(1, { faults: (info) => (kinds.push(info.kind), undefined) });
    ns.socketpair();
    expect(kinds).toEqual(['socketpair']);
  });
});

describe('leaks', () => {
  it('property: no handle leaks over connect / send-fds / close cycles, whoever closes first', () => {
    const cycleArb = fc.record({
      fds: fc.array(fc.constantFrom('memfd', 'eventfd'), { maxLength: 4 }),
      closer: fc.constantFrom('client', 'server', 'both'),
      closeAt: fc.constantFrom(0, 0.05, 0.2),
    });
    fc.assert(
      fc.property(fc.array(cycleArb, { minLength: 1, maxLength: 6 }), fc.integer(), (cycles, seed) => {
        const { sched, ns } = world(seed, { faults: { delay: { min: 0, max: 0.1 }, chunking: 'random' } });
        let server: SocketFd | undefined;
        const listener = mustListen(ns.listen(PATH, (s) => {
          server = s;
          s.onData((_, fds) => fds.forEach((f) => f.close()));
          s.onClose(() => s.close());
        }));
        for (const cyc of cycles) {
          let client: SocketFd | undefined;
          ns.connect(PATH, (r) => (client = r as SocketFd));
          sched.run();
          client!.onData(() => {});
          client!.onClose(() => client!.close());
          const fds = cyc.fds.map((k) => (k === 'memfd' ? ns.memfd('region', 64) : ns.eventfd('kick')));
          client!.send(new Uint8Array(40), fds);
          fds.forEach((f) => f.close());
          sched.at(sched.now + cyc.closeAt, () => {
            if (cyc.closer !== 'server') client!.close();
            if (cyc.closer !== 'client') server!.close();
          });
          sched.run();
          expect(ns.registry.describeOpen()).toEqual([]);
        }
        listener.close({ unlink: true });
      }),
    );
  });
});
