import { existsSync, readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { skipReason, tempDir } from '../transport/real/test-support.ts';
import { runTap } from './tap.ts';

describe.skipIf(skipReason !== undefined)(`vhostsim tap${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => {
    dir = tempDir('vhostsim-tapcli-');
  });
  afterEach(() => dir.cleanup());

  it.each(['SIGINT', 'SIGTERM'] as const)('stops cleanly on %s: socket removed, handlers gone', async (sig) => {
    const logs: string[] = [];
    const before = process.listenerCount(sig);
    const t = runTap({ frontend: dir.path('f.sock'), listen: dir.path('b.sock'), out: dir.path('t.jsonl'), log: (l) => logs.push(l) });
    expect(existsSync(dir.path('b.sock'))).toBe(true);
    expect(process.listenerCount(sig)).toBe(before + 1);
    // The handler, as the signal would run it (without signalling the test process).
    process.emit(sig, sig);
    expect(await t.done).toBe(`tap: ${sig}: stopped after 0 session(s), 0 message(s)`);
    expect(process.listenerCount(sig)).toBe(before);
    expect(existsSync(dir.path('b.sock'))).toBe(false);
    expect(readFileSync(dir.path('t.jsonl'), 'utf8')).toBe('');
    expect(logs[0]).toMatch(/^tap: listening on .*b\.sock, relaying to .*f\.sock/);
  });

  it('refuses a socket path that is taken', () => {
    const t = runTap({ frontend: dir.path('f.sock'), listen: dir.path('b.sock'), out: dir.path('t.jsonl') });
    try {
      expect(() => runTap({ frontend: dir.path('f.sock'), listen: dir.path('b.sock'), out: dir.path('t2.jsonl') })).toThrow(/cannot listen on .*EADDRINUSE/);
    } finally {
      t.stop();
    }
  });
});
