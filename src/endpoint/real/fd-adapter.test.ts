import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventFd, MemFd, TransportError } from '../../transport/index.ts';
import { RealEventFd, RealFdRegistry, RealMemFd, openFdNumbers, realSocketpair } from '../../transport/real/index.ts';
import { fdsOpenedSince, skipReason, waitFor } from '../../transport/real/test-support.ts';
import { GuestMemory } from '../../memory/index.ts';
import { RealBackedEventFd, RealBackedMemFd, RealFdAdapters, RealTimeScheduler, realFdOf } from './fd-adapter.ts';

describe.skipIf(skipReason !== undefined)(`real fds as model handles${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let reg: RealFdRegistry;
  let adapters: RealFdAdapters;
  let before: number[];
  beforeEach(() => {
    reg = new RealFdRegistry('adapter-test');
    adapters = new RealFdAdapters('adapter-test');
    before = openFdNumbers();
  });
  afterEach(() => {
    expect(adapters.openHandles()).toEqual([]);
    expect(reg.describeOpen()).toEqual([]);
    expect(adapters.liveMappings).toBe(0);
    expect(fdsOpenedSince(before)).toEqual([]);
  });

  it('an eventfd becomes an EventFd numbered as the kernel numbers it, forwarding to the real one', async () => {
    const mine = RealEventFd.create(0, { registry: reg });
    const e = adapters.adopt(mine.dup('passed'));
    expect(e).toBeInstanceOf(EventFd);
    expect(e).toBeInstanceOf(RealBackedEventFd);
    const ev = e as EventFd;
    expect(ev.fd).toBe(realFdOf(ev)!.fd);
    expect(adapters.openHandles()).toEqual([ev]);
    ev.write(3n);
    expect(mine.read()).toBe(3n);
    mine.write(1n);
    expect(ev.poll()).toBe(true);
    let seen = 0;
    const off = ev.onSignal(() => {
      seen += Number(ev.read());
    });
    await waitFor(() => seen === 1, 2000, 'signal');
    off();
    expect(() => ev.shared).toThrow(TransportError);
    const d = ev.dup();
    expect(d).toBeInstanceOf(RealBackedEventFd);
    expect(d.fd).not.toBe(ev.fd);
    d.write(2n);
    expect(mine.read()).toBe(2n);
    ev.close();
    d.close();
    expect(realFdOf(ev)!.closed).toBe(true);
    expect(() => ev.write(1n)).toThrow(TransportError);
    mine.close();
  });

  it('a memfd maps on first use only, and its mapping outlives the handle until swept', () => {
    const mine = RealMemFd.create('guest', 3 * 4096, reg);
    const m = adapters.adopt(mine.dup('passed')) as RealBackedMemFd;
    expect(m).toBeInstanceOf(MemFd);
    expect(m.size).toBe(3 * 4096);
    expect(m.isMapped).toBe(false);
    expect(adapters.liveMappings).toBe(0);
    const mem = new GuestMemory([{ gpa: 0x1000, size: 2 * 4096, buffer: m.buffer, offset: 4096 }]);
    expect(adapters.liveMappings).toBe(1);
    mem.writeU32(0x1000, 0xdeadbeef);
    // Shared with the file: the other handle's mapping sees the write.
    const other = mine.map(4096, 8);
    expect(new DataView(other.buffer, other.byteOffset).getUint32(0, true)).toBe(0xdeadbeef);
    other.release();
    m.close();
    expect(m.size).toBe(0);
    // Still referenced: kept, and still the file's memory.
    expect(adapters.sweep(new Set([mem.regions[0]!.buffer]))).toBe(0);
    expect(mem.readU32(0x1000)).toBe(0xdeadbeef);
    expect(adapters.liveMappings).toBe(1);
    expect(adapters.sweep(new Set())).toBe(1);
    expect(adapters.liveMappings).toBe(0);
    // A second sweep has nothing left to release.
    expect(adapters.sweep(new Set())).toBe(0);
    mine.close();
  });

  it('an unmapped memfd needs no sweep; a closed one cannot be mapped', () => {
    const m = adapters.adopt(RealMemFd.create('x', 4096, reg)) as RealBackedMemFd;
    m.close();
    expect(() => m.buffer).toThrow(TransportError);
    expect(adapters.sweep(new Set())).toBe(0);
  });

  it('a received socket is an opaque file the device cannot map', () => {
    const [a, b] = realSocketpair({ registry: reg });
    const f = adapters.adopt(b) as RealBackedMemFd;
    expect(f.kind).toBe('memfd');
    expect(f.size).toBe(0);
    expect(() => f.buffer).toThrow(TransportError);
    f.close();
    expect(b.closed).toBe(true);
    a.close();
  });

  it('creates memfds (GET_INFLIGHT_FD) as adapters', () => {
    const m = adapters.createMemFd('vhost-inflight', 8192, reg);
    expect(m).toBeInstanceOf(RealBackedMemFd);
    expect(m.size).toBe(8192);
    m.buffer;
    m.close();
    adapters.sweep(new Set());
  });

  it('refuses handles that are not real-backed, and closed real fds', () => {
    const e = RealEventFd.create(0, { registry: reg });
    e.close();
    expect(() => adapters.adopt(e)).toThrow(TransportError);
    expect(() => EventFd.create(adapters)).toThrow(/only real-backed/);
  });

  it('runs timers in real time', async () => {
    const s = new RealTimeScheduler();
    const t0 = s.now;
    expect(Math.abs(t0 * 1000 - Date.now())).toBeLessThan(50);
    let fired = 0;
    s.after(0.01, () => fired++);
    const c = s.at(s.now + 0.01, () => fired++);
    expect(c.cancel()).toBe(true);
    expect(c.cancel()).toBe(false);
    await waitFor(() => fired === 1, 1000, 'timer');
    await new Promise((r) => setTimeout(r, 20));
    expect(fired).toBe(1);
  });
});
