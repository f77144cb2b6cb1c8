import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { traceReplay } from './trace-replay.ts';

const CAPTURE = join(
  dirname(fileURLToPath(import.meta.url)),
  '../../../shared/reference/traces/dpdk22.11-virtio-user-vhost-split-reconnect.jsonl',
);

const scratch = mkdtempSync(join(tmpdir(), 'vhostsim-replay-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The capture with one record's payload replaced. */
function tampered(request: number, dir: 'f2b' | 'b2f', payload: string): string {
  const lines = readFileSync(CAPTURE, 'utf8').trim().split('\n');
  const i = lines.findIndex((l) => {
    const r = JSON.parse(l);
    return r.request === request && r.dir === dir;
  });
  const r = JSON.parse(lines[i]);
  lines[i] = JSON.stringify({ ...r, payload });
  const file = join(scratch, `tampered-${request}-${dir}.jsonl`);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

describe('vhostsim trace replay', () => {
  it.each(['backend', 'frontend'] as const)('replays the real capture as the %s without divergence', (as) => {
    const { report, lines } = traceReplay(CAPTURE, { as });
    expect(report.diverged).toBe(false);
    expect(lines.at(-1)).toMatch(/0 differ, 0 missing, 0 extra$/);
  });

  it('reports a back-end reply the model would not send as a divergence', () => {
    // GET_FEATURES reply with one feature bit fewer than DPDK 22.11's net_vhost offers
    const { report, lines } = traceReplay(tampered(1, 'b2f', 'cbe7667c0c000000'), { as: 'backend' });
    expect(report.diverged).toBe(true);
    expect(lines.some((l) => /differs\s+GET_FEATURES/.test(l))).toBe(true);
  });

  it('reports a front-end request the model would not send as a divergence', () => {
    // SET_PROTOCOL_FEATURES asking for LOG_SHMFD too, which virtio-user 22.11 never does
    const { report } = traceReplay(tampered(16, 'f2b', '0b00010000000000'), { as: 'frontend' });
    expect(report.diverged).toBe(true);
  });

  it('refuses a profile it cannot replay', () => {
    expect(() => traceReplay(CAPTURE, { as: 'frontend', profile: 'qemu-7.2' })).toThrow(/cannot be replayed/);
  });
});
