import { describe, expect, it } from 'vitest';
import { RingError, RingFullError } from '../src/ring/errors.ts';
import type { RingFeatures, Segment } from '../src/ring/types.ts';
import { SplitRingModel } from './split-ring.ts';

const NONE: RingFeatures = { indirect: false, eventIdx: false, inOrder: false };
const r = (len: number): Segment => ({ addr: 0x1000, len, writable: false });
const w = (len: number): Segment => ({ addr: 0x2000, len, writable: true });

function cycle(m: SplitRingModel<string>, pushLen = 0): { notify: boolean } {
  const c = m.pop()!;
  m.push(c.head, pushLen);
  return { notify: m.flush() };
}

describe('split ring reference model', () => {
  it('hands out descriptor slots from a LIFO free list, whole chains at a time', () => {
    const m = new SplitRingModel<string>(4, NONE);
    expect(m.add([r(1), r(1)], 'a')).toBe(0); // slots 0,1
    expect(m.add([r(1)], 'b')).toBe(2);
    expect(() => m.add([r(1), r(1)], 'c')).toThrow(RingFullError);
    m.publish();
    m.pop();
    const b = m.pop()!;
    m.push(b.head, 0);
    m.flush();
    expect(m.reclaim()).toEqual({ token: 'b', id: 2, len: 0 });
    expect(m.free).toEqual([2, 3]);
    expect(m.add([r(1), r(1)], 'c')).toBe(2);
    expect(m.buffers.get(2)!.slots).toEqual([2, 3]);
  });

  it('with IN_ORDER hands slots out in ring order and returns them to the back', () => {
    const m = new SplitRingModel<string>(4, { ...NONE, inOrder: true });
    m.add([r(1), r(1), r(1)], 'a');
    m.publish();
    cycle(m);
    m.reclaim();
    expect(m.free).toEqual([3, 0, 1, 2]);
    expect(m.add([r(1), r(1)], 'b')).toBe(3);
  });

  it('pops exactly what was published, in avail order, with the buffer’s segments', () => {
    const m = new SplitRingModel<string>(8, { ...NONE, indirect: true }, { indirectPerBuffer: 4 });
    m.add([r(10), w(20)], 'a');
    m.add([r(1), r(2), w(3)], 'b', { indirect: true });
    expect(m.pop()).toBeNull();
    expect(m.publish()).toBe(true);
    expect(m.availableCount()).toBe(2);
    expect(m.pop()).toEqual({ head: 0, segments: [r(10), w(20)], indirect: false, ringDescriptors: 2, readableBytes: 10, writableBytes: 20 });
    expect(m.pop()).toMatchObject({ head: 2, indirect: true, ringDescriptors: 1, readableBytes: 3, writableBytes: 3 });
    expect(m.pop()).toBeNull();
  });

  it('kicks: NO_NOTIFY without EVENT_IDX; avail_event in (old, new] with it', () => {
    const plain = new SplitRingModel<string>(8, NONE);
    expect(plain.publish()).toBe(false); // nothing new
    plain.add([r(1)], 'a');
    plain.disableKicks();
    expect(plain.publish()).toBe(false);
    plain.enableKicks();
    plain.add([r(1)], 'b');
    expect(plain.publish()).toBe(true);

    const ev = new SplitRingModel<string>(8, { ...NONE, eventIdx: true });
    ev.add([r(1)], 'a');
    expect(ev.publish()).toBe(true); // avail_event 0 in (0, 1]
    ev.add([r(1)], 'b');
    expect(ev.publish()).toBe(false); // (1, 2]
    ev.pop();
    ev.pop();
    ev.enableKicks(); // avail_event = 2
    ev.add([r(1)], 'c');
    ev.add([r(1)], 'd');
    expect(ev.publish()).toBe(true); // (2, 4]
  });

  it('notifies: first flush after start always (DPDK), then used_event in (signalled, new]', () => {
    const m = new SplitRingModel<string>(8, { ...NONE, eventIdx: true });
    for (let i = 0; i < 6; i++) m.add([r(1)], String(i));
    m.publish();
    m.disableNotifications();
    m.setUsedEvent(3);
    expect(cycle(m).notify).toBe(true); // first decision: signalled_used_valid was false
    expect(cycle(m).notify).toBe(false); // (1, 2]
    expect(cycle(m).notify).toBe(false); // (2, 3]: entry 3 not written yet
    expect(cycle(m).notify).toBe(true); // (3, 4]
    expect(m.saveState()).toEqual({ lastAvailIdx: 4, lastUsedIdx: 4, signalledUsedValid: true, signalledUsed: 4 });

    const quiet = new SplitRingModel<string>(8, { ...NONE, eventIdx: true }, { notifyFirstFlush: false });
    quiet.add([r(1)], 'a');
    quiet.publish();
    quiet.setUsedEvent(5);
    expect(cycle(quiet).notify).toBe(false);

    const plain = new SplitRingModel<string>(8, NONE);
    plain.add([r(1)], 'a');
    plain.add([r(1)], 'b');
    plain.publish();
    expect(cycle(plain).notify).toBe(true);
    plain.disableNotifications();
    expect(cycle(plain).notify).toBe(false);
    expect(plain.flush()).toBe(false); // nothing pushed
  });

  it('keeps used_event at the driver’s used position while notifications are on', () => {
    const m = new SplitRingModel<string>(8, { ...NONE, eventIdx: true });
    m.add([r(1)], 'a');
    m.add([r(1)], 'b');
    m.publish();
    cycle(m);
    cycle(m);
    m.reclaim();
    expect(m.usedEvent).toBe(1);
    m.disableNotifications();
    m.reclaim();
    expect(m.usedEvent).toBe(1);
    expect(m.enableNotifications()).toBe(false);
    expect(m.usedEvent).toBe(2);
  });

  it('IN_ORDER: fully used pushes fold into one element; the driver gets skipped buffers back with their writable size', () => {
    const m = new SplitRingModel<string>(8, { ...NONE, inOrder: true });
    m.add([w(100)], 'a');
    m.add([r(4), w(50)], 'b');
    m.add([w(30)], 'c');
    m.add([w(30)], 'd');
    m.publish();
    const heads = [m.pop()!, m.pop()!, m.pop()!, m.pop()!].map((c) => c.head);
    expect(() => m.push(heads[1], 0)).toThrow(RingError); // out of order
    m.push(heads[0], 100); // full
    m.push(heads[1], 50); // full
    m.push(heads[2], 7); // partial: ends the batch
    m.push(heads[3], 30); // a new element
    expect(m.pending.map((e) => e.heads)).toEqual([[heads[0], heads[1], heads[2]], [heads[3]]]);
    m.flush();
    const got = [m.reclaim(), m.reclaim(), m.reclaim(), m.reclaim(), m.reclaim()];
    expect(got).toEqual([
      { token: 'a', id: heads[0], len: 100 },
      { token: 'b', id: heads[1], len: 50 },
      { token: 'c', id: heads[2], len: 7 },
      { token: 'd', id: heads[3], len: 30 },
      null,
    ]);
  });

  it('refuses pushes of chains not popped, and allows inherited ones once after a restart', () => {
    const m = new SplitRingModel<string>(4, NONE);
    m.add([r(1)], 'a');
    m.add([r(1)], 'b');
    m.publish();
    expect(() => m.push(0, 0)).toThrow(RingError);
    m.pop();
    m.pop();
    m.restartDevice();
    expect(m.inherited).toBe(2);
    m.push(1, 0);
    m.push(0, 0);
    expect(() => m.push(0, 0)).toThrow(RingError);
  });

  it('knows when a rebase on used.idx is exact, and re-pops what was not used', () => {
    const m = new SplitRingModel<string>(4, NONE);
    for (const t of ['a', 'b', 'c']) m.add([r(1)], t);
    m.publish();
    const a = m.pop()!;
    const b = m.pop()!;
    expect(m.rebaseIsExact()).toBe(true);
    m.push(b.head, 0); // out of avail order
    m.flush();
    expect(m.rebaseIsExact()).toBe(false); // 'a' would be lost and 'b' popped again
    m.push(a.head, 0);
    m.flush();
    expect(m.rebaseIsExact()).toBe(true);
    m.pop(); // 'c'
    m.rebaseFromUsed();
    expect(m.saveState()).toMatchObject({ lastAvailIdx: 2, lastUsedIdx: 2 });
    expect(m.pop()!.head).toBe(2);
  });

  it('sees a lost buffer even when more than Q positions separate it from avail.idx', () => {
    const m = new SplitRingModel<string>(4, NONE);
    m.add([r(1)], 'a');
    m.add([r(1)], 'b');
    m.publish();
    m.pop();
    const b = m.pop()!;
    m.push(b.head, 0);
    m.flush();
    m.reclaim(); // 'b' done; 'a' (position 0) still popped and unused
    for (const t of ['c', 'd', 'e']) m.add([r(1)], t);
    m.publish(); // positions 0..4: 'a' is 5 behind avail.idx in a ring of 4
    expect(m.rebaseIsExact()).toBe(false);
  });

  it('runs its indices across the u16 wrap', () => {
    const m = new SplitRingModel<string>(4, { ...NONE, eventIdx: true }, { startIdx: 65534 });
    for (const t of ['a', 'b', 'c']) m.add([r(1)], t);
    expect(m.publish()).toBe(true); // avail_event 0 is in (65534, 1]
    expect(m.publishedIdx).toBe(1);
    for (let i = 0; i < 3; i++) cycle(m);
    expect(m.usedIdx).toBe(1);
    expect([m.reclaim()!.token, m.reclaim()!.token, m.reclaim()!.token]).toEqual(['a', 'b', 'c']);
    expect(m.hasUsed()).toBe(false);
  });
});
