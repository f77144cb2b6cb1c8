import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findStdbuf, findTestpmd, which } from './find.ts';
import { MAX_SOCKET_PATH, RunDir, runtimeDirFor, uniquePrefix } from './runtime.ts';

const dir = mkdtempSync(join(tmpdir(), 'vhostsim-find-'));
const bin = join(dir, 'bin');
const other = join(dir, 'other');
const exe = (p: string): string => {
  writeFileSync(p, '#!/bin/sh\nexit 0\n');
  chmodSync(p, 0o755);
  return p;
};
mkdirSync(bin);
mkdirSync(other);
const onPath = exe(join(bin, 'dpdk-testpmd'));
const custom = exe(join(other, 'my-testpmd'));
writeFileSync(join(other, 'not-exec'), '');

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('findTestpmd', () => {
  it('prefers the option, then $VHOSTSIM_TESTPMD, then PATH', () => {
    const env = { PATH: bin, VHOSTSIM_TESTPMD: custom };
    expect(findTestpmd({ env: { PATH: bin } })).toEqual({ path: onPath, source: 'path' });
    expect(findTestpmd({ env })).toEqual({ path: custom, source: 'env' });
    expect(findTestpmd({ env, testpmd: onPath })).toEqual({ path: onPath, source: 'option' });
    expect(findTestpmd({ env: { PATH: other } })).toBeUndefined();
  });

  it('an explicit path that is not executable is an error, not a fall-through', () => {
    expect(() => findTestpmd({ env: { PATH: bin }, testpmd: join(other, 'not-exec') })).toThrow(/--testpmd .* is not an executable/);
    expect(() => findTestpmd({ env: { PATH: bin, VHOSTSIM_TESTPMD: '/nowhere/x' } })).toThrow(/VHOSTSIM_TESTPMD/);
    // A bare name in the variable is looked up on PATH.
    expect(findTestpmd({ env: { PATH: bin, VHOSTSIM_TESTPMD: 'dpdk-testpmd' } })).toEqual({ path: onPath, source: 'env' });
  });

  it('which and findStdbuf search PATH', () => {
    expect(which('dpdk-testpmd', `${other}:${bin}`)).toBe(onPath);
    expect(which('not-exec', other)).toBeUndefined();
    expect(findStdbuf({ PATH: bin })).toBeUndefined();
  });
});

describe('run names', () => {
  it('prefixes are unique and valid for --file-prefix', () => {
    const a = uniquePrefix('v u!');
    const b = uniquePrefix('v u!');
    expect(a).not.toBe(b);
    expect(a).toMatch(/^vhs-vu-\d+-\d+-[0-9a-f]+$/);
    expect(runtimeDirFor(a).endsWith(`/dpdk/${a}`)).toBe(true);
  });

  it('RunDir hands out sockets and prefixes and removes everything', () => {
    const run = RunDir.create('t');
    const sock = run.socket('vhost-net.sock');
    expect(sock.startsWith(run.dir)).toBe(true);
    expect(() => run.socket('x'.repeat(MAX_SOCKET_PATH))).toThrow(/too long/);
    const p = run.prefix('vu');
    mkdirSync(runtimeDirFor(p), { recursive: true });
    writeFileSync(sock, '');
    run.dispose();
    expect(existsSync(run.dir)).toBe(false);
    expect(existsSync(runtimeDirFor(p))).toBe(false);
  });
});
