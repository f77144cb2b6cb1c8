import { parentPort, workerData } from 'node:worker_threads';
import { runDevice, runDriver, type SharedRing, type ThreadedRingConfig } from './threaded-ring.ts';

// Entry point of a ring worker thread: runs one side of a threaded ring and reports.
const { role, shared, cfg } = workerData as { role: 'driver' | 'device'; shared: SharedRing; cfg: ThreadedRingConfig };
const report = role === 'driver' ? runDriver(shared, cfg) : runDevice(shared, cfg);
parentPort!.postMessage(report);
