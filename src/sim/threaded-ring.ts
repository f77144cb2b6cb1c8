import { GuestMemory, PacketBuffer } from '../memory/index.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../ring/types.ts';
import { RingFullError } from '../ring/errors.ts';
import { ringLayout, makeDriver, makeDevice, type RingKind, type AnyLayout } from '../ring/factory.ts';

/**
 * Driver and device loops for running one ring across two threads over one
 * SharedArrayBuffer. Every buffer carries a checksummed payload the device verifies
 * and a writable half the device fills with a value derived from it, which the driver
 * verifies on reclaim: loss, duplication, reordering and corruption in either
 * direction are all detected.
 *
 * Memory: [ring | data slots]; data slot k (one per queue entry) holds the driver's
 * 64-byte payload and 64 writable bytes.
 */

export const PAYLOAD = 64;
const SLOT = 2 * PAYLOAD;

export interface ThreadedRingConfig {
  kind: RingKind;
  size: number;
  features: RingFeatures;
  /** Buffers to pass before stopping. */
  count: number;
  /** Buffers the driver adds before publishing. */
  burst: number;
  /**
   * true: two-segment buffers (readable payload + writable reply), both verified.
   * false: the benchmark shape, one readable 64-byte descriptor that the device copies out.
   */
  verify: boolean;
}

export interface SharedRing {
  buffer: SharedArrayBuffer;
  /** Control words: [0] driver done, [1] device done. */
  control: SharedArrayBuffer;
  layout: AnyLayout;
  dataBase: number;
}

export interface LoopReport {
  role: 'driver' | 'device';
  buffers: number;
  errors: string[];
  seconds: number;
}

export function allocateSharedRing(cfg: ThreadedRingConfig): SharedRing {
  const layout = ringLayout(cfg.kind, 0, cfg.size);
  const dataBase = alignUp(layout.end, 4096);
  const buffer = new SharedArrayBuffer(dataBase + cfg.size * SLOT);
  const mem = new GuestMemory([{ gpa: 0, size: buffer.byteLength, buffer }]);
  mem.fill(0, layout.end, 0); // rings start zeroed (spec: driver initialises them)
  return { buffer, control: new SharedArrayBuffer(8), layout, dataBase };
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Payload word i of buffer `seq`: a cheap keyed pattern whose last word is a checksum. */
function payloadWord(seq: number, i: number): number {
  return (Math.imul(seq + 1, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca77)) >>> 0;
}

export function runDriver(shared: SharedRing, cfg: ThreadedRingConfig): LoopReport {
  const mem = new GuestMemory([{ gpa: 0, size: shared.buffer.byteLength, buffer: shared.buffer }]);
  const driver = makeDriver<number>(cfg.kind, mem, shared.layout, cfg.features);
  const view = new Uint32Array(shared.buffer);
  const control = new Int32Array(shared.control);
  const freeSlots: number[] = [];
  for (let k = cfg.size - 1; k >= 0; k--) freeSlots.push(k);
  const seqOfSlot = new Float64Array(cfg.size);
  const seg: Segment[] = cfg.verify
    ? [
        { addr: 0, len: PAYLOAD, writable: false },
        { addr: 0, len: PAYLOAD, writable: true },
      ]
    : [{ addr: 0, len: PAYLOAD, writable: false }];
  const needed = seg.length;
  const out: UsedBuffer<number> = { token: 0, len: 0, id: 0 };
  const errors: string[] = [];
  let sent = 0;
  let reclaimed = 0;
  let expectReclaim = 0;
  const start = performance.now();
  while (reclaimed < cfg.count && errors.length === 0) {
    let added = 0;
    while (added < cfg.burst && sent < cfg.count && freeSlots.length > 0 && driver.freeDescriptors >= needed) {
      const slot = freeSlots.pop()!;
      const at = shared.dataBase + slot * SLOT;
      if (cfg.verify) {
        const w = at >>> 2;
        let sum = 0;
        for (let i = 0; i < 15; i++) {
          const v = payloadWord(sent, i);
          view[w + i] = v;
          sum = (sum + v) >>> 0;
        }
        view[w + 15] = sum;
      }
      seg[0].addr = at;
      if (cfg.verify) seg[1].addr = at + PAYLOAD;
      seqOfSlot[slot] = sent;
      try {
        driver.add(seg, slot);
      } catch (e) {
        if (e instanceof RingFullError) {
          freeSlots.push(slot);
          break;
        }
        throw e;
      }
      sent++;
      added++;
    }
    if (added > 0) driver.publish();
    let got = 0;
    while (driver.reclaim(out)) {
      got++;
      const slot = out.token;
      const seq = seqOfSlot[slot];
      if (seq !== expectReclaim) errors.push(`reclaimed buffer ${seq}, expected ${expectReclaim}`);
      expectReclaim++;
      if (cfg.verify) {
        if (out.len !== PAYLOAD) errors.push(`buffer ${seq}: used len ${out.len}`);
        const w = (shared.dataBase + slot * SLOT + PAYLOAD) >>> 2;
        for (let i = 0; i < 16; i++) {
          if (view[w + i] !== (payloadWord(seq, i) ^ 0xa5a5a5a5) >>> 0) {
            errors.push(`buffer ${seq}: writable word ${i} corrupted`);
            break;
          }
        }
      }
      freeSlots.push(slot);
      reclaimed++;
    }
    // the device stopped early (it found an error): nothing more will come back
    if (added === 0 && got === 0 && Atomics.load(control, 1) === 1) break;
  }
  Atomics.store(control, 0, 1);
  return { role: 'driver', buffers: reclaimed, errors, seconds: (performance.now() - start) / 1000 };
}

export function runDevice(shared: SharedRing, cfg: ThreadedRingConfig): LoopReport {
  const mem = new GuestMemory([{ gpa: 0, size: shared.buffer.byteLength, buffer: shared.buffer }]);
  const device = makeDevice(cfg.kind, mem, shared.layout, cfg.features);
  const view = new Uint32Array(shared.buffer);
  const control = new Int32Array(shared.control);
  const chain = new DescriptorChain(64);
  const mbuf = new PacketBuffer(2048);
  const errors: string[] = [];
  let seen = 0;
  const start = performance.now();
  while (seen < cfg.count && errors.length === 0) {
    let n = 0;
    while (n < cfg.burst && device.pop(chain)) {
      if (!cfg.verify) {
        mem.copyOut(chain.addr[0], mbuf, 0, chain.len[0]); // the packet copy a vhost dequeue does
      } else if (chain.count !== 2 || chain.writable[0] !== 0 || chain.writable[1] !== 1) {
        errors.push(`buffer ${seen}: unexpected chain shape`);
      } else {
        const r = chain.addr[0] >>> 2;
        const w = chain.addr[1] >>> 2;
        let sum = 0;
        for (let i = 0; i < 15; i++) sum = (sum + view[r + i]) >>> 0;
        if (sum !== view[r + 15] || view[r] !== payloadWord(seen, 0)) errors.push(`buffer ${seen}: payload checksum or sequence mismatch`);
        for (let i = 0; i < 16; i++) view[w + i] = (payloadWord(seen, i) ^ 0xa5a5a5a5) >>> 0;
      }
      device.push(chain.id, cfg.verify ? PAYLOAD : 0);
      seen++;
      n++;
    }
    if (n > 0) device.flush();
    else if (Atomics.load(control, 0) === 1) break;
  }
  Atomics.store(control, 1, 1);
  return { role: 'device', buffers: seen, errors, seconds: (performance.now() - start) / 1000 };
}
