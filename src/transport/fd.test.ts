import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Scheduler } from '../sim/scheduler.ts';
import { FdRegistry, MemFd, EventFd, TransportError, type TransportScheduler } from './index.ts';
import { GuestMemory } from '../memory/index.ts';

function registry(): FdRegistry {
  const sched: TransportScheduler = new Scheduler({ seed: 1 });
  return new FdRegistry(sched, 'test-host');
}

describe('fd handles', () => {
  it('dup gives a second handle to the same object; the object lives until the last handle closes', () => {
    const reg = registry();
    const a = MemFd.create(reg, 'guest0', 4096);
    const b = a.dup();
    expect(b.fd).not.toBe(a.fd);
    expect(b.object).toBe(a.object);
    expect(b.buffer).toBe(a.buffer);
    a.close();
    expect(a.closed).toBe(true);
    expect(b.closed).toBe(false);
    expect(a.object.released).toBe(false);
    expect(b.object.refCount).toBe(1);
    b.close();
    expect(b.object.released).toBe(true);
    expect(reg.openHandles()).toEqual([]);
  });

  it('close is idempotent; use after close throws EBADF', () => {
    const reg = registry();
    const m = MemFd.create(reg, 'm', 8);
    m.close();
    m.close();
    expect(m.object.refCount).toBe(0);
    expect(() => m.buffer).toThrow(TransportError);
    expect(() => m.dup()).toThrow(/EBADF/);
    const e = EventFd.create(reg, 'e');
    e.close();
    expect(() => e.write()).toThrow(/EBADF/);
    expect(() => e.read()).toThrow(/EBADF/);
  });

  it('fd numbers are unique per registry and never reused', () => {
    const reg = registry();
    const a = MemFd.create(reg, 'a', 1);
    const n = a.fd;
    a.close();
    const b = MemFd.create(reg, 'b', 1);
    expect(b.fd).toBeGreaterThan(n);
    expect(n).toBeGreaterThanOrEqual(3);
  });

  it('property: openHandles() is exactly the handles created or duplicated and not yet closed', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('new', 'dup', 'close'), fc.nat()), { maxLength: 60 }), (ops) => {
        const reg = registry();
        const all: MemFd[] = [];
        for (const [op, i] of ops) {
          const open = all.filter((h) => !h.closed);
          if (op === 'new' || open.length === 0) all.push(MemFd.create(reg, `m${all.length}`, 8));
          else if (op === 'dup') all.push(open[i % open.length].dup());
          else open[i % open.length].close();
        }
        const expected = all.filter((h) => !h.closed).map((h) => h.fd);
        expect(reg.openHandles().map((h) => h.fd)).toEqual(expected);
        // An object is released exactly when none of its handles is open.
        for (const h of all) expect(h.object.released).toBe(all.every((o) => o.object !== h.object || o.closed));
      }),
    );
  });

  it('describeOpen names each open handle with its kind, name and origin', () => {
    const reg = registry();
    const m = MemFd.create(reg, 'inflight', 64);
    m.dup();
    expect(reg.describeOpen()).toEqual([`fd ${m.fd} memfd 'inflight' (created)`, `fd ${m.fd + 1} memfd 'inflight' (dup of fd ${m.fd})`]);
  });
});

describe('MemFd', () => {
  it('is shared memory: bytes written through one handle are seen through another', () => {
    const reg = registry();
    const a = MemFd.create(reg, 'region', 16);
    const b = a.dup();
    a.bytes(4, 2).set([0xaa, 0xbb]);
    expect([...b.bytes()].slice(3, 7)).toEqual([0, 0xaa, 0xbb, 0]);
    expect(a.size).toBe(16);
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
  });

  it('wraps an existing buffer, so a memfd can back a GuestMemory region', () => {
    const reg = registry();
    const mem = GuestMemory.create(0x2000, 0x10000);
    const fd = MemFd.create(reg, 'guest', mem.regions[0].buffer as SharedArrayBuffer);
    const backEnd = new GuestMemory([{ gpa: 0x10000, size: fd.size, buffer: fd.buffer }]);
    mem.writeU32(0x10010, 0xcafef00d);
    expect(backEnd.readU32(0x10010)).toBe(0xcafef00d);
  });

  it('refuses a bad size', () => {
    expect(() => MemFd.create(registry(), 'x', -1)).toThrow(/EINVAL/);
  });
});
