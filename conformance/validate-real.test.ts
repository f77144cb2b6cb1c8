/**
 * `vhostsim validate` on the loopback equivalents of plan cases 1, 3, 10 and 12, and of case 1
 * with 2 queue pairs (models/testplans/pvp-reconnect-loopback/): each runs in the model and on
 * real DPDK 22.11 (virtio-user server=1 ↔ vhost client=1), and the two must agree: the same expect verdicts,
 * the same request names in every session, the same ring bases wherever the model says they do
 * not depend on the amount of traffic, and traffic through in the same steps.
 *
 * Skips, with the reason, when testpmd is missing or cannot start here.
 */
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { dpdkAvailability, killAllTestpmds } from '../src/adapters/dpdk/index.ts';
import { validateCommand } from '../src/cli/validate.ts';

const av = dpdkAvailability();
const title = av.ok ? `validate on real ${av.version ?? 'DPDK'}: loopback plan cases` : `validate on real DPDK (skipped: ${av.reason})`;
if (!av.ok) console.warn(`validate-real: skipped: ${av.reason}`);

const CASES = [
  'case01-loopback-split-reconnect-from-vhost-user.json',
  'case03-loopback-split-reconnect-stability.json',
  'case10-loopback-packed-reconnect-from-vhost-user.json',
  'case12-loopback-packed-reconnect-stability.json',
  'case01-loopback-split-reconnect-2queues.json',
].map((f) => fileURLToPath(new URL(`../models/testplans/pvp-reconnect-loopback/${f}`, import.meta.url)));

afterEach(async () => {
  await killAllTestpmds();
});

describe.skipIf(!av.ok)(title, () => {
  it.each(CASES.map((file) => ({ file, name: file.split('/').pop()!.replace(/\.json$/, '') })))('$name: model and real agree', async ({ file }) => {
    const lines: string[] = [];
    const t0 = performance.now();
    const { cases, exitCode } = await validateCommand([file], { ...(av.ok ? { testpmd: av.testpmd } : {}), write: (l) => lines.push(l), progress: false });
    console.log(`${lines.join('\n')}\n(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    const c = cases[0]!;
    expect(c.real.result.real.error).toBeUndefined();
    // Same verdicts, expect by expect.
    expect(c.real.observation.expects.map((e) => [e.path, e.iteration, e.verdict])).toEqual(c.model.expects.map((e) => [e.path, e.iteration, e.verdict]));
    expect(c.model.expects.every((e) => e.verdict === 'holds')).toBe(true);
    // Same sessions, same request names wherever the model predicts them.
    expect(c.real.observation.sessions).toHaveLength(c.model.sessions.length);
    c.model.sessions.forEach((m, k) => {
      const r = c.real.observation.sessions[k]!;
      expect(r.ready, `session ${k + 1} ready`).toBe(true);
      if (m.requestsDetermined) expect(r.requests, `session ${k + 1} requests`).toEqual(m.requests);
      expect(r.bases.map((b) => [b.request, b.vring]), `session ${k + 1} bases`).toEqual(m.bases.map((b) => [b.request, b.vring]));
      m.bases.forEach((b, j) => {
        if (b.determined) expect(r.bases[j]!.value, `session ${k + 1} ${b.request} vring ${b.vring}`).toBe(b.value);
      });
    });
    // Traffic through in the same steps (counts differ: real rates are not modelled).
    expect(c.real.observation.traffic.map((t) => t.ok)).toEqual(c.model.traffic.map((t) => t.ok));
    expect(c.comparison.differ).toBe(0);
    expect(exitCode).toBe(0);
  }, 60_000);
});
