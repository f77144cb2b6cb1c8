import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TransportError } from '../errors.ts';
import { GuestMemoryError } from '../../memory/errors.ts';
import { openFdNumbers, PAGE_SIZE } from './libc.ts';
import { MappedGuestMemory, RealEventFd, RealFdRegistry, RealMemFd } from './real-fd.ts';
import { fdsOpenedSince, settle, skipReason, waitFor } from './test-support.ts';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof TransportError) return e.code;
    throw e;
  }
  return undefined;
}

describe.skipIf(skipReason !== undefined)(`real fds${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let reg: RealFdRegistry;
  let before: number[];
  beforeEach(() => {
    reg = new RealFdRegistry('test');
    before = openFdNumbers();
  });
  afterEach(() => {
    // Every test closes what it opens: nothing in the registry, nothing in /proc/self/fd.
    expect(reg.describeOpen()).toEqual([]);
    expect(fdsOpenedSince(before)).toEqual([]);
  });

  describe('memfd and mappings', () => {
    it('shares memory between two mappings of one memfd, and between dup handles', () => {
      const m = RealMemFd.create('shared', 3 * PAGE_SIZE, reg);
      expect(m.size).toBe(3 * PAGE_SIZE);
      const d = m.dup();
      const a = m.map();
      const b = d.map(PAGE_SIZE + 8, 100);
      a.bytes()[PAGE_SIZE + 8] = 0x5a;
      expect(b.bytes()[0]).toBe(0x5a);
      b.bytes()[99] = 0xa5;
      expect(a.bytes(PAGE_SIZE + 8 + 99, 1)[0]).toBe(0xa5);
      // the page-alignment slack is visible as byteOffset
      expect(b.byteOffset).toBe(8);
      expect(b.buffer.byteLength).toBe(8 + 100);
      expect(reg.openMappings()).toHaveLength(2);
      // a mapping outlives the fd it came from
      m.close();
      d.close();
      expect(a.bytes()[PAGE_SIZE + 8]).toBe(0x5a);
      a.release();
      b.release();
    });

    it('refuses ranges outside the file (they would fault) and empty files', () => {
      const m = RealMemFd.create('small', PAGE_SIZE, reg);
      expect(code(() => m.map(0, PAGE_SIZE + 1))).toBe('EINVAL');
      expect(code(() => m.map(PAGE_SIZE))).toBe('EINVAL');
      expect(code(() => m.map(-1, 1))).toBe('EINVAL');
      expect(code(() => RealMemFd.create('zero', 0, reg))).toBe('EINVAL');
      m.close();
      expect(code(() => m.map())).toBe('EBADF');
      expect(code(() => m.dup())).toBe('EBADF');
    });

    it('releases once; later access throws a typed error; a stale view reads zeros instead of crashing', () => {
      const m = RealMemFd.create('rel', PAGE_SIZE, reg);
      const map = m.map();
      const stale = map.bytes();
      stale[0] = 42;
      map.release();
      map.release(); // no-op
      expect(map.released).toBe(true);
      expect(code(() => map.bytes())).toBe('EBADF');
      expect(code(() => map.buffer)).toBe('EBADF');
      expect(reg.openMappings()).toEqual([]);
      // Defence in depth: the range now holds private zero pages, not the file and not a hole.
      expect(stale[0]).toBe(0);
      stale[1] = 7;
      const again = m.map();
      expect(again.bytes()[0]).toBe(42); // the file kept its data; the stale write went nowhere
      expect(again.bytes()[1]).toBe(0);
      again.release();
      m.close();
    });

    it('maps many times in a row (address reuse after release is fine)', async () => {
      const m = RealMemFd.create('churn', 16 * PAGE_SIZE, reg);
      for (let i = 0; i < 200; i++) {
        const map = m.map();
        map.bytes()[i] = i & 0xff;
        map.release();
      }
      const g = globalThis as { gc?: () => void };
      g.gc?.();
      await settle(5);
      const map = m.map();
      expect(map.bytes()[199]).toBe(199);
      map.release();
      m.close();
    });

    it('backs GuestMemory and drops it as a whole', () => {
      const m = RealMemFd.create('guest', 2 * PAGE_SIZE, reg);
      const gm = new MappedGuestMemory([
        { gpa: 0x1000, mapping: m.map(0, PAGE_SIZE) },
        { gpa: 0x100000, uva: 0x7f0000000000, mapping: m.map(PAGE_SIZE, PAGE_SIZE) },
      ]);
      m.close();
      const mem = gm.memory;
      mem.writeU32(0x1010, 0xdeadbeef);
      mem.storeU16Release(0x100002, 0xbeef); // Atomics on a mapped (non-shared) buffer
      expect(mem.readU32(0x1010)).toBe(0xdeadbeef);
      expect(mem.loadU16Acquire(0x100002)).toBe(0xbeef);
      expect(mem.uvaToGpa(0x7f0000000002, 2)).toBe(0x100002);
      expect(() => mem.readU8(0x3000)).toThrow(GuestMemoryError);
      expect(reg.openMappings()).toHaveLength(2);
      gm.release();
      gm.release();
      expect(gm.released).toBe(true);
      expect(code(() => gm.memory)).toBe('EBADF');
      expect(reg.openMappings()).toEqual([]);
    });

    it('releases its mappings if GuestMemory refuses the layout', () => {
      const m = RealMemFd.create('bad', PAGE_SIZE, reg);
      const a = m.map();
      const b = m.map();
      expect(() => new MappedGuestMemory([{ gpa: 0, mapping: a }, { gpa: 0x800, mapping: b }])).toThrow(GuestMemoryError);
      expect(a.released && b.released).toBe(true);
      m.close();
    });
  });

  describe('eventfd', () => {
    it('writes add, a read takes the count, overflow is EAGAIN, semaphore mode counts down', () => {
      const e = RealEventFd.create(0, { registry: reg });
      expect(e.poll()).toBe(false);
      expect(e.read()).toBe(0n);
      e.write();
      e.write(4);
      e.write(0n);
      expect(e.poll()).toBe(true);
      expect(e.read()).toBe(5n);
      e.write(0xfffffffffffffffen);
      expect(code(() => e.write(1n))).toBe('EAGAIN');
      expect(code(() => e.write(-1n))).toBe('EINVAL');
      expect(e.read()).toBe(0xfffffffffffffffen);
      const s = RealEventFd.create(2, { semaphore: true, registry: reg });
      expect([s.read(), s.read(), s.read()]).toEqual([1n, 1n, 0n]);
      e.close();
      s.close();
      expect(code(() => e.read())).toBe('EBADF');
    });

    it('a write through a dup is read through the original, and signals its listeners', async () => {
      const e = RealEventFd.create(0, { registry: reg });
      const d = e.dup();
      let seen = 0n;
      let calls = 0;
      const off = e.onSignal(() => {
        calls++;
        seen += e.read();
      });
      d.write(3);
      await waitFor(() => seen === 3n, 1000, 'signal');
      d.write(2);
      await waitFor(() => seen === 5n, 1000, 'second signal');
      off();
      d.write(1);
      await settle(10);
      expect(seen).toBe(5n);
      expect(calls).toBeGreaterThanOrEqual(2);
      expect(e.read()).toBe(1n);
      e.close();
      d.close();
    });
  });

  it('closes each handle exactly once and tracks it until then', () => {
    const m = RealMemFd.create('once', PAGE_SIZE, reg);
    const e = RealEventFd.create(0, { registry: reg });
    const d = e.dup('copy for a test');
    expect(reg.openHandles()).toEqual([m, e, d]);
    expect(reg.describeOpen()[2]).toMatch(/eventfd 'anon_inode:\[eventfd\]' \(copy for a test\)/);
    e.close();
    e.close();
    expect(e.closed).toBe(true);
    expect(d.closed).toBe(false);
    d.write(1);
    expect(reg.openHandles()).toEqual([m, d]);
    m.close();
    d.close();
  });
});
