import { startTsWorker, firstMessage } from './ts-worker.ts';
import { allocateSharedRing, type LoopReport, type ThreadedRingConfig } from './threaded-ring.ts';

/** Runs the driver and the device of one ring on two worker threads; resolves with both reports. */
export async function runRingOnTwoThreads(cfg: ThreadedRingConfig): Promise<{ driver: LoopReport; device: LoopReport }> {
  const shared = allocateSharedRing(cfg);
  const url = new URL('./ring-worker.ts', import.meta.url);
  const device = startTsWorker(url, { role: 'device', shared, cfg });
  const driver = startTsWorker(url, { role: 'driver', shared, cfg });
  try {
    const [d, v] = await Promise.all([firstMessage<LoopReport>(driver), firstMessage<LoopReport>(device)]);
    return { driver: d, device: v };
  } finally {
    await Promise.all([driver.terminate(), device.terminate()]);
  }
}
