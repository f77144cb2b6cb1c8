import { Worker } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';

/**
 * Starts a worker thread that runs a TypeScript module directly (no build step).
 * tsx's scoped `tsImport` is used rather than a global loader hook so the same
 * call works under plain tsx and inside the test runner's own module loader.
 */
export function startTsWorker(moduleUrl: URL, workerData: unknown): Worker {
  const base = pathToFileURL(process.cwd() + '/').href;
  const boot =
    `import { tsImport } from 'tsx/esm/api';\n` +
    `await tsImport(${JSON.stringify(moduleUrl.href)}, ${JSON.stringify(base)});\n`;
  return new Worker(boot, { eval: true, workerData });
}

/** Resolves with the worker's first message; rejects on error or an exit before it. */
export function firstMessage<T>(worker: Worker): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`worker exited with code ${code} before answering`)));
  });
}
