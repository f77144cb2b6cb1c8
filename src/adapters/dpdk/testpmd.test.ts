import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { killAllTestpmds, liveTestpmds, Testpmd } from './testpmd.ts';
import { runtimeDirFor, uniquePrefix } from './runtime.ts';
import { which } from './find.ts';

const FAKE = fileURLToPath(new URL('./fixtures/fake-testpmd.mjs', import.meta.url));

function fake(extra: string[] = [], prefix = uniquePrefix('fake')): Testpmd {
  return Testpmd.launch({ testpmd: process.execPath, args: [FAKE, `--file-prefix=${prefix}`, ...extra], stdbuf: false, name: 'fake' });
}

afterEach(async () => {
  await killAllTestpmds();
});

describe('Testpmd driver (against a fake prompt)', () => {
  it('runs commands at the prompt and returns their output without the echo', async () => {
    const p = fake();
    const r = await p.command('set fwd io');
    expect(r.lines).toEqual(['did set fwd io']);
    expect(p.prompts).toBe(2);
    const stats = await p.portStats();
    expect(stats).toEqual([expect.objectContaining({ port: 0, rxPackets: 100, txPackets: 90, rxPps: 10 })]);
    expect(p.lines.some((l) => l.stream === 'stderr' && l.text === 'EAL: a line on stderr')).toBe(true);
    expect(p.lines.every((l, i) => i === 0 || l.t >= p.lines[i - 1]!.t)).toBe(true);
    await p.quit();
  });

  it('serialises commands issued together', async () => {
    const p = fake();
    const [a, b, c] = await Promise.all([p.command('slow'), p.command('one'), p.command('two')]);
    expect(a.lines).toEqual(['slow done']);
    expect(b.lines).toEqual(['did one']);
    expect(c.lines).toEqual(['did two']);
    await p.quit();
  });

  it('counts a prompt once even when a log line lands right after it', async () => {
    const p = fake();
    await p.command('log');
    // The command is done at the prompt; the log line may still be on its way.
    await p.waitFor('read message', { timeoutMs: 5_000 });
    expect(p.lines.some((l) => l.text === 'testpmd> VHOST_CONFIG: (/fake.sock) read message VHOST_USER_GET_FEATURES')).toBe(true);
    expect((await p.command('next')).lines).toEqual(['did next']);
    const log = p.vhostLog();
    expect(log.events.map((e) => e.kind)).toEqual(['message']);
    expect(log.outside).toHaveLength(1);
    await p.quit();
  });

  it('counts a prompt split by a forwarding core printing whole lines inside it', async () => {
    const p = fake();
    expect((await p.command('split', 3_000)).lines[0]).toBe('did split');
    expect(p.lines.some((l) => l.text === 'tport 0/queue 0: received 1 packets')).toBe(true);
    expect((await p.command('next')).lines).toEqual(['did next']);
    await p.quit();
  });

  it('waits for lines already seen and lines to come, and times out with the tail', async () => {
    const p = fake(['--wait-ms=150']);
    await p.waitFor('waiting for client connection', { timeoutMs: 5_000 });
    const mark = p.mark();
    const i = await p.waitFor(/^Done$/, { since: mark, timeoutMs: 5_000 });
    expect(i).toBeGreaterThanOrEqual(mark);
    expect(await p.waitFor('Detected CPU lcores')).toBe(0);
    await expect(p.waitFor('never printed', { timeoutMs: 100 })).rejects.toThrow(/no "never printed" within 100 ms[\s\S]*\[fake\] Done/);
    await expect(p.setForwardMode('bogus')).rejects.toThrow(/Bad arguments/);
    await p.quit();
  });

  it('quit exits cleanly, removes the runtime dir and forgets the process', async () => {
    const prefix = uniquePrefix('fake');
    const dir = runtimeDirFor(prefix);
    mkdirSync(dir, { recursive: true });
    const p = fake([], prefix);
    await p.waitForPrompt();
    expect(liveTestpmds()).toContain(p);
    expect(await p.quit()).toEqual({ code: 0, signal: null });
    expect(p.running).toBe(false);
    expect(p.lines.at(-1)!.text).toBe('Bye...');
    expect(existsSync(dir)).toBe(false);
    expect(liveTestpmds()).not.toContain(p);
    await expect(p.command('again')).rejects.toThrow(/exited/);
  });

  it('quit falls back to SIGKILL; kill is a SIGKILL', async () => {
    const stubborn = fake(['--ignore-quit']);
    await stubborn.waitForPrompt();
    expect(await stubborn.quit(300)).toEqual({ code: null, signal: 'SIGKILL' });
    const p = fake();
    await p.waitForPrompt();
    expect(await p.kill()).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('an exit rejects pending waits with the reason', async () => {
    const p = fake();
    const waiting = p.waitFor('never', { timeoutMs: 10_000 });
    const cmd = p.command('crash');
    await expect(waiting).rejects.toThrow(/fake exited \(code 3\) before "never"/);
    await expect(cmd).rejects.toThrow(/exited/);
    expect(p.exitInfo).toEqual({ code: 3, signal: null });
  });

  it('wraps the process in setpriv --pdeathsig when setpriv exists', () => {
    const p = fake();
    if (which('setpriv')) expect(p.commandLine.slice(0, 4)).toEqual([which('setpriv'), '--pdeathsig', 'KILL', '--']);
    else expect(p.commandLine[0]).toBe(process.execPath);
    expect(p.filePrefix).toMatch(/^vhs-fake-/);
  });
});

describe('Testpmd launch failures', () => {
  it('throws for a missing executable without crashing the process', () => {
    expect(() => Testpmd.launch({ testpmd: '/nonexistent/testpmd', args: [], stdbuf: false, setpriv: false })).toThrow(/could not spawn/);
  });
});
