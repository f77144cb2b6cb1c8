/**
 * The constants and feature arithmetic of the two front-end profiles:
 *
 * - `virtio-user-22.11`: DPDK 22.11's virtio-user PMD with the vhost-user backend ops
 *   (drivers/net/virtio/virtio_user/{virtio_user_dev.c,vhost_user.c}, virtio_user_ethdev.c,
 *   virtio_ethdev.{c,h}).
 * - `qemu-7.2`: QEMU 7.2's vhost-user netdev (hw/virtio/vhost-user.c, hw/virtio/vhost.c,
 *   hw/net/vhost_net.c, net/vhost-user.c) in front of a virtio-net-pci device, with the guest
 *   driver as a parameter.
 *
 * Everything here is pure data and pure functions; the sequencers use it.
 */
import { ProtocolFeature, VIRTIO_USER_22_11_PROTOCOL_FEATURES, protocolFeatureMask } from '../../protocol/index.ts';
import { VirtioFeature as F, featureMask, hasFeature } from '../../virtio/index.ts';
import type { RingFeatures } from '../../ring/types.ts';

export type FrontendProfileName = 'virtio-user-22.11' | 'qemu-7.2';
export type RingKind = 'split' | 'packed';

/** Queue size both front-ends use unless told otherwise (virtio-user `queue_size`, QEMU `rx/tx_queue_size`). */
export const DEFAULT_QUEUE_SIZE = 256;

/** VHOST_USER_F_PROTOCOL_FEATURES, the legacy "UNUSED(30)" bit vhost-user reuses. */
export const PROTOCOL_FEATURES_BIT = featureMask(F.PROTOCOL_FEATURES);

/** Initial packed vring base: avail index 0 with the wrap counter set (virtio-user and QEMU alike). */
export const PACKED_BASE_WRAP = 1 << 15;

/** Ring behaviour the negotiated features select. */
export function ringFeaturesOf(features: bigint): RingFeatures {
  return {
    indirect: hasFeature(features, F.RING_INDIRECT_DESC),
    eventIdx: hasFeature(features, F.RING_EVENT_IDX),
    inOrder: hasFeature(features, F.IN_ORDER),
  };
}

export function ringKindOf(features: bigint): RingKind {
  return hasFeature(features, F.RING_PACKED) ? 'packed' : 'split';
}

// ---------------------------------------------------------------------------
// virtio-user 22.11

/** `VIRTIO_USER_SUPPORTED_FEATURES` (virtio_user_dev.c): what virtio-user lets through from the back-end. */
export const VIRTIO_USER_SUPPORTED_FEATURES = featureMask(
  F.NET_MAC,
  F.NET_STATUS,
  F.NET_MQ,
  F.NET_CTRL_MAC_ADDR,
  F.NET_CTRL_VQ,
  F.NET_CTRL_RX,
  F.NET_CTRL_VLAN,
  F.NET_CSUM,
  F.NET_HOST_TSO4,
  F.NET_HOST_TSO6,
  F.NET_MRG_RXBUF,
  F.RING_INDIRECT_DESC,
  F.NET_GUEST_CSUM,
  F.NET_GUEST_TSO4,
  F.NET_GUEST_TSO6,
  F.IN_ORDER,
  F.VERSION_1,
  F.RING_PACKED,
);

/** `vhost_user_get_backend_features`: the vhost-user backend ops add bit 30. */
export const VIRTIO_USER_BACKEND_FEATURES = PROTOCOL_FEATURES_BIT;

/** `VIRTIO_PMD_DEFAULT_GUEST_FEATURES` (virtio_ethdev.h); vf2.log prints it as 0x8000005f10ef8028. */
export const VIRTIO_PMD_DEFAULT_GUEST_FEATURES = featureMask(
  F.NET_MAC,
  F.NET_STATUS,
  F.NET_MQ,
  F.NET_CTRL_MAC_ADDR,
  F.NET_CTRL_VQ,
  F.NET_CTRL_RX,
  F.NET_CTRL_VLAN,
  F.NET_MRG_RXBUF,
  F.NET_MTU,
  F.NET_GUEST_ANNOUNCE,
  F.RING_INDIRECT_DESC,
  F.VERSION_1,
  F.IN_ORDER,
  F.RING_PACKED,
  F.ACCESS_PLATFORM,
  F.ORDER_PLATFORM,
  F.NOTIFICATION_DATA,
  F.NET_SPEED_DUPLEX,
);

/** `VIRTIO_PMD_SUPPORTED_GUEST_FEATURES`: the default set plus the offload bits an application may request. */
export const VIRTIO_PMD_SUPPORTED_GUEST_FEATURES =
  VIRTIO_PMD_DEFAULT_GUEST_FEATURES |
  featureMask(F.NET_GUEST_CSUM, F.NET_GUEST_TSO4, F.NET_GUEST_TSO6, F.NET_CSUM, F.NET_HOST_TSO4, F.NET_HOST_TSO6, F.NET_RSS);

/** Bits `virtio_user_dev_set_features` strips before SET_FEATURES: handled in the front-end itself. */
export const VIRTIO_USER_STRIPPED_FEATURES = featureMask(F.NET_MAC, F.NET_CTRL_VQ, F.NET_STATUS);

/** What virtio-user acks of the back-end's protocol features (`VHOST_USER_SUPPORTED_PROTOCOL_FEATURES`). */
export const VIRTIO_USER_PROTOCOL_MASK = VIRTIO_USER_22_11_PROTOCOL_FEATURES;

/** The devargs of `net_virtio_user` that change the protocol (defaults as in DPDK 22.11). */
export interface VirtioUserConfig {
  /** `queues`: queue pairs (max_queue_pairs). */
  readonly queues: number;
  /** `queue_size`. */
  readonly queueSize: number;
  /** `mrg_rxbuf` (default on). */
  readonly mrgRxbuf: boolean;
  /** `in_order` (default on). */
  readonly inOrder: boolean;
  /** `packed_vq` (default off). */
  readonly packedVq: boolean;
  /** `cq`: control queue (default off; then MQ and the CTRL_* bits are masked too). */
  readonly cq: boolean;
  /** `mac` given on the command line (default none: the back-end has no MAC to offer, so a random one is used). */
  readonly macSpecified: boolean;
}

export const VIRTIO_USER_DEFAULTS: VirtioUserConfig = Object.freeze({
  queues: 1,
  queueSize: DEFAULT_QUEUE_SIZE,
  mrgRxbuf: true,
  inOrder: true,
  packedVq: false,
  cq: false,
  macSpecified: false,
});

/**
 * `dev->unsupported_features` and `dev->frontend_features` after `virtio_user_dev_init`
 * (before the MQ bit that protocol negotiation may add).
 */
export function virtioUserFeatureMasks(cfg: VirtioUserConfig): { unsupported: bigint; frontend: bigint } {
  let unsupported = ~(VIRTIO_USER_SUPPORTED_FEATURES | VIRTIO_USER_BACKEND_FEATURES) & 0xffff_ffff_ffff_ffffn;
  let frontend = 0n;
  if (!cfg.mrgRxbuf) unsupported |= featureMask(F.NET_MRG_RXBUF);
  if (!cfg.inOrder) unsupported |= featureMask(F.IN_ORDER);
  if (!cfg.packedVq) unsupported |= featureMask(F.RING_PACKED);
  // The vhost-user ops have no get_config, so "No valid MAC in devargs or device, use random".
  if (cfg.macSpecified) frontend |= featureMask(F.NET_MAC);
  else unsupported |= featureMask(F.NET_MAC);
  if (cfg.cq) frontend |= featureMask(F.NET_CTRL_VQ);
  else {
    unsupported |= featureMask(F.NET_CTRL_VQ, F.NET_CTRL_RX, F.NET_CTRL_VLAN, F.NET_GUEST_ANNOUNCE, F.NET_MQ, F.NET_CTRL_MAC_ADDR);
  }
  // "The backend will not report this feature, we add it explicitly."
  frontend |= featureMask(F.NET_STATUS);
  frontend &= ~unsupported;
  return { unsupported, frontend };
}

/** The PMD's negotiation (`virtio_ethdev_negotiate_features` with the default request): host ∩ requested. */
export function virtioPmdNegotiate(deviceFeatures: bigint, frontendFeatures: bigint): bigint {
  const host = (deviceFeatures | frontendFeatures) & VIRTIO_PMD_SUPPORTED_GUEST_FEATURES;
  return VIRTIO_PMD_DEFAULT_GUEST_FEATURES & host;
}

/** SET_FEATURES payload: `dev->features` minus MAC/CTRL_VQ/STATUS, plus bit 30 when the device offers it. */
export function virtioUserSetFeaturesValue(features: bigint, deviceFeatures: bigint): bigint {
  return (features & ~VIRTIO_USER_STRIPPED_FEATURES) | (deviceFeatures & PROTOCOL_FEATURES_BIT);
}

/** Order of the per-vring loops (`virtio_user_queue_setup`): every rx vring (0, 2, …), then every tx vring (1, 3, …). */
export function virtioUserVringOrder(queues: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < queues; i++) out.push(2 * i);
  for (let i = 0; i < queues; i++) out.push(2 * i + 1);
  return out;
}

// ---------------------------------------------------------------------------
// QEMU 7.2

/**
 * QEMU 7.2 knows protocol features up to STATUS (16): `VHOST_USER_PROTOCOL_F_MAX` = 17, and
 * `vhost_user_backend_init` masks the back-end's set with `(1 << MAX) - 1`.
 */
export const QEMU_7_2_PROTOCOL_FEATURE_MASK = (1n << 17n) - 1n;

/**
 * `user_feature_bits` of hw/net/vhost_net.c in QEMU 7.2 (RING_RESET was added for 7.2; the USO
 * bits came in 8.x, IN_ORDER and RSC_EXT later): the guest-acked bits QEMU forwards to a
 * vhost-user back-end. Everything else (CTRL_VQ, STATUS, MAC, …) QEMU emulates itself.
 */
export const QEMU_7_2_USER_FEATURE_BITS = featureMask(
  F.NOTIFY_ON_EMPTY,
  F.RING_INDIRECT_DESC,
  F.RING_EVENT_IDX,
  F.ANY_LAYOUT,
  F.VERSION_1,
  F.NET_CSUM,
  F.NET_GUEST_CSUM,
  F.NET_GSO,
  F.NET_GUEST_TSO4,
  F.NET_GUEST_TSO6,
  F.NET_GUEST_ECN,
  F.NET_GUEST_UFO,
  F.NET_HOST_TSO4,
  F.NET_HOST_TSO6,
  F.NET_HOST_ECN,
  F.NET_HOST_UFO,
  F.NET_MRG_RXBUF,
  F.NET_MTU,
  F.ACCESS_PLATFORM,
  F.RING_PACKED,
  F.RING_RESET,
  F.NET_RSS,
  F.NET_HASH_REPORT,
  F.NET_GUEST_ANNOUNCE,
  F.NET_MQ,
);

/** virtio-net-pci device properties that change the feature set (QEMU 7.2 defaults otherwise). */
export interface QemuDeviceConfig {
  /** Queue pairs of the netdev (`queues=`); MQ is offered when above 1. */
  readonly queuePairs: number;
  /** `rx_queue_size`/`tx_queue_size`. */
  readonly queueSize: number;
  /** `packed=on`. */
  readonly packed: boolean;
  /**
   * Inflight I/O tracking as device models that call `vhost_dev_get_inflight` do
   * (vhost-user-blk, vhost-user-scsi); virtio-net never does, hence off by default.
   */
  readonly inflight?: boolean;
}

/**
 * What QEMU 7.2's virtio-net-pci offers a guest before the vhost back-end is consulted: its
 * property defaults (csum, gso, the TSO/ECN/UFO offloads, mrg_rxbuf, status, the control
 * queue bits, guest_announce, indirect_desc, event_idx, notify_on_empty, any_layout,
 * queue_reset), MAC (always), VERSION_1 (modern transport), MQ with more than one pair,
 * RING_PACKED with packed=on.
 */
export function qemuDeviceFeatures(cfg: QemuDeviceConfig): bigint {
  let f = featureMask(
    F.NET_CSUM,
    F.NET_GUEST_CSUM,
    F.NET_GSO,
    F.NET_GUEST_TSO4,
    F.NET_GUEST_TSO6,
    F.NET_GUEST_ECN,
    F.NET_GUEST_UFO,
    F.NET_HOST_TSO4,
    F.NET_HOST_TSO6,
    F.NET_HOST_ECN,
    F.NET_HOST_UFO,
    F.NET_MRG_RXBUF,
    F.NET_STATUS,
    F.NET_CTRL_VQ,
    F.NET_CTRL_RX,
    F.NET_CTRL_VLAN,
    F.NET_CTRL_RX_EXTRA,
    F.NET_CTRL_MAC_ADDR,
    F.NET_CTRL_GUEST_OFFLOADS,
    F.NET_GUEST_ANNOUNCE,
    F.NET_MAC,
    F.NOTIFY_ON_EMPTY,
    F.ANY_LAYOUT,
    F.RING_INDIRECT_DESC,
    F.RING_EVENT_IDX,
    F.VERSION_1,
    F.RING_RESET,
  );
  if (cfg.queuePairs > 1) f |= featureMask(F.NET_MQ);
  if (cfg.packed) f |= featureMask(F.RING_PACKED);
  return f;
}

/**
 * The guest's view (`vhost_net_get_features` → `vhost_get_features`): every bit of
 * `user_feature_bits` the back-end does not offer is withdrawn; emulated bits stay.
 */
export function qemuGuestOffered(cfg: QemuDeviceConfig, backendFeatures: bigint): bigint {
  return qemuDeviceFeatures(cfg) & ~(QEMU_7_2_USER_FEATURE_BITS & ~backendFeatures);
}

/**
 * `vhost_net_ack_features`: acked = backend_features (bit 30 when the back-end offered it)
 * plus the guest-acked bits of `user_feature_bits`.
 */
export function qemuAckedFeatures(guestAcked: bigint, backendBit30: bigint): bigint {
  return backendBit30 | (guestAcked & QEMU_7_2_USER_FEATURE_BITS);
}

/** The protocol features QEMU 7.2 sets: the back-end's offer within its mask, CONFIG dropped for net. */
export function qemuProtocolFeatures(offered: bigint): bigint {
  // virtio-net neither has config ops nor supports_config: "vhost-user backend supports
  // VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not." and the bit is cleared.
  return offered & QEMU_7_2_PROTOCOL_FEATURE_MASK & ~protocolFeatureMask(ProtocolFeature.CONFIG);
}

/**
 * A guest driver, as far as vhost-user can tell: which features it acks, and how many
 * queue-attach rounds (SET_VRING_ENABLE(1) for each vring of pair 0, from
 * `virtio_net_set_queue_pairs` → `peer_attach`) its firmware and driver cause before the
 * first DRIVER_OK and after a device reset. vhost_net_start adds one more round itself.
 */
export interface GuestDriverProfile {
  readonly name: string;
  /** Feature bits the driver would ack if offered. */
  readonly wants: bigint;
  readonly attachRounds: { readonly boot: number; readonly afterReset: number };
  /** Virtual seconds from the device being usable to the driver setting DRIVER_OK. */
  readonly bootDelay: number;
}

/**
 * iPXE 1.0.0 (Debian's, run by SeaBIOS): acks VERSION_1 (and MAC, which QEMU emulates), so
 * the back-end sees 0x140000000 [OBS vh2/vc1]. Four attach rounds during firmware and
 * driver start-up plus the one of vhost_net_start make the five observed ENABLE pairs;
 * one round after its exit reset [OBS vh2].
 */
export const IPXE_DRIVER: GuestDriverProfile = Object.freeze({
  name: 'ipxe',
  wants: featureMask(F.VERSION_1, F.NET_MAC),
  attachRounds: Object.freeze({ boot: 4, afterReset: 1 }),
  bootDelay: 1,
});

/**
 * Linux's virtio_net (a 6.1-era kernel): its feature table (offloads, MRG_RXBUF, the control
 * queue bits, MQ, MTU, MAC, STATUS, GUEST_ANNOUNCE, SPEED_DUPLEX, RSS/HASH_REPORT, STANDBY)
 * plus the transport bits it handles (INDIRECT_DESC, EVENT_IDX, VERSION_1, ACCESS_PLATFORM,
 * RING_PACKED, ORDER_PLATFORM, RING_RESET); not IN_ORDER, not the legacy GSO bit. Against
 * QEMU 7.2's defaults and DPDK's offer the back-end then sees 0x17020e783 (CSUM, GUEST_CSUM,
 * GUEST_TSO4/6, GUEST_ECN, GUEST_UFO, HOST_ECN, HOST_UFO, MRG_RXBUF, GUEST_ANNOUNCE,
 * INDIRECT_DESC, EVENT_IDX, bit 30, VERSION_1). This is modelled, not observed; the attach
 * rounds (firmware reset + driver probe) are an estimate.
 */
export const LINUX_VIRTIO_NET_DRIVER: GuestDriverProfile = Object.freeze({
  name: 'virtio-net',
  wants: featureMask(
    F.NET_CSUM,
    F.NET_GUEST_CSUM,
    F.NET_CTRL_GUEST_OFFLOADS,
    F.NET_MTU,
    F.NET_MAC,
    F.NET_GUEST_TSO4,
    F.NET_GUEST_TSO6,
    F.NET_GUEST_ECN,
    F.NET_GUEST_UFO,
    F.NET_HOST_TSO4,
    F.NET_HOST_TSO6,
    F.NET_HOST_ECN,
    F.NET_HOST_UFO,
    F.NET_MRG_RXBUF,
    F.NET_STATUS,
    F.NET_CTRL_VQ,
    F.NET_CTRL_RX,
    F.NET_CTRL_VLAN,
    F.NET_GUEST_ANNOUNCE,
    F.NET_MQ,
    F.NET_CTRL_MAC_ADDR,
    F.NET_SPEED_DUPLEX,
    F.NET_STANDBY,
    F.NET_RSS,
    F.NET_HASH_REPORT,
    F.RING_INDIRECT_DESC,
    F.RING_EVENT_IDX,
    F.VERSION_1,
    F.ACCESS_PLATFORM,
    F.RING_PACKED,
    F.ORDER_PLATFORM,
    F.RING_RESET,
  ),
  attachRounds: Object.freeze({ boot: 2, afterReset: 1 }),
  bootDelay: 2,
});

/**
 * DPDK's virtio PMD inside the guest (testpmd in the VM, no offloads requested): it acks
 * `VIRTIO_PMD_DEFAULT_GUEST_FEATURES` ∩ offered, the same rule virtio-user uses. With QEMU
 * 7.2's defaults and DPDK's offer the back-end sees MRG_RXBUF, GUEST_ANNOUNCE,
 * INDIRECT_DESC, bit 30, VERSION_1 = 0x150208000 (QEMU 7.2 offers no IN_ORDER). Modelled.
 */
export const VIRTIO_PMD_DRIVER: GuestDriverProfile = Object.freeze({
  name: 'virtio-pmd',
  wants: VIRTIO_PMD_DEFAULT_GUEST_FEATURES,
  attachRounds: Object.freeze({ boot: 2, afterReset: 1 }),
  bootDelay: 2,
});

export const GUEST_DRIVERS = Object.freeze({ ipxe: IPXE_DRIVER, 'virtio-net': LINUX_VIRTIO_NET_DRIVER, 'virtio-pmd': VIRTIO_PMD_DRIVER });
export type GuestDriverName = keyof typeof GUEST_DRIVERS;

/** QEMU's vring order: per queue pair (one vhost_dev each) its rx then tx vring. */
export function qemuVringOrder(queuePairs: number): number[] {
  return Array.from({ length: 2 * queuePairs }, (_, i) => i);
}

/** A summary of each profile's defaults, for documentation and CLI listings. */
export const FRONTEND_PROFILES: Readonly<
  Record<FrontendProfileName, { readonly description: string; readonly queueSize: number; readonly ring: RingKind; readonly protocolMask: bigint }>
> = Object.freeze({
  'virtio-user-22.11': {
    description: 'DPDK 22.11 net_virtio_user (server=1 listens and accepts reconnecting back-ends)',
    queueSize: DEFAULT_QUEUE_SIZE,
    ring: 'split',
    protocolMask: VIRTIO_USER_PROTOCOL_MASK,
  },
  'qemu-7.2': {
    description: 'QEMU 7.2 vhost-user netdev behind virtio-net-pci (chardev server, or client with reconnect=N)',
    queueSize: DEFAULT_QUEUE_SIZE,
    ring: 'split',
    protocolMask: QEMU_7_2_PROTOCOL_FEATURE_MASK,
  },
});
