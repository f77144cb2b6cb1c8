import { describe, expect, it } from 'vitest';
import { FrontendRequest as R } from '../../protocol/index.ts';
import { DescriptorChain, type UsedBuffer } from '../../ring/types.ts';
import { PackedDriver } from '../../ring/packed/index.ts';
import { SplitDevice } from '../../ring/split/index.ts';
import { DeviceHarness } from './testing.ts';

describe('data path view (vring(i), notify)', () => {
  it('vring(i) is undefined before the device runs, for disabled rings, and beyond the polled queues', () => {
    const h = new DeviceHarness();
    const { guest } = h.handshake();
    void guest;
    expect(h.device.vring(0)).toBeDefined();
    expect(h.device.vring(2)).toBeUndefined();
    h.send(R.SET_VRING_ENABLE, { kind: 'vringState', index: 1, num: 0 });
    expect(h.device.vring(1)).toBeUndefined();
    expect(h.device.vring(0)).toBeDefined();
    const fresh = new DeviceHarness();
    expect(fresh.device.vring(0)).toBeUndefined();
  });

  it('a buffer the driver posts is popped, pushed, and notify() writes the call eventfd', () => {
    const h = new DeviceHarness();
    const { guest, eventfds } = h.handshake();
    // eventfds: call0, call1, kick0, kick1 in script order.
    const [call0, , kick0] = eventfds;
    const driver = guest.splitDriver<string>(0, { indirect: true, eventIdx: false, inOrder: true }, false);
    const v = h.device.vring(0)!;
    expect(v.device).toBeInstanceOf(SplitDevice);
    expect(v.kick?.shared).toBe(kick0!.shared);
    driver.add([{ addr: guest.base + 0x80000, len: 64, writable: true }], 'rx buffer');
    driver.publish();
    const chain = new DescriptorChain(64);
    expect(v.pop(chain)).toBe(true);
    expect(chain.writableBytes).toBe(64);
    v.device.push(chain.id, 60);
    expect(v.notify()).toBe(true);
    expect(call0!.read()).toBe(1n);
    const out: UsedBuffer<string> = { token: '', len: 0, id: 0 };
    expect(driver.reclaim(out)).toBe(true);
    expect(out).toMatchObject({ token: 'rx buffer', len: 60 });
  });

  it('notify() writes nothing when the call fd is NOFD', () => {
    const h = new DeviceHarness();
    const { guest } = h.handshake();
    h.send(R.SET_VRING_CALL, { kind: 'vringFile', index: 0, noFd: true });
    const driver = guest.splitDriver<number>(0, undefined, false);
    const v = h.device.vring(0)!;
    expect(v.call).toBeUndefined();
    driver.add([{ addr: guest.base + 0x80000, len: 64, writable: true }], 1);
    driver.publish();
    const chain = new DescriptorChain(64);
    v.pop(chain);
    v.device.push(chain.id, 0);
    expect(v.notify()).toBe(false);
  });

  it('a malformed chain stops the queue at it, reported once as a model ring-error; a fixed chain lets it go on', () => {
    const h = new DeviceHarness();
    const { guest } = h.handshake();
    const driver = guest.splitDriver<number>(0, undefined, false);
    driver.add([{ addr: guest.base + 0x80000, len: 64, writable: true }], 1);
    driver.publish();
    // Point the head descriptor outside guest memory.
    const desc = guest.split[0]!.desc;
    guest.memory.writeU64(desc, 0x10n);
    const v = h.device.vring(0)!;
    const chain = new DescriptorChain(64);
    expect(v.pop(chain)).toBe(false);
    expect(v.pop(chain)).toBe(false);
    expect(h.device.dataPathEvents.map((e) => e.kind)).toEqual(['model']);
    expect(h.device.vringState(0)!.broken?.code).toBe('bad-address');
    guest.memory.writeU64(desc, BigInt(guest.base + 0x80000));
    expect(v.pop(chain)).toBe(true);
    expect(h.device.vringState(0)!.broken).toBeUndefined();
  });

  it('packed rings run too: base 0x8000 (avail 0, wrap 1), and GET_VRING_BASE returns the avail position', () => {
    const h = new DeviceHarness();
    const { guest } = h.handshake({ packed: true, queueSize: 100 });
    const v = h.device.vring(1)!;
    expect(v).toBeDefined();
    const l = guest.packedLayouts[1]!;
    const driver = new PackedDriver<number>(guest.memory, l, { indirect: true, eventIdx: false, inOrder: true });
    driver.add([{ addr: guest.base + 0x80000, len: 64, writable: false }], 7);
    driver.publish();
    const chain = new DescriptorChain(64);
    expect(v.pop(chain)).toBe(true);
    v.device.push(chain.id, 0);
    v.notify();
    const r = h.send(R.GET_VRING_BASE, { kind: 'vringState', index: 1, num: 0 });
    expect(r.replies[0]!.payload).toEqual({ kind: 'vringState', index: 1, num: 0x8001 });
  });
});
