import { describe, expect, it } from 'vitest';
import { ProtocolFeature, protocolFeatureMask } from '../../protocol/index.ts';
import { VirtioFeature as F, featureMask, hasFeature } from '../../virtio/index.ts';
import {
  IPXE_DRIVER,
  LINUX_VIRTIO_NET_DRIVER,
  QEMU_7_2_USER_FEATURE_BITS,
  VIRTIO_PMD_DEFAULT_GUEST_FEATURES,
  VIRTIO_PMD_DRIVER,
  VIRTIO_USER_DEFAULTS,
  VIRTIO_USER_PROTOCOL_MASK,
  qemuAckedFeatures,
  qemuGuestOffered,
  qemuProtocolFeatures,
  ringFeaturesOf,
  virtioPmdNegotiate,
  virtioUserFeatureMasks,
  virtioUserSetFeaturesValue,
  virtioUserVringOrder,
  type GuestDriverProfile,
} from './profiles.ts';
import { DPDK_TESTPMD_FEATURES } from './testing.ts';

const QEMU_DEV = { queuePairs: 1, queueSize: 256, packed: false };

function virtioUserAgainst(offered: bigint, cfg = VIRTIO_USER_DEFAULTS) {
  const m = virtioUserFeatureMasks(cfg);
  const unsupported = m.unsupported | featureMask(F.NET_MQ); // cq=0 masks MQ anyway
  const device = offered & ~unsupported;
  const negotiated = virtioPmdNegotiate(device, m.frontend);
  return { device, negotiated, setFeatures: virtioUserSetFeaturesValue(negotiated & (device | m.frontend), device) };
}

function qemuAcks(driver: GuestDriverProfile, backend = DPDK_TESTPMD_FEATURES): bigint {
  return qemuAckedFeatures(driver.wants & qemuGuestOffered(QEMU_DEV, backend), featureMask(F.PROTOCOL_FEATURES));
}

describe('virtio-user-22.11 profile constants', () => {
  it('VIRTIO_PMD_DEFAULT_GUEST_FEATURES is the value vf2.log prints (0x8000005f10ef8028)', () => {
    expect(VIRTIO_PMD_DEFAULT_GUEST_FEATURES).toBe(0x8000005f10ef8028n);
  });

  it('protocol features: virtio-user acks only MQ, REPLY_ACK, STATUS (0x10009 against DPDK 0x10cbf)', () => {
    expect(VIRTIO_USER_PROTOCOL_MASK).toBe(0x10009n);
    expect(0x10cbfn & VIRTIO_USER_PROTOCOL_MASK).toBe(0x10009n);
  });

  it('features: host 0x910018183, negotiated 0x910018000, SET_FEATURES 0x950008000 with the defaults (MAC/CTRL_VQ/STATUS stripped, bit 30 ORed)', () => {
    const r = virtioUserAgainst(DPDK_TESTPMD_FEATURES);
    const m = virtioUserFeatureMasks(VIRTIO_USER_DEFAULTS);
    expect(((r.device | m.frontend) & 0xf7fffffffn) & 0x910018183n).toBe(0x910018183n);
    expect(r.negotiated).toBe(0x910018000n);
    expect(r.setFeatures).toBe(0x950008000n);
  });

  it('packed_vq=1 adds RING_PACKED; in_order=0 and mrg_rxbuf=0 remove their bits', () => {
    expect(hasFeature(virtioUserAgainst(DPDK_TESTPMD_FEATURES, { ...VIRTIO_USER_DEFAULTS, packedVq: true }).setFeatures, F.RING_PACKED)).toBe(true);
    const r = virtioUserAgainst(DPDK_TESTPMD_FEATURES, { ...VIRTIO_USER_DEFAULTS, inOrder: false, mrgRxbuf: false });
    expect(hasFeature(r.setFeatures, F.IN_ORDER)).toBe(false);
    expect(hasFeature(r.setFeatures, F.NET_MRG_RXBUF)).toBe(false);
  });

  it('bit 30 is only ORed into SET_FEATURES when the back-end offered it', () => {
    expect(virtioUserSetFeaturesValue(0x910018000n, 0x910008000n)).toBe(0x910008000n);
  });

  it('vring order: every rx vring first, then every tx vring', () => {
    expect(virtioUserVringOrder(1)).toEqual([0, 1]);
    expect(virtioUserVringOrder(3)).toEqual([0, 2, 4, 1, 3, 5]);
  });
});

describe('qemu-7.2 profile constants', () => {
  it('protocol features: the offer within bits 0..16, CONFIG dropped for virtio-net', () => {
    expect(qemuProtocolFeatures(0x10cbfn)).toBe(0x10cbfn);
    expect(qemuProtocolFeatures(0x10cbfn | protocolFeatureMask(ProtocolFeature.CONFIG))).toBe(0x10cbfn);
    expect(qemuProtocolFeatures(0xfffffn) & ~0x1ffffn).toBe(0n);
  });

  it('user_feature_bits: emulated bits (CTRL_VQ, STATUS, MAC) and IN_ORDER are never forwarded', () => {
    for (const b of [F.NET_CTRL_VQ, F.NET_STATUS, F.NET_MAC, F.IN_ORDER, F.NET_CTRL_RX]) expect(hasFeature(QEMU_7_2_USER_FEATURE_BITS, b)).toBe(false);
    for (const b of [F.VERSION_1, F.NET_MRG_RXBUF, F.RING_PACKED, F.RING_EVENT_IDX, F.NET_MQ]) expect(hasFeature(QEMU_7_2_USER_FEATURE_BITS, b)).toBe(true);
  });

  it('the guest is not offered vhost bits the back-end lacks (HOST_TSO4/6 with tso=0), emulated bits stay', () => {
    const off = qemuGuestOffered(QEMU_DEV, DPDK_TESTPMD_FEATURES);
    expect(hasFeature(off, F.NET_HOST_TSO4)).toBe(false);
    expect(hasFeature(off, F.NET_CTRL_VQ)).toBe(true);
    expect(hasFeature(off, F.NET_STATUS)).toBe(true);
  });

  it('guest driver iPXE: the back-end sees 0x140000000 (observed)', () => {
    expect(qemuAcks(IPXE_DRIVER)).toBe(0x140000000n);
  });

  it('guest driver virtio-net (Linux): the back-end sees 0x17020e783 (modelled)', () => {
    expect(qemuAcks(LINUX_VIRTIO_NET_DRIVER)).toBe(0x17020e783n);
  });

  it('guest driver virtio-pmd (DPDK in the guest): the back-end sees 0x150208000 (modelled)', () => {
    expect(qemuAcks(VIRTIO_PMD_DRIVER)).toBe(0x150208000n);
  });

  it('ring features follow the negotiated bits', () => {
    expect(ringFeaturesOf(0x17020e783n)).toEqual({ indirect: true, eventIdx: true, inOrder: false });
    expect(ringFeaturesOf(0x950008000n)).toEqual({ indirect: true, eventIdx: false, inOrder: true });
  });
});
