/**
 * vhost-user protocol feature bits (the u64 of GET/SET_PROTOCOL_FEATURES), negotiated only
 * when virtio feature bit 30 (VHOST_USER_F_PROTOCOL_FEATURES) was offered.
 * [QDOC "Protocol features"; DPDK lib/vhost/vhost_user.h]
 *
 * Names are the ones DPDK 22.11 and QEMU 7.2 use; bits renamed since (SLAVE → BACKEND in
 * QEMU docs and DPDK 23.03) keep the new name as an alias with the same value.
 */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  SLAVE_REQ: 5,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  SLAVE_SEND_FD: 10,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

export type ProtocolFeatureName = keyof typeof ProtocolFeature;

export interface ProtocolFeatureInfo {
  readonly bit: number;
  /** DPDK 22.11 / QEMU 7.2 era name. */
  readonly name: string;
  /** Later names for the same bit. */
  readonly aliases: readonly string[];
}

/** One entry per defined bit, in bit order. */
export const PROTOCOL_FEATURES: readonly ProtocolFeatureInfo[] = [
  { bit: 0, name: 'MQ', aliases: [] },
  { bit: 1, name: 'LOG_SHMFD', aliases: [] },
  { bit: 2, name: 'RARP', aliases: [] },
  { bit: 3, name: 'REPLY_ACK', aliases: [] },
  { bit: 4, name: 'NET_MTU', aliases: ['MTU'] },
  { bit: 5, name: 'SLAVE_REQ', aliases: ['BACKEND_REQ'] },
  { bit: 6, name: 'CROSS_ENDIAN', aliases: [] },
  { bit: 7, name: 'CRYPTO_SESSION', aliases: [] },
  { bit: 8, name: 'PAGEFAULT', aliases: [] },
  { bit: 9, name: 'CONFIG', aliases: [] },
  { bit: 10, name: 'SLAVE_SEND_FD', aliases: ['BACKEND_SEND_FD'] },
  { bit: 11, name: 'HOST_NOTIFIER', aliases: [] },
  { bit: 12, name: 'INFLIGHT_SHMFD', aliases: [] },
  { bit: 13, name: 'RESET_DEVICE', aliases: [] },
  { bit: 14, name: 'INBAND_NOTIFICATIONS', aliases: [] },
  { bit: 15, name: 'CONFIGURE_MEM_SLOTS', aliases: [] },
  { bit: 16, name: 'STATUS', aliases: [] },
  { bit: 17, name: 'XEN_MMAP', aliases: [] },
  { bit: 18, name: 'SHARED_OBJECT', aliases: [] },
  { bit: 19, name: 'DEVICE_STATE', aliases: [] },
];

const BY_BIT = new Map(PROTOCOL_FEATURES.map((f) => [f.bit, f]));

export function protocolFeatureMask(...bits: number[]): bigint {
  let m = 0n;
  for (const b of bits) m |= 1n << BigInt(b);
  return m;
}

export function hasProtocolFeature(features: bigint, bit: number): boolean {
  return (features & (1n << BigInt(bit))) !== 0n;
}

/**
 * What DPDK 22.11's vhost library offers by default: MQ, LOG_SHMFD, RARP, REPLY_ACK, NET_MTU,
 * SLAVE_REQ, CRYPTO_SESSION, SLAVE_SEND_FD, HOST_NOTIFIER, STATUS = 0x10cbf (PAGEFAULT is
 * added only when built with postcopy support). Observed on the wire in the reference capture.
 */
export const DPDK_22_11_PROTOCOL_FEATURES = 0x10cbfn;
export const DPDK_22_11_PROTOCOL_FEATURES_POSTCOPY = DPDK_22_11_PROTOCOL_FEATURES | protocolFeatureMask(ProtocolFeature.PAGEFAULT);
/**
 * What DPDK 22.11 virtio-user supports as a front-end (MQ, REPLY_ACK, STATUS); it acks the
 * intersection with the back-end's offer, 0x10009 against DPDK vhost.
 */
export const VIRTIO_USER_22_11_PROTOCOL_FEATURES = protocolFeatureMask(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.STATUS);

/** `MQ|REPLY_ACK|STATUS`, unknown bits as `bit(N)`, `0` for none. */
export function formatProtocolFeatures(features: bigint): string {
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (hasProtocolFeature(features, bit)) names.push(BY_BIT.get(bit)?.name ?? `bit(${bit})`);
  }
  return names.length === 0 ? '0' : names.join('|');
}

/** Bit number for a name or alias (with or without the `VHOST_USER_PROTOCOL_F_` prefix). */
export function protocolFeatureBit(name: string): number | undefined {
  const n = name.toUpperCase().replace(/^VHOST_USER_PROTOCOL_F_/, '');
  for (const f of PROTOCOL_FEATURES) if (f.name === n || f.aliases.includes(n)) return f.bit;
  return undefined;
}
