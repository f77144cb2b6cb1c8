import { describe, expect, it } from 'vitest';
import { runRingOnTwoThreads } from '../src/sim/threaded-run.ts';
import type { RingKind } from '../src/ring/factory.ts';

// Driver and device on two worker threads over one SharedArrayBuffer. Each of the
// 10^6 buffers carries a checksummed, sequence-keyed payload the device verifies and
// a writable half the device fills and the driver verifies; so a missing barrier,
// a lost or repeated buffer, or a torn descriptor shows up as an error.
const COUNT = Number(process.env.VHOSTSIM_THREAD_BUFFERS ?? 1_000_000);

describe.each<RingKind>(['split', 'packed'])('%s ring across two threads', (kind) => {
  it(`passes ${COUNT} checksummed buffers with nothing lost, duplicated, reordered or corrupted`, async () => {
    const r = await runRingOnTwoThreads({
      kind,
      size: 256,
      features: { indirect: false, eventIdx: true, inOrder: false },
      count: COUNT,
      burst: 32,
      verify: true,
    });
    expect(r.device.errors).toEqual([]);
    expect(r.driver.errors).toEqual([]);
    expect(r.device.buffers).toBe(COUNT);
    expect(r.driver.buffers).toBe(COUNT);
  });
});
