/**
 * The per-event checks (src/sim/monitors.ts) report the event that broke a rule, not the end of
 * the run. Each hostile test corrupts a ring in guest memory from a scheduled event of its own in
 * the middle of a run and puts the bytes back in the next event, so the ring is sound again long
 * before the run ends: a check made only at the end would see nothing, and one made late would
 * name another event.
 */
import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from '../memory/index.ts';
import { FeaturesMonitor, type EventAt, type RunMonitors } from './monitors.ts';
import { parseScenario, type Scenario } from './scenario.ts';
import { runScenario, type RunOptions } from './runner.ts';
import { Scheduler, SchedulerEventError, type EventHandle } from './scheduler.ts';
import type { Topology } from './topology.ts';

function pvp(ring: 'split' | 'packed'): Scenario {
  return parseScenario({
    name: `monitor ${ring}`,
    seed: 7,
    ring,
    topology: 'pvp',
    vms: 1,
    queues: 1,
    queueSize: 256,
    frontend: 'qemu-7.2',
    backend: 'dpdk-22.11',
    guest: 'virtio-pmd',
    steps: [
      { op: 'launch-backend' },
      { op: 'start-forwarding', side: 'host', fwd: 'mac' },
      { op: 'launch-vm', vm: 0 },
      { op: 'start-forwarding', side: 'guest', vm: 0, fwd: 'mac' },
      { op: 'traffic', seconds: 1 },
      { op: 'expect', what: 'traffic-flows' },
      { op: 'traffic', seconds: 1 },
      { op: 'expect', what: 'traffic-flows' },
    ],
  });
}

type Run = { sched: Scheduler; topo: Topology; monitors: RunMonitors };

/**
 * Schedules `poke` once vm0's TX ring (vring 1) has carried traffic, after `from` seconds; it
 * returns the restore, run in an event of its own right after. Gives back where the poke ran.
 */
function pokeOnce(from: number, label: string, poke: (r: Run) => (() => void) | undefined): { inject: RunOptions['inject']; done: { t: number; seq: number } | undefined } {
  const out: { inject: RunOptions['inject']; done: { t: number; seq: number } | undefined } = { inject: undefined, done: undefined };
  out.inject = (r) => {
    let handle: EventHandle;
    const attempt = (): void => {
      const w = r.monitors.rings.watch(0, 1);
      const restore = w && w.usedSeen > 16 ? poke(r) : undefined;
      if (!restore) {
        handle = r.sched.after(0.01, attempt, label);
        return;
      }
      out.done = { t: r.sched.now, seq: handle.seq };
      r.sched.after(1e-9, restore, `${label}: restore`);
    };
    handle = r.sched.at(from, attempt, label);
  };
  return out;
}

const prop = (res: ReturnType<typeof runScenario>['result'], name: string) => res.properties.find((p) => p.name === name)!;

describe('scheduler afterEach hook', () => {
  it('runs after every event with its label, time and sequence number, and can be removed', () => {
    const s = new Scheduler({ seed: 1 });
    const seen: string[] = [];
    const off = s.afterEach((ev) => seen.push(`${ev.label}@${ev.time}#${ev.seq}`));
    s.at(2, () => {}, 'b');
    s.at(1, () => {}, 'a');
    s.run();
    expect(seen).toEqual(['a@1#1', 'b@2#0']);
    off();
    s.at(3, () => {}, 'c');
    s.run();
    expect(seen).toHaveLength(2);
  });

  it('a hook that throws fails the event it ran after', () => {
    const s = new Scheduler({ seed: 1 });
    s.afterEach((ev) => {
      if (ev.label === 'bad') throw new Error('check failed');
    });
    s.at(1, () => {}, 'good');
    s.at(2, () => {}, 'bad');
    expect(() => s.run()).toThrow(SchedulerEventError);
    expect(s.now).toBe(2);
  });
});

describe('ring well-formed is judged after every event', () => {
  it('clean runs: every event checked, nothing reported, the result says so', () => {
    for (const ring of ['split', 'packed'] as const) {
      const { result } = runScenario(pvp(ring));
      expect(result.monitoring!.checkedAfterEveryEvent).toBeGreaterThan(10_000);
      expect(result.monitoring!.perEvent).toContain('ring-well-formed');
      const p = prop(result, 'ring-well-formed');
      expect(p.verdict, p.reason).toBe('holds');
      expect(p.checkedAfter).toBe('every-event');
      // Ring changes looked at: at least one per packet burst.
      expect(p.checks).toBeGreaterThan(1000);
      for (const inv of result.invariants.filter((i) => i.name !== 'deterministic')) expect(inv).toMatchObject({ verdict: 'holds', checkedAfter: 'every-event' });
    }
  });

  it('split: used.idx moved backwards by a poke is reported with the poke, not at the end', () => {
    const p = pokeOnce(1.2, 'test: used.idx back', ({ topo }) => {
      const g = topo.vms[0]!.fe.guest;
      const l = g.vring(1).layout!;
      if (l.kind !== 'split') return undefined;
      const at = l.used + 2;
      const u = g.memory.readU16(at);
      g.memory.writeU16(at, (u - 3) & 0xffff);
      return () => g.memory.writeU16(at, u);
    });
    const { result } = runScenario(pvp('split'), { inject: p.inject });
    expect(p.done).toBeDefined();
    const rw = prop(result, 'ring-well-formed');
    expect(rw.verdict).toBe('violated');
    expect(rw.reason).toMatch(/vm0 vring 1: used\.idx moved from \d+ to \d+: backwards/);
    expect(rw.firstFailure).toMatchObject({ t: p.done!.t, event: 'test: used.idx back', seq: p.done!.seq });
    // The run went on for long after, with the ring sound again: an end-of-run check sees nothing wrong.
    expect(result.virtualSeconds).toBeGreaterThan(p.done!.t + 0.5);
    for (const e of result.expects) expect(e.verdict, e.reason).toBe('holds');
  });

  it('split: a used entry carrying an id that was never made available is reported with the event that wrote it', () => {
    let id = -1;
    const p = pokeOnce(1.3, 'test: device uses a stray id', ({ topo, monitors }) => {
      const g = topo.vms[0]!.fe.guest;
      const l = g.vring(1).layout!;
      const w = monitors.rings.watch(0, 1)!;
      if (l.kind !== 'split') return undefined;
      id = [...Array(l.size).keys()].reverse().find((k) => !w.isOutstanding(k))!;
      const u = g.memory.readU16(l.used + 2);
      const slot = l.used + 4 + 8 * (u & (l.size - 1));
      const old = [g.memory.readU32(slot), g.memory.readU32(slot + 4)] as const;
      g.memory.writeU32(slot, id);
      g.memory.writeU32(slot + 4, 0);
      g.memory.writeU16(l.used + 2, (u + 1) & 0xffff);
      return () => {
        g.memory.writeU32(slot, old[0]);
        g.memory.writeU32(slot + 4, old[1]);
        g.memory.writeU16(l.used + 2, u);
      };
    });
    const { result } = runScenario(pvp('split'), { inject: p.inject });
    const rw = prop(result, 'ring-well-formed');
    expect(rw.verdict).toBe('violated');
    expect(rw.reason).toBe(`vm0 vring 1: used entry ${(rw.evidence as { monitor: { usedIdx: number } }).monitor.usedIdx} carries id ${id}, which was not made available or was already used`);
    expect(rw.firstFailure).toMatchObject({ t: p.done!.t, event: 'test: device uses a stray id', seq: p.done!.seq });
    expect(result.virtualSeconds).toBeGreaterThan(p.done!.t + 0.5);
  });

  it('split: a used length beyond the buffer writable bytes is reported with its event', () => {
    const p = pokeOnce(1.1, 'test: used len too long', ({ topo, monitors }) => {
      const g = topo.vms[0]!.fe.guest;
      // RX (vring 0): buffers the guest posted for the device to write into.
      const l = g.vring(0).layout!;
      const w = monitors.rings.watch(0, 0)!;
      if (l.kind !== 'split' || w.inFlight === 0) return undefined;
      const u = g.memory.readU16(l.used + 2);
      const head = g.memory.readU16(l.avail + 4 + 2 * (u & (l.size - 1)));
      if (!w.isOutstanding(head)) return undefined;
      const slot = l.used + 4 + 8 * (u & (l.size - 1));
      const old = [g.memory.readU32(slot), g.memory.readU32(slot + 4)] as const;
      g.memory.writeU32(slot, head);
      g.memory.writeU32(slot + 4, 1 << 20);
      g.memory.writeU16(l.used + 2, (u + 1) & 0xffff);
      return () => {
        g.memory.writeU32(slot, old[0]);
        g.memory.writeU32(slot + 4, old[1]);
        g.memory.writeU16(l.used + 2, u);
      };
    });
    const { result } = runScenario(pvp('split'), { inject: p.inject });
    const rw = prop(result, 'ring-well-formed');
    expect(rw.reason).toMatch(/vm0 vring 0: used entry \d+ says 1048576 bytes written to id \d+, which has \d+ device-writable bytes/);
    expect(rw.firstFailure).toMatchObject({ t: p.done!.t, event: 'test: used len too long', seq: p.done!.seq });
  });

  it('packed: a used descriptor with an id never made available is reported with its event', () => {
    let id = -1;
    const p = pokeOnce(1.2, 'test: packed stray used id', ({ topo, monitors }) => {
      const g = topo.vms[0]!.fe.guest;
      const l = g.vring(1).layout!;
      const w = monitors.rings.watch(0, 1)!;
      if (l.kind !== 'packed') return undefined;
      id = [...Array(l.size).keys()].reverse().find((k) => !w.isOutstanding(k))!;
      const d = l.desc + 16 * w.usedSeen;
      const old = [g.memory.readU16(d + 12), g.memory.readU16(d + 14)] as const;
      g.memory.writeU16(d + 12, id);
      // Used for the current used wrap counter: AVAIL = USED = wrap (spec "Used descriptors").
      g.memory.writeU16(d + 14, w.usedWrap ? 0x8080 : 0);
      return () => {
        g.memory.writeU16(d + 12, old[0]);
        g.memory.writeU16(d + 14, old[1]);
      };
    });
    const { result } = runScenario(pvp('packed'), { inject: p.inject });
    const rw = prop(result, 'ring-well-formed');
    expect(rw.verdict).toBe('violated');
    expect(rw.reason).toMatch(new RegExp(`^vm0 vring 1: used slot \\d+ carries id ${id}, which was not made available or was already used$`));
    expect(rw.firstFailure).toMatchObject({ t: p.done!.t, event: 'test: packed stray used id', seq: p.done!.seq });
    expect(result.virtualSeconds).toBeGreaterThan(p.done!.t + 0.5);
  });

  it('packed: flags that agree with neither wrap counter at the used position are reported', () => {
    const p = pokeOnce(1.2, 'test: packed flags flipped', ({ topo, monitors }) => {
      const g = topo.vms[0]!.fe.guest;
      const l = g.vring(0).layout!;
      const w = monitors.rings.watch(0, 0)!;
      if (l.kind !== 'packed' || w.inFlight === 0) return undefined;
      const d = l.desc + 16 * w.usedSeen;
      const old = g.memory.readU16(d + 14);
      // AVAIL = USED = !wrap: a used slot of the previous lap where this lap's buffer should be.
      g.memory.writeU16(d + 14, (old & 0x7f7f) | (w.usedWrap ? 0 : 0x8080));
      return () => g.memory.writeU16(d + 14, old);
    });
    const { result } = runScenario(pvp('packed'), { inject: p.inject });
    const rw = prop(result, 'ring-well-formed');
    expect(rw.reason).toMatch(/vm0 vring 0: slot \d+ has flags 0x[0-9a-f]+ .*neither available nor used for the used wrap counter/);
    expect(rw.firstFailure).toMatchObject({ t: p.done!.t, event: 'test: packed flags flipped', seq: p.done!.seq });
  });
});

describe('model invariants name the event', () => {
  it('memory safety: a guest-memory error escaping an event names that event', () => {
    let h: EventHandle | undefined;
    const { result } = runScenario(pvp('split'), {
      inject: ({ sched, topo }) => {
        h = sched.at(1.25, () => {
          topo.vms[0]!.fe.guest.memory.readU32(2 ** 40);
        }, 'test: wild read');
      },
    });
    const m = result.invariants.find((i) => i.name === 'memory-safety')!;
    expect(m.verdict).toBe('violated');
    expect(m.firstViolation).toMatchObject({ t: 1.25, event: 'test: wild read', seq: h!.seq });
    expect(m.firstViolation!.reason).toMatch(/escaped model code/);
    expect(new GuestMemoryError('unmapped', 'x')).toBeInstanceOf(Error);
  });

  it('well-formed messages: a bad record names the event that added it and its trace line', () => {
    let h: EventHandle | undefined;
    const { result, trace } = runScenario(pvp('split'), {
      inject: ({ sched, topo }) => {
        h = sched.at(1.5, () => {
          // A GET_FEATURES reply with 3 payload bytes instead of 8, inside the open session.
          (topo.recorder.records as unknown[]).push({ t: sched.now, dir: 'b2f', request: 1, flags: 5, size: 3, nfds: 0, payload: '000000' });
        }, 'test: bad message');
      },
    });
    const w = result.invariants.find((i) => i.name === 'well-formed-messages')!;
    expect(w.verdict).toBe('violated');
    const line = trace.findIndex((r) => 'dir' in r && r.size === 3 && r.payload === '000000') + 1;
    expect(w.firstViolation).toMatchObject({ t: 1.5, event: 'test: bad message', seq: h!.seq, traceLine: line });
  });
});

describe('features stable, judged at each new connection', () => {
  it('names the event in which a reconnect negotiated other features, and only the first', () => {
    const conns: { vm: number; t: number; connection: number; features: bigint; firstOfVm: boolean }[] = [];
    const m = new FeaturesMonitor(conns);
    const at: EventAt = { t: 0, label: '', seq: undefined, step: undefined };
    const step = (t: number, label: string, seq: number): void => {
      Object.assign(at, { t, label, seq });
      m.check(at);
    };
    conns.push({ vm: 0, t: 1, connection: 1, features: 0x1n, firstOfVm: true });
    step(1, 'new device', 10);
    conns.push({ vm: 0, t: 2, connection: 2, features: 0x1n, firstOfVm: false });
    step(2, 'new device', 20);
    step(2.5, 'poll', 21);
    conns.push({ vm: 0, t: 3, connection: 3, features: 0x3n, firstOfVm: false });
    step(3, 'reconnect', 30);
    conns.push({ vm: 0, t: 4, connection: 4, features: 0x7n, firstOfVm: false });
    step(4, 'reconnect', 40);
    expect(m.tally.checks).toBe(3);
    expect(m.tally.first).toMatchObject({ t: 3, event: 'reconnect', seq: 30, reason: 'vm0 connection 3 negotiated 0x3, first 0x1' });
  });
});
