import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import { Scheduler } from '../sim/scheduler.ts';
import { FdRegistry, EventFd, EVENTFD_MAX, eventfdCounter, eventfdAdd, eventfdTake, eventfdPeek } from './index.ts';

function setup(): { sched: Scheduler; reg: FdRegistry } {
  const sched = new Scheduler({ seed: 1 });
  return { sched, reg: new FdRegistry(sched) };
}

/** Runs inline JS in a worker with `shared` as workerData; resolves with its first message or on exit. */
function runWorker(code: string, shared: SharedArrayBuffer, onOnline?: (w: Worker) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: shared });
    let answer: unknown;
    w.on('message', (m) => {
      if (m === 'ready') onOnline?.(w);
      else answer = m;
    });
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 ? resolve(answer) : reject(new Error(`worker exit ${code}`))));
  });
}

/** The documented counter protocol, written again in plain JS as another thread would. */
const WORKER_PRELUDE = `
const { workerData, parentPort } = require('node:worker_threads');
const c = new BigInt64Array(workerData, 0, 1);
function add(n) {
  for (;;) {
    const cur = Atomics.load(c, 0);
    if (BigInt.asUintN(64, cur) + n > 0xfffffffffffffffen) return false;
    if (Atomics.compareExchange(c, 0, cur, BigInt.asIntN(64, BigInt.asUintN(64, cur) + n)) === cur) { Atomics.notify(c, 0); return true; }
  }
}
`;

describe('EventFd counter', () => {
  it('property: writes accumulate, read returns the sum and clears, poll tells non-zero', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.bigInt({ min: 0n, max: 1n << 40n }), { maxLength: 5 }), { maxLength: 8 }), (bursts) => {
        const { reg } = setup();
        const e = EventFd.create(reg, 'kick');
        for (const burst of bursts) {
          let sum = 0n;
          for (const n of burst) {
            e.write(n);
            sum += n;
          }
          expect(e.poll()).toBe(sum !== 0n);
          expect(e.read()).toBe(sum);
          expect(e.poll()).toBe(false);
          expect(e.read()).toBe(0n);
        }
      }),
    );
  });

  it('write() defaults to 1; dup handles share the counter', () => {
    const { reg } = setup();
    const a = EventFd.create(reg, 'call', 2n);
    const b = a.dup();
    a.write();
    b.write(3);
    expect(b.read()).toBe(6n);
    expect(a.read()).toBe(0n);
  });

  it('holds up to 2^64-2; an overflowing write fails with EAGAIN and changes nothing; bad values are EINVAL', () => {
    const { reg } = setup();
    const e = EventFd.create(reg, 'big', EVENTFD_MAX - 1n);
    e.write(1n);
    expect(() => e.write(1n)).toThrow(/EAGAIN/);
    expect(e.read()).toBe(EVENTFD_MAX);
    expect(() => e.write(-1n)).toThrow(/EINVAL/);
    expect(() => e.write(EVENTFD_MAX + 1n)).toThrow(/EINVAL/);
  });

  it('the raw helpers agree with the handle', () => {
    const { reg } = setup();
    const e = EventFd.create(reg, 'raw');
    const c = eventfdCounter(e.shared);
    expect(eventfdAdd(c, 5n)).toBe(true);
    expect(eventfdPeek(c)).toBe(5n);
    e.write(2n);
    expect(eventfdTake(c)).toBe(7n);
    expect(e.poll()).toBe(false);
  });
});

describe('EventFd signals through the scheduler', () => {
  it('onSignal runs as an event after a write, not during it, and writes before it runs coalesce', () => {
    const { sched, reg } = setup();
    const tx = EventFd.create(reg, 'kick0');
    const rx = tx.dup();
    const seen: bigint[] = [];
    rx.onSignal(() => seen.push(rx.read()));
    tx.write();
    tx.write(2n);
    expect(seen).toEqual([]);
    sched.run();
    expect(seen).toEqual([3n]);
    tx.write();
    sched.run();
    expect(seen).toEqual([3n, 1n]);
  });

  it('writing 0 signals nobody; unsubscribing and closing the handle stop signals', () => {
    const { sched, reg } = setup();
    const e = EventFd.create(reg, 'call0');
    const other = e.dup();
    let a = 0;
    let b = 0;
    const off = e.onSignal(() => a++);
    other.onSignal(() => b++);
    e.write(0n);
    sched.run();
    expect([a, b]).toEqual([0, 0]);
    e.write();
    off();
    sched.run();
    expect(a).toBe(0); // unsubscribed before the event ran
    expect(b).toBe(1);
    other.close();
    e.write();
    sched.run();
    expect(b).toBe(1);
  });

  it('every listener on the object is signalled, whichever handle wrote', () => {
    const { sched, reg } = setup();
    const e = EventFd.create(reg, 'x');
    const d1 = e.dup();
    const d2 = e.dup();
    const hits: string[] = [];
    d1.onSignal(() => hits.push('d1'));
    d2.onSignal(() => hits.push('d2'));
    e.write();
    sched.run();
    expect(hits.sort()).toEqual(['d1', 'd2']);
  });
});

describe('EventFd across worker threads', () => {
  it('writes from a worker and from the main thread all count (atomic add)', { timeout: 20_000 }, async () => {
    const { reg } = setup();
    const e = EventFd.create(reg, 'mt');
    const done = runWorker(WORKER_PRELUDE + `for (let i = 0; i < 20000; i++) add(1n);`, e.shared);
    for (let i = 0; i < 20000; i++) e.write();
    await done;
    expect(e.read()).toBe(40000n);
  });

  it('a worker blocked in Atomics.wait wakes on a main-thread write and reads the count', { timeout: 20_000 }, async () => {
    const { reg } = setup();
    const e = EventFd.create(reg, 'kick');
    const code =
      WORKER_PRELUDE +
      `parentPort.postMessage('ready');
       // 10 s is only a liveness bound; the value checked is what makes the test pass.
       while (Atomics.load(c, 0) === 0n) { if (Atomics.wait(c, 0, 0n, 10000) === 'timed-out') break; }
       parentPort.postMessage(BigInt.asUintN(64, Atomics.exchange(c, 0, 0n)));`;
    const value = await runWorker(code, e.shared, () => e.write(7n));
    expect(value).toBe(7n);
    expect(e.poll()).toBe(false);
  });

  it('the main thread sees a worker write (Atomics.wait only bounds the wait)', { timeout: 20_000 }, async () => {
    const { reg } = setup();
    const e = EventFd.create(reg, 'call');
    const code = WORKER_PRELUDE + `parentPort.once('message', () => { add(3n); parentPort.close(); }); parentPort.postMessage('ready');`;
    const done = runWorker(code, e.shared, (w) => {
      w.postMessage('go');
      Atomics.wait(eventfdCounter(e.shared), 0, 0n, 10000);
    });
    await done;
    expect(e.read()).toBe(3n);
  });
});
