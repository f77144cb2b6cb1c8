import { describe, expect, it } from 'vitest';
import {
  appArgs,
  backendOptions,
  ealArgs,
  nicEal,
  placeForwarding,
  shellQuote,
  testpmdArgs,
  vdevSpec,
  virtioUserOptions,
} from './options.ts';

describe('placeForwarding', () => {
  it('puts the main lcore on the other core', () => {
    expect(placeForwarding(0)).toEqual({ lcores: [0, 1], mainLcore: 1 });
    expect(placeForwarding(1)).toEqual({ lcores: [0, 1], mainLcore: 0 });
    expect(placeForwarding(3, [3, 2])).toEqual({ lcores: [2, 3], mainLcore: 2 });
  });
  it('refuses impossible placements', () => {
    expect(() => placeForwarding(2)).toThrow(/not in/);
    expect(() => placeForwarding(0, [0])).toThrow(/two lcores/);
  });
});

describe('role builders', () => {
  it('back-end: the command line verified on DPDK 22.11.11', () => {
    const argv = testpmdArgs(backendOptions({ filePrefix: 'vb', sockets: '/tmp/r/vhost-net.sock', placement: placeForwarding(0) }));
    expect(shellQuote(argv)).toBe(
      '--no-huge -m 1024 --no-pci --file-prefix=vb -l 0,1 --main-lcore 1 ' +
        '--vdev net_vhost0,iface=/tmp/r/vhost-net.sock,client=1,queues=1 -- -i --nb-cores=1 --total-num-mbufs=16384',
    );
  });

  it('virtio-user: server=1 with --single-file-segments, packed on request', () => {
    const argv = testpmdArgs(virtioUserOptions({ filePrefix: 'vu', socket: '/tmp/r/s', packed: true, placement: placeForwarding(1) }));
    expect(shellQuote(argv)).toBe(
      '--no-huge -m 1024 --no-pci --file-prefix=vu -l 0,1 --main-lcore 0 --single-file-segments ' +
        '--vdev net_virtio_user0,path=/tmp/r/s,server=1,queues=1,packed_vq=1 -- -i --nb-cores=1 --total-num-mbufs=16384',
    );
    const split = testpmdArgs(virtioUserOptions({ filePrefix: 'vu', socket: '/s', mrgRxbuf: false, inOrder: false }));
    expect(split).toContain('net_virtio_user0,path=/s,server=1,queues=1,mrg_rxbuf=0,in_order=0');
    // More than one pair needs the control queue, or virtio-user enables only pair 0.
    const mq = testpmdArgs(virtioUserOptions({ filePrefix: 'vu', socket: '/s', queues: 2 }));
    expect(mq.join(' ')).toContain('net_virtio_user0,path=/s,server=1,queues=2,cq=1 -- -i --nb-cores=1 --rxq=2 --txq=2');
    expect(testpmdArgs(virtioUserOptions({ filePrefix: 'vu', socket: '/s', queues: 2, cq: false })).join(' ')).toContain('queues=2,cq=0');
  });

  it('multi-queue and multi-VM back-end, debug log, test-plan app options', () => {
    const o = backendOptions({
      filePrefix: 'vhost',
      sockets: ['/r/vhost-net', '/r/vhost-net1'],
      queues: 2,
      debugLog: true,
      app: { portTopology: 'chained', txd: 1024, rxd: 1024, forwardMode: 'mac' },
    });
    const argv = testpmdArgs(o);
    expect(argv).toEqual([
      '--no-huge', '-m', '1024', '--no-pci', '--file-prefix=vhost', '--log-level=lib.vhost.config:debug',
      '--vdev', 'net_vhost0,iface=/r/vhost-net,client=1,queues=2',
      '--vdev', 'net_vhost1,iface=/r/vhost-net1,client=1,queues=2',
      '--', '-i', '--nb-cores=1', '--txd=1024', '--rxd=1024', '--rxq=2', '--txq=2', '--total-num-mbufs=16384',
      '--port-topology=chained', '--forward-mode=mac',
    ]);
  });

  it('a PCI NIC replaces --no-pci with an allow entry; software NICs become vdevs', () => {
    const pci = testpmdArgs(backendOptions({ filePrefix: 'p', sockets: '/s', nic: { kind: 'pci', address: '0000:3b:00.0' } }));
    expect(pci).not.toContain('--no-pci');
    expect(pci.join(' ')).toContain('-a 0000:3b:00.0');
    const veth = testpmdArgs(backendOptions({ filePrefix: 'p', sockets: '/s', nic: { kind: 'af_packet', iface: 'veth0' } }));
    expect(veth.join(' ')).toContain('--no-pci --file-prefix=p --vdev net_af_packet0,iface=veth0 --vdev net_vhost0,');
    expect(nicEal({ kind: 'pcap', rxPcap: '/in.pcap', txPcap: '/out.pcap' }).vdev).toEqual({
      kind: 'raw',
      spec: 'net_pcap0,rx_pcap=/in.pcap,tx_pcap=/out.pcap',
    });
    expect(nicEal({ kind: 'tap', id: 1, iface: 'tap9' }).vdev).toEqual({ kind: 'raw', spec: 'net_tap1,iface=tap9' });
  });
});

describe('low-level builders', () => {
  it('EAL defaults and switches', () => {
    expect(ealArgs({ filePrefix: 'x' })).toEqual(['--no-huge', '-m', '1024', '--no-pci', '--file-prefix=x']);
    expect(ealArgs({ filePrefix: 'x', noHuge: false, memoryMb: 256, inMemory: true, extra: ['--iova-mode=va'] })).toEqual([
      '-m', '256', '--no-pci', '--file-prefix=x', '--in-memory', '--iova-mode=va',
    ]);
    expect(() => ealArgs({ filePrefix: 'a b' })).toThrow(/file prefix/);
  });

  it('testpmd options', () => {
    expect(appArgs()).toEqual(['-i']);
    expect(appArgs({ interactive: false, autoStart: true, txFirst: true, burst: 64, txPkts: [64, 64], forwardMode: 'txonly' })).toEqual([
      '-a', '--burst=64', '--forward-mode=txonly', '--txpkts=64,64', '--tx-first',
    ]);
    expect(() => appArgs({ nbCores: 1.5 })).toThrow(/integer/);
  });

  it('vdev devargs', () => {
    expect(vdevSpec({ kind: 'vhost', iface: '/s' })).toBe('net_vhost0,iface=/s');
    expect(vdevSpec({ kind: 'vhost', id: 2, iface: '/s', client: false, extra: { 'iommu-support': 1 } })).toBe(
      'net_vhost2,iface=/s,client=0,iommu-support=1',
    );
    expect(vdevSpec({ kind: 'virtio-user', path: '/s', queueSize: 1024, mac: '00:11:22:33:44:55', cq: true })).toBe(
      'net_virtio_user0,path=/s,queue_size=1024,mac=00:11:22:33:44:55,cq=1',
    );
    expect(() => vdevSpec({ kind: 'vhost', iface: '/a,b' })).toThrow(/contains/);
  });

  it('shellQuote quotes only what needs it', () => {
    expect(shellQuote(['a', 'b c', "it's", '--x=1,2'])).toBe(`a 'b c' 'it'\\''s' --x=1,2`);
  });
});
