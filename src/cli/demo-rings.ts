import { GuestMemory } from '../memory/index.ts';
import { DescriptorChain, type RingFeatures, type Segment, type UsedBuffer } from '../ring/types.ts';
import { layoutSplitRing, splitRingFootprint, SplitDriver, SplitDevice } from '../ring/split/index.ts';
import { layoutPackedRing, packedRingFootprint, PackedDriver, PackedDevice } from '../ring/packed/index.ts';
import { formatPacked, formatSplit, snapshotPacked, snapshotSplit } from '../ring/inspect.ts';

/**
 * `vhostsim demo rings`: a split and a packed ring driven through one full wrap,
 * with the ring bytes decoded from guest memory after every step, so the index
 * arithmetic (split) and the wrap counters (packed) can be watched rather than read
 * about.
 */
export interface RingDemoOptions {
  size: number;
  color: boolean;
}

const FEATURES: RingFeatures = { indirect: false, eventIdx: false, inOrder: false };
const DATA = 0x1000;

interface Step {
  title: string;
  body: string;
}

function header(text: string, color: boolean): string {
  return color ? `\x1b[1m${text}\x1b[0m` : text;
}

/** Buffers the demo posts: a request (readable) or a request + reply (readable + writable). */
function buffersFor(n: number): { segs: Segment[]; what: string }[] {
  const out: { segs: Segment[]; what: string }[] = [];
  for (let i = 0; i < n; i++) {
    const at = DATA + i * 0x100;
    out.push(
      i % 2 === 0
        ? { segs: [{ addr: at, len: 64, writable: false }], what: `buffer ${i}: 64 readable bytes` }
        : {
            segs: [
              { addr: at, len: 12, writable: false },
              { addr: at + 0x80, len: 128, writable: true },
            ],
            what: `buffer ${i}: 12 readable + 128 writable bytes (2 descriptors)`,
          },
    );
  }
  return out;
}

function splitDemo(size: number): Step[] {
  const layout = layoutSplitRing(0, size);
  const mem = new GuestMemory([{ gpa: 0, size: DATA + 0x10000 }]);
  mem.fill(0, splitRingFootprint(size), 0);
  const driver = new SplitDriver<string>(mem, layout, FEATURES);
  const device = new SplitDevice(mem, layout, FEATURES);
  const chain = new DescriptorChain(size);
  const out: UsedBuffer<string> = { token: '', len: 0, id: 0 };
  const steps: Step[] = [];
  const show = () => formatSplit(snapshotSplit(mem, layout), { nextAvail: device.saveState().lastAvailIdx, nextUsed: device.saveState().lastUsedIdx });
  steps.push({ title: `split ring, ${size} entries: desc @0x${layout.desc.toString(16)}, avail @0x${layout.avail.toString(16)}, used @0x${layout.used.toString(16)}`, body: show() });
  // Enough buffers that avail.idx and used.idx pass the ring size: slots are idx mod size.
  const bufs = buffersFor(size + 2);
  let next = 0;
  while (next < bufs.length) {
    const batch: string[] = [];
    while (next < bufs.length && driver.freeDescriptors >= bufs[next].segs.length && batch.length < 2) {
      const head = driver.add(bufs[next].segs, bufs[next].what);
      batch.push(`${bufs[next].what} → head ${head}`);
      next++;
    }
    const kick = driver.publish();
    steps.push({ title: `driver adds ${batch.length} buffer(s) and publishes avail.idx (kick: ${kick ? 'yes' : 'no'})`, body: batch.map((b) => '  ' + b).join('\n') + '\n' + show() });
    const popped: number[] = [];
    while (device.pop(chain)) {
      popped.push(chain.id);
      device.push(chain.id, chain.writableBytes > 0 ? 100 : 0);
    }
    const notify = device.flush();
    steps.push({
      title: `device pops head(s) ${popped.join(', ')}, writes used entries and used.idx (notify: ${notify ? 'yes' : 'no'})`,
      body: show(),
    });
    const got: string[] = [];
    while (driver.reclaim(out)) got.push(`head ${out.id} len ${out.len}`);
    steps.push({ title: `driver reclaims ${got.join('; ')}; its descriptors return to the free list`, body: show() });
  }
  return steps;
}

function packedDemo(size: number): Step[] {
  const layout = layoutPackedRing(0, size);
  const mem = new GuestMemory([{ gpa: 0, size: DATA + 0x10000 }]);
  mem.fill(0, packedRingFootprint(size), 0);
  const driver = new PackedDriver<string>(mem, layout, FEATURES);
  const device = new PackedDevice(mem, layout, FEATURES);
  const chain = new DescriptorChain(size);
  const out: UsedBuffer<string> = { token: '', len: 0, id: 0 };
  const steps: Step[] = [];
  const state = () => {
    const s = device.saveState();
    return `  device: next avail slot ${s.lastAvailIdx} (wrap ${+s.availWrap}), next used slot ${s.lastUsedIdx} (wrap ${+s.usedWrap})`;
  };
  const show = () => formatPacked(snapshotPacked(mem, layout)) + '\n' + state();
  steps.push({
    title: `packed ring, ${size} entries: ring @0x${layout.desc.toString(16)}, driver event @0x${layout.driverEvent.toString(16)}, device event @0x${layout.deviceEvent.toString(16)}`,
    body: show(),
  });
  const bufs = buffersFor(size + 2);
  let next = 0;
  while (next < bufs.length) {
    const batch: string[] = [];
    while (next < bufs.length && driver.freeDescriptors >= bufs[next].segs.length && batch.length < 2) {
      const id = driver.add(bufs[next].segs, bufs[next].what);
      batch.push(`${bufs[next].what} → id ${id}`);
      next++;
    }
    const kick = driver.publish();
    steps.push({
      title: `driver writes descriptors, head flags last: AVAIL=wrap, USED=!wrap (kick: ${kick ? 'yes' : 'no'})`,
      body: batch.map((b) => '  ' + b).join('\n') + '\n' + show(),
    });
    const popped: { id: number; w: number }[] = [];
    while (device.pop(chain)) popped.push({ id: chain.id, w: chain.writableBytes });
    // Complete in reverse order: packed rings allow out-of-order completion.
    for (const p of popped.reverse()) device.push(p.id, p.w > 0 ? 100 : 0);
    const notify = device.flush();
    steps.push({
      title: `device completes id(s) ${popped.map((p) => p.id).join(', ')} out of order: used descriptors get AVAIL=USED=wrap (notify: ${notify ? 'yes' : 'no'})`,
      body: show(),
    });
    const got: string[] = [];
    while (driver.reclaim(out)) got.push(`id ${out.id} len ${out.len}`);
    steps.push({ title: `driver reclaims ${got.join('; ')}`, body: show() });
  }
  return steps;
}

export function runRingDemo(opts: RingDemoOptions): string {
  const size = opts.size;
  const parts: string[] = [];
  const render = (steps: Step[]) =>
    steps.forEach((s, i) => parts.push(header(`[${String(i).padStart(2)}] ${s.title}`, opts.color) + '\n' + s.body + '\n'));
  render(splitDemo(size));
  parts.push('');
  render(packedDemo(size));
  return parts.join('\n');
}
