import { describe, expect, it } from 'vitest';
import { dpdk2211Profile, parseNetVhostArgs, DPDK_22_11_NET_VHOST_FEATURES, DPDK_22_11_VIRTIO_NET_SUPPORTED_FEATURES } from './profile.ts';
import { DPDK_22_11_PROTOCOL_FEATURES, DPDK_22_11_PROTOCOL_FEATURES_POSTCOPY } from '../../protocol/index.ts';

describe('dpdk-22.11 profile', () => {
  it('VIRTIO_NET_SUPPORTED_FEATURES is 0xf7c66ffcb', () => {
    expect(DPDK_22_11_VIRTIO_NET_SUPPORTED_FEATURES).toBe(0xf7c66ffcbn);
  });

  it('net_vhost defaults offer features 0xd7c66e7cb and protocol features 0x10cbf', () => {
    const p = dpdk2211Profile();
    expect(p.features).toBe(DPDK_22_11_NET_VHOST_FEATURES);
    expect(p.features).toBe(0xd7c66e7cbn);
    expect(p.protocolFeatures).toBe(DPDK_22_11_PROTOCOL_FEATURES);
    expect(p.queueNum).toBe(128);
    expect(p.maxPayload).toBe(632);
    expect(p.options.client).toBe(false);
    expect(p.options.reconnect).toBe(true);
    expect(p.options.inflight).toBe(false);
    expect(p.options.iommuSupport).toBe(false);
  });

  it('iommu-support=1 adds IOMMU_PLATFORM (bit 33)', () => {
    expect(dpdk2211Profile({ iommuSupport: true }).features).toBe(0xd7c66e7cbn | (1n << 33n));
  });

  it('tso=1 keeps HOST_TSO4 and HOST_TSO6', () => {
    expect(dpdk2211Profile({ tso: true }).features).toBe(0xd7c66ffcbn);
  });

  it('linear-buffer without ext-buffer removes HOST_TSO4/6 and HOST_UFO', () => {
    expect(dpdk2211Profile({ tso: true, linearBuffer: true }).features).toBe(0xd7c66ffcbn & ~((1n << 11n) | (1n << 12n) | (1n << 14n)));
    expect(dpdk2211Profile({ tso: true, linearBuffer: true, extBuffer: true }).features).toBe(0xd7c66ffcbn);
  });

  it('postcopy-support=1 adds PAGEFAULT: 0x10dbf', () => {
    expect(dpdk2211Profile({ postcopySupport: true }).protocolFeatures).toBe(DPDK_22_11_PROTOCOL_FEATURES_POSTCOPY);
    expect(DPDK_22_11_PROTOCOL_FEATURES_POSTCOPY).toBe(0x10dbfn);
  });

  it('the inflight option offers INFLIGHT_SHMFD (bit 12), as apps like vhost_blk do', () => {
    expect(dpdk2211Profile({ inflight: true }).protocolFeatures).toBe(0x10cbfn | (1n << 12n));
  });

  it('GET_QUEUE_NUM stays 128 whatever queues= says', () => {
    expect(dpdk2211Profile({ queues: 4 }).queueNum).toBe(128);
  });

  it('refuses impossible options', () => {
    expect(() => dpdk2211Profile({ queues: 0 })).toThrow(RangeError);
    expect(() => dpdk2211Profile({ queues: 129 })).toThrow(RangeError);
    expect(() => dpdk2211Profile({ reconnectPeriod: 0 })).toThrow(RangeError);
  });

  it('parses net_vhost devargs', () => {
    const r = parseNetVhostArgs('iface=/tmp/vhost.sock,client=1,queues=2,iommu-support=1,tso=0');
    expect(r.iface).toBe('/tmp/vhost.sock');
    expect(r.options).toEqual({ client: true, queues: 2, iommuSupport: true, tso: false });
    expect(() => parseNetVhostArgs('iface=x,bogus=1')).toThrow(/unknown argument/);
  });
});
