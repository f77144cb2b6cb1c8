/**
 * Virtio feature bits (virtio 1.2 §6 "Reserved Feature Bits" and §5.1.3 for net),
 * plus VHOST_F_LOG_ALL (26) and VHOST_USER_F_PROTOCOL_FEATURES (30), which vhost
 * reuses from legacy-only bit numbers.
 */
export const VirtioFeature = {
  // virtio-net (spec 5.1.3)
  NET_CSUM: 0,
  NET_GUEST_CSUM: 1,
  NET_CTRL_GUEST_OFFLOADS: 2,
  NET_MTU: 3,
  NET_MAC: 5,
  NET_GSO: 6,
  NET_GUEST_TSO4: 7,
  NET_GUEST_TSO6: 8,
  NET_GUEST_ECN: 9,
  NET_GUEST_UFO: 10,
  NET_HOST_TSO4: 11,
  NET_HOST_TSO6: 12,
  NET_HOST_ECN: 13,
  NET_HOST_UFO: 14,
  NET_MRG_RXBUF: 15,
  NET_STATUS: 16,
  NET_CTRL_VQ: 17,
  NET_CTRL_RX: 18,
  NET_CTRL_VLAN: 19,
  NET_CTRL_RX_EXTRA: 20,
  NET_GUEST_ANNOUNCE: 21,
  NET_MQ: 22,
  NET_CTRL_MAC_ADDR: 23,
  NET_GUEST_USO4: 54,
  NET_GUEST_USO6: 55,
  NET_HOST_USO: 56,
  NET_HASH_REPORT: 57,
  NET_RSS: 60,
  NET_RSC_EXT: 61,
  NET_STANDBY: 62,
  NET_SPEED_DUPLEX: 63,
  // transport / ring
  NOTIFY_ON_EMPTY: 24,
  LOG_ALL: 26, // VHOST_F_LOG_ALL
  ANY_LAYOUT: 27,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  PROTOCOL_FEATURES: 30, // VHOST_USER_F_PROTOCOL_FEATURES
  VERSION_1: 32,
  ACCESS_PLATFORM: 33, // a.k.a. IOMMU_PLATFORM
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
} as const;

export type VirtioFeatureName = keyof typeof VirtioFeature;

/** 1n << bit, as a bigint mask. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

export function featureMask(...bits: number[]): bigint {
  let m = 0n;
  for (const b of bits) m |= featureBit(b);
  return m;
}

const NAME_BY_BIT = new Map<number, string>(Object.entries(VirtioFeature).map(([k, v]) => [v, k]));

/** Human-readable list of the set bits, e.g. `VERSION_1|RING_EVENT_IDX|bit(47)`. */
export function formatFeatures(features: bigint): string {
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (hasFeature(features, bit)) names.push(NAME_BY_BIT.get(bit) ?? `bit(${bit})`);
  }
  return names.length === 0 ? '0' : names.join('|');
}
