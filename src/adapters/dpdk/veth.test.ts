import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backendOptions, nicEal, testpmdArgs } from './options.ts';
import { findPmd, generatorOptions } from './pvp.ts';
import { MAX_IFNAME, VethError, createVethPair, validIfname, vethNames, vethPrerequisites, vethSetupCommands, type Runner } from './veth.ts';

/** Records commands; fails the first one matching `failOn`. */
function fakeRunner(failOn?: RegExp): { run: Runner; calls: string[] } {
  const calls: string[] = [];
  const run: Runner = (argv) => {
    const line = argv.join(' ');
    calls.push(line);
    return failOn?.test(line) ? { status: 2, stderr: 'RTNETLINK answers: Operation not permitted\n' } : { status: 0, stderr: '' };
  };
  return { run, calls };
}

describe('veth names', () => {
  it('are unique, valid interface names of at most 15 bytes, a and b ends of one stem', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const { a, b } = vethNames();
      for (const n of [a, b]) {
        expect(validIfname(n), n).toBe(true);
        expect(n.length).toBeLessThanOrEqual(MAX_IFNAME);
        expect(seen.has(n)).toBe(false);
        seen.add(n);
      }
      expect(a.slice(0, -1)).toBe(b.slice(0, -1));
    }
  });

  it('rejects what the kernel would', () => {
    for (const bad of ['', 'a'.repeat(16), 'has space', 'sl/ash', '.', '..']) expect(validIfname(bad), bad).toBe(false);
  });
});

describe('veth set-up', () => {
  it('adds the pair, sets the MTU and brings both ends up, in that order', () => {
    expect(vethSetupCommands({ a: 'x0a', b: 'x0b' }, 9000)).toEqual([
      ['link', 'add', 'x0a', 'type', 'veth', 'peer', 'name', 'x0b'],
      ['link', 'set', 'dev', 'x0a', 'mtu', '9000'],
      ['link', 'set', 'dev', 'x0b', 'mtu', '9000'],
      ['link', 'set', 'dev', 'x0a', 'up'],
      ['link', 'set', 'dev', 'x0b', 'up'],
    ]);
    expect(vethSetupCommands({ a: 'x0a', b: 'x0b' })).toHaveLength(3);
  });

  it('runs the commands through `ip` and deletes the pair once', () => {
    const f = fakeRunner();
    const p = createVethPair({ names: { a: 'tvh0a', b: 'tvh0b' }, mtu: 1400, ip: '/x/ip', run: f.run, skipRootCheck: true, quiet: false });
    expect(f.calls).toEqual([
      '/x/ip link add tvh0a type veth peer name tvh0b',
      '/x/ip link set dev tvh0a mtu 1400',
      '/x/ip link set dev tvh0b mtu 1400',
      '/x/ip link set dev tvh0a up',
      '/x/ip link set dev tvh0b up',
    ]);
    expect(p.alive).toBe(true);
    p.delete();
    p.delete();
    expect(p.alive).toBe(false);
    expect(f.calls.slice(5)).toEqual(['/x/ip link del dev tvh0a']);
  });

  it('deletes a half-made pair and says what failed', () => {
    const f = fakeRunner(/ up$/);
    expect(() => createVethPair({ names: { a: 'tvh1a', b: 'tvh1b' }, ip: '/x/ip', run: f.run, skipRootCheck: true, quiet: false })).toThrow(
      /ip link set dev tvh1a up: RTNETLINK answers: Operation not permitted/,
    );
    expect(f.calls.at(-1)).toBe('/x/ip link del dev tvh1a');
  });

  it('refuses bad names and MTUs before running anything', () => {
    const f = fakeRunner();
    const base = { ip: '/x/ip', run: f.run, skipRootCheck: true };
    expect(() => createVethPair({ ...base, names: { a: 'way-too-long-name0', b: 'b' } })).toThrow(VethError);
    expect(() => createVethPair({ ...base, names: { a: 'ok0a', b: 'ok0b' }, mtu: 20 })).toThrow(/MTU 20/);
    expect(f.calls).toEqual([]);
  });

  it('says clearly when not root or when `ip` is missing', () => {
    expect(vethPrerequisites({ uid: 1000 })).toEqual({ reason: expect.stringMatching(/needs root.*uid 1000/) });
    expect(vethPrerequisites({ uid: 0, pathVar: '/nonexistent' })).toEqual({ reason: expect.stringMatching(/`ip` \(iproute2\) not found/) });
    expect(vethPrerequisites({ uid: 0, ip: '/x/ip' })).toEqual({ ip: '/x/ip' });
  });
});

describe('NIC stand-in command lines', () => {
  it('puts af_packet on a veth end for the host and the generator, a PCI address for a lab', () => {
    expect(nicEal({ kind: 'af_packet', iface: 'vhs1a' })).toEqual({ vdev: { kind: 'raw', spec: 'net_af_packet0,iface=vhs1a' } });
    expect(nicEal({ kind: 'pci', address: '0000:81:00.0' })).toEqual({ allow: ['0000:81:00.0'] });
    const g = testpmdArgs(generatorOptions({ filePrefix: 'gen', nic: { kind: 'af_packet', iface: 'vhs1b' }, memoryMb: 128, drivers: ['/p/librte_net_af_packet.so'] }));
    expect(g.join(' ')).toBe(
      '--no-huge -m 128 --no-pci --file-prefix=gen -l 0,1 --main-lcore 0 -d /p/librte_net_af_packet.so --vdev net_af_packet0,iface=vhs1b ' +
        '-- -i --nb-cores=1 --total-num-mbufs=8192 --port-topology=loop --forward-mode=rxonly',
    );
    // A lab host: the PCI port on hugepages (no --no-huge, no --no-pci), vhost after it.
    const lab = testpmdArgs(backendOptions({ filePrefix: 'h', sockets: '/s', nic: { kind: 'pci', address: '0000:81:00.0' }, hugepages: true }));
    expect(lab.slice(0, lab.indexOf('--'))).toEqual(['-m', '1024', '-a', '0000:81:00.0', '--file-prefix=h', '--vdev', 'net_vhost0,iface=/s,client=1,queues=1']);
  });
});

describe('findPmd', () => {
  it('finds a PMD object in $VHOSTSIM_DPDK_PMD_DIR first', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhostsim-pmd-'));
    try {
      writeFileSync(join(dir, 'librte_net_af_packet.so'), '');
      expect(findPmd('net_af_packet', { VHOSTSIM_DPDK_PMD_DIR: dir })).toBe(join(dir, 'librte_net_af_packet.so'));
      expect(findPmd('net_nonexistent_pmd', { VHOSTSIM_DPDK_PMD_DIR: dir })).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
