import { describe, expect, it } from 'vitest';
import { Scheduler } from '../../sim/scheduler.ts';
import { SocketNamespace } from '../../transport/index.ts';
import { DescriptorChain } from '../../ring/types.ts';
import type { SplitDriver } from '../../ring/split/index.ts';
import { QemuFrontend } from '../frontend/qemu.ts';
import { DpdkBackend } from './backend.ts';
import { InflightSplitView } from './inflight.ts';
import { InflightTracker } from './inflight-tracker.ts';

// The tracker against the model device, driven by the model QEMU front-end in virtual time.

const PATH = 'run/blk.sock';

function up(opts: { fe: boolean; be: boolean }) {
  const sched = new Scheduler({ seed: 7 });
  const ns = new SocketNamespace({ scheduler: sched });
  const fe = new QemuFrontend({ ns, path: PATH, guestDriver: 'virtio-pmd', ramSize: 4 << 20, inflight: opts.fe });
  fe.start();
  const connect = () => {
    const be = new DpdkBackend({ ns, path: PATH, profile: { client: true, inflight: opts.be } });
    be.start();
    sched.run({ until: sched.now + 60, stopWhen: () => be.events.some((e) => e.kind === 'ready') && fe.phase === 'running' });
    expect(fe.phase).toBe('running');
    return be;
  };
  const be = connect();
  const driver = fe.guest.vring(0).driver as SplitDriver<unknown>;
  const post = (n: number) => {
    const area = fe.guest.bufferArea();
    for (let i = 0; i < n; i++) driver.add([{ addr: area.gpa + 0x1000 + 64 * i, len: 64, writable: true }], i);
    driver.publish();
  };
  return { sched, fe, be, connect, post, driver };
}

function region(t: InflightTracker): InflightSplitView {
  return t.ring.inflight!.view as InflightSplitView;
}

describe('InflightTracker (split)', () => {
  it('is absent unless both sides use inflight tracking', () => {
    for (const o of [
      { fe: false, be: false },
      { fe: false, be: true },
      { fe: true, be: false },
    ]) {
      const r = up(o);
      expect(r.be.vring(0)!.inflight, JSON.stringify(o)).toBeUndefined();
      expect(InflightTracker.for(r.be.vring(0)!)).toBeUndefined();
    }
    const r = up({ fe: true, be: true });
    expect(InflightTracker.for(r.be.vring(0)!)).toBeInstanceOf(InflightTracker);
  });

  it('pop marks the head inflight with the next counter; complete sets last_inflight_io, publishes, clears, and copies used_idx', () => {
    const r = up({ fe: true, be: true });
    r.post(3);
    const t = InflightTracker.for(r.be.vring(0)!)!;
    const v = region(t);
    expect(v.version).toBe(1);
    const chain = new DescriptorChain(8);
    const heads: number[] = [];
    for (let i = 0; i < 3; i++) {
      expect(t.pop(chain)).toBe(true);
      heads.push(chain.id);
    }
    expect(heads.map((h) => [v.inflight(h), v.counter(h)])).toEqual([
      [1, 0n],
      [1, 1n],
      [1, 2n],
    ]);
    t.complete(heads[0]!, 64);
    expect(v.lastInflightIo).toBe(heads[0]);
    expect(v.inflight(heads[0]!)).toBe(0);
    expect(v.usedIdx).toBe(1);
    expect(r.fe.guest.usedIdx(0)).toBe(1);
    expect(t.inflightHeads().sort()).toEqual([heads[1]!, heads[2]!].sort());
  });

  it('after a reconnect the resubmit list comes oldest first (counter order, not head order), once', () => {
    const r = up({ fe: true, be: true });
    r.post(4);
    const t = InflightTracker.for(r.be.vring(0)!)!;
    const chain = new DescriptorChain(8);
    const heads: number[] = [];
    for (let i = 0; i < 3; i++) {
      expect(r.be.vring(0)!.pop(chain)).toBe(true);
      heads.push(chain.id);
    }
    // the application may record its chains in any order; the counters decide
    const order = [heads[2]!, heads[0]!, heads[1]!];
    for (const h of order) t.markPopped(h);
    r.be.kill();
    const be2 = r.connect();
    const t2 = InflightTracker.for(be2.vring(0)!)!;
    const list = t2.resubmit();
    expect(list.map((d) => d.index)).toEqual(order);
    expect(list.map((d) => d.counter)).toEqual([0n, 1n, 2n]);
    expect(t2.resubmit()).toEqual([]);
    // new counters continue after the highest resubmitted one
    expect(t2.pop(chain)).toBe(true);
    expect(region(t2).counter(chain.id)).toBe(3n);
  });

  it('a completion torn after used->idx and before the clear is not resubmitted (the kick-time check clears it)', () => {
    const r = up({ fe: true, be: true });
    r.post(2);
    const t = InflightTracker.for(r.be.vring(0)!)!;
    const chain = new DescriptorChain(8);
    t.pop(chain);
    const a = chain.id;
    t.pop(chain);
    const b = chain.id;
    t.setLastInflightIo(a);
    t.ring.device.push(a, 64);
    t.ring.notify();
    expect(t.inflightHeads().sort()).toEqual([a, b].sort());
    r.be.kill();
    const t2 = InflightTracker.for(r.connect().vring(0)!)!;
    expect(t2.resubmit().map((d) => d.index)).toEqual([b]);
    expect(region(t2).usedIdx).toBe(1);
  });

  it('refuses heads outside the area', () => {
    const r = up({ fe: true, be: true });
    const t = InflightTracker.for(r.be.vring(0)!)!;
    const q = r.fe.cfg.queueSize;
    expect(() => t.markPopped(q)).toThrow(RangeError);
    expect(() => t.clearInflight(-1, 0)).toThrow(RangeError);
    expect(() => t.setLastInflightIo(1.5)).toThrow(RangeError);
  });
});
