import { describe, expect, it } from 'vitest';
import {
  DPDK_22_11_PROTOCOL_FEATURES,
  DPDK_22_11_PROTOCOL_FEATURES_POSTCOPY,
  PROTOCOL_FEATURES,
  ProtocolFeature as P,
  VIRTIO_USER_22_11_PROTOCOL_FEATURES,
  formatProtocolFeatures,
  hasProtocolFeature,
  protocolFeatureBit,
  protocolFeatureMask,
} from './protocol-features.ts';

describe('protocol features', () => {
  it('numbers bits 0..19 as the spec does, with the renamed bits sharing a value', () => {
    expect(PROTOCOL_FEATURES.map((f) => f.bit)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect([P.MQ, P.REPLY_ACK, P.SLAVE_REQ, P.BACKEND_REQ, P.SLAVE_SEND_FD, P.BACKEND_SEND_FD, P.INFLIGHT_SHMFD, P.STATUS]).toEqual([
      0, 3, 5, 5, 10, 10, 12, 16,
    ]);
    expect(protocolFeatureBit('VHOST_USER_PROTOCOL_F_BACKEND_REQ')).toBe(5);
    expect(protocolFeatureBit('mtu')).toBe(4);
    expect(protocolFeatureBit('nope')).toBeUndefined();
  });

  it('DPDK 22.11 offers 0x10cbf: exactly the bits of its VHOST_USER_PROTOCOL_FEATURES', () => {
    expect(DPDK_22_11_PROTOCOL_FEATURES).toBe(0x10cbfn);
    expect(DPDK_22_11_PROTOCOL_FEATURES).toBe(
      protocolFeatureMask(P.MQ, P.LOG_SHMFD, P.RARP, P.REPLY_ACK, P.NET_MTU, P.SLAVE_REQ, P.CRYPTO_SESSION, P.SLAVE_SEND_FD, P.HOST_NOTIFIER, P.STATUS),
    );
    expect(DPDK_22_11_PROTOCOL_FEATURES_POSTCOPY).toBe(0x10dbfn);
    expect(VIRTIO_USER_22_11_PROTOCOL_FEATURES & DPDK_22_11_PROTOCOL_FEATURES).toBe(0x10009n);
    expect(hasProtocolFeature(DPDK_22_11_PROTOCOL_FEATURES, P.INFLIGHT_SHMFD)).toBe(false);
  });

  it('formats set bits by their 22.11-era names, unknown bits by number', () => {
    expect(formatProtocolFeatures(0x10cbfn)).toBe('MQ|LOG_SHMFD|RARP|REPLY_ACK|NET_MTU|SLAVE_REQ|CRYPTO_SESSION|SLAVE_SEND_FD|HOST_NOTIFIER|STATUS');
    expect(formatProtocolFeatures(0x10009n)).toBe('MQ|REPLY_ACK|STATUS');
    expect(formatProtocolFeatures(0n)).toBe('0');
    expect(formatProtocolFeatures((1n << 63n) | 1n)).toBe('MQ|bit(63)');
  });
});
