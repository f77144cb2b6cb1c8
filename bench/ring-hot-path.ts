import { GuestMemory, PacketBuffer } from '../src/memory/index.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../src/ring/types.ts';
import { makeDevice, makeDriver, ringLayout, type RingKind } from '../src/ring/factory.ts';

export const BURST = 32;
export const PAYLOAD = 64;

/**
 * One single-thread round of the benchmark shape: the driver adds BURST
 * one-descriptor buffers of 64 bytes and publishes; the device pops each, copies its
 * 64-byte payload out (the copy a vhost dequeue does), pushes it used and flushes;
 * the driver reclaims them. Returns a function doing one round.
 */
export function makeRound(kind: RingKind, size = 256, features: RingFeatures = { indirect: false, eventIdx: true, inOrder: false }) {
  const layout = ringLayout(kind, 0, size);
  const dataBase = Math.ceil(layout.end / 4096) * 4096;
  const mem = new GuestMemory([{ gpa: 0, size: dataBase + size * PAYLOAD, uva: 0 }]);
  const driver = makeDriver<number>(kind, mem, layout, features);
  const device = makeDevice(kind, mem, layout, features);
  const chain = new DescriptorChain(8);
  const mbuf = new PacketBuffer(2048); // the host-side buffer a dequeue copies into
  const segs: Segment[][] = [];
  for (let k = 0; k < BURST; k++) segs.push([{ addr: dataBase + k * PAYLOAD, len: PAYLOAD, writable: false }]);
  const out: UsedBuffer<number> = { token: 0, len: 0, id: 0 };
  return function round(): number {
    for (let k = 0; k < BURST; k++) driver.add(segs[k], k);
    driver.publish();
    let n = 0;
    while (device.pop(chain)) {
      mem.copyOut(chain.addr[0], mbuf, 0, chain.len[0]);
      device.push(chain.id, 0);
      n++;
    }
    device.flush();
    while (driver.reclaim(out)) n--;
    if (n !== 0) throw new Error('benchmark round lost buffers');
    return BURST;
  };
}
