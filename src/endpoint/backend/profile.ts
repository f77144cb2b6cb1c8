/**
 * The `dpdk-22.11` back-end profile: what DPDK 22.11's vhost library offers and how it is
 * configured when testpmd creates it through the `net_vhost` PMD
 * (`--vdev net_vhost0,iface=SOCK[,client=1][,queues=N][,iommu-support=1]…`).
 *
 * Numbers come from DPDK v22.11 `lib/vhost/{vhost.h,vhost_user.h,socket.c}` and
 * `drivers/net/vhost/rte_eth_vhost.c`, and were checked against the reference capture
 * (GET_FEATURES 0xd7c66e7cb, GET_PROTOCOL_FEATURES 0x10cbf).
 */
import { DPDK_22_11_MAX_PAYLOAD, MAX_FDS, ProtocolFeature, protocolFeatureMask } from '../../protocol/index.ts';
import { VirtioFeature, featureMask } from '../../virtio/index.ts';

const F = VirtioFeature;

/** `VIRTIO_NET_SUPPORTED_FEATURES` of DPDK 22.11 lib/vhost/vhost.h = 0xf7c66ffcb. */
export const DPDK_22_11_VIRTIO_NET_SUPPORTED_FEATURES = featureMask(
  F.NET_MRG_RXBUF,
  F.ANY_LAYOUT,
  F.NET_CTRL_VQ,
  F.NET_CTRL_RX,
  F.NET_GUEST_ANNOUNCE,
  F.NET_MQ,
  F.VERSION_1,
  F.LOG_ALL,
  F.PROTOCOL_FEATURES,
  F.NET_GSO,
  F.NET_HOST_TSO4,
  F.NET_HOST_TSO6,
  F.NET_HOST_UFO,
  F.NET_HOST_ECN,
  F.NET_CSUM,
  F.NET_GUEST_CSUM,
  F.NET_GUEST_TSO4,
  F.NET_GUEST_TSO6,
  F.NET_GUEST_UFO,
  F.NET_GUEST_ECN,
  F.RING_INDIRECT_DESC,
  F.RING_EVENT_IDX,
  F.NET_MTU,
  F.IN_ORDER,
  F.ACCESS_PLATFORM,
  F.RING_PACKED,
);

/** What testpmd's net_vhost offers with default options (no IOMMU, tso=0): 0xd7c66e7cb. */
export const DPDK_22_11_NET_VHOST_FEATURES = 0xd7c66e7cbn;

/**
 * `VHOST_USER_PROTOCOL_FEATURES` of DPDK 22.11 vhost_user.h, PAGEFAULT included
 * (rte_vhost_driver_register removes it unless postcopy support is requested).
 */
export const DPDK_22_11_VHOST_USER_PROTOCOL_FEATURES = protocolFeatureMask(
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.RARP,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.NET_MTU,
  ProtocolFeature.SLAVE_REQ,
  ProtocolFeature.CRYPTO_SESSION,
  ProtocolFeature.SLAVE_SEND_FD,
  ProtocolFeature.HOST_NOTIFIER,
  ProtocolFeature.PAGEFAULT,
  ProtocolFeature.STATUS,
);

/** `VHOST_MAX_QUEUE_PAIRS`: the GET_QUEUE_NUM answer of a device without vDPA. */
export const DPDK_22_11_QUEUE_NUM = 128;
/** `VHOST_MAX_VRING`: vring indices 0..255 are allocatable. */
export const DPDK_22_11_MAX_VRING = 0x100;
/** Largest split/packed ring SET_VRING_NUM accepts. */
export const DPDK_22_11_MAX_QUEUE_SIZE = 32768;

export interface DpdkBackendOptions {
  /** `client=1`: connect to the front-end's socket (RTE_VHOST_USER_CLIENT); default false (server). */
  client: boolean;
  /**
   * Client mode only: retry a failed connect forever and reconnect after a disconnect.
   * False is `RTE_VHOST_USER_NO_RECONNECT` (net_vhost always leaves reconnect on). Default true.
   */
  reconnect: boolean;
  /** Client retry period in (virtual) seconds: the `vhost_reconn` thread's `sleep(1)`. Default 1. */
  reconnectPeriod: number;
  /** `queues=N`: queue pairs the PMD polls (vrings 0..2N-1). GET_QUEUE_NUM stays 128. Default 1. */
  queues: number;
  /** `iommu-support=1`: offer VIRTIO_F_IOMMU_PLATFORM (bit 33). Default false. */
  iommuSupport: boolean;
  /** `postcopy-support=1`: offer protocol feature PAGEFAULT. Default false. */
  postcopySupport: boolean;
  /** `tso=1`: keep HOST_TSO4/HOST_TSO6. Default false (net_vhost disables them). */
  tso: boolean;
  /** `linear-buffer=1` (without ext-buffer it removes HOST_TSO4/6 and HOST_UFO). Default false. */
  linearBuffer: boolean;
  /** `ext-buffer=1`. Default false. */
  extBuffer: boolean;
  /**
   * Offer INFLIGHT_SHMFD (protocol bit 12) and track inflight regions, as applications that
   * call `rte_vhost_driver_set_protocol_features` do (examples/vhost_blk). The net PMD does not:
   * default false. The built-in net data path never writes the region either way.
   */
  inflight: boolean;
  /**
   * The 22.11 stable release modelled (0 = the v22.11 tag, 11 = 22.11.11, Debian 12's package,
   * which produced the reference captures and logs). Default 11. Differences modelled:
   * ≥2 more than 8 fds are logged and trimmed instead of closing the connection, "not
   * implemented" lines at DEBUG; ≥6 SET_INFLIGHT_FD drops stale resubmit lists; ≥7 the log
   * is mapped at its offset; ≥8 GET_VRING_BASE zeroes the saved ring addresses.
   */
  patch: number;
  /**
   * Broken on purpose (src/sim/profile-hooks.ts), not a DPDK behaviour: skip the split-ring
   * re-base to used->idx when a ring is mapped, so only SET_VRING_BASE places the ring.
   */
  skipUsedIdxResync?: boolean;
  /** Broken on purpose (profile-hooks.ts): SET_VRING_BASE is logged but changes nothing. */
  ignoreSetVringBase?: boolean;
  /**
   * Broken on purpose (profile-hooks.ts): a new connection's vrings start where the previous
   * connection's device left them, and SET_VRING_BASE and the used->idx re-base leave them
   * there; DPDK destroys the device and starts fresh.
   */
  keepVringStateAcrossConnections?: boolean;
}

export const DEFAULT_DPDK_BACKEND_OPTIONS: Readonly<DpdkBackendOptions> = Object.freeze({
  client: false,
  reconnect: true,
  reconnectPeriod: 1,
  queues: 1,
  iommuSupport: false,
  postcopySupport: false,
  tso: false,
  linearBuffer: false,
  extBuffer: false,
  inflight: false,
  patch: 11,
});

export interface DpdkBackendProfile {
  readonly name: 'dpdk-22.11';
  readonly options: Readonly<DpdkBackendOptions>;
  /** GET_FEATURES answer; SET_FEATURES must stay inside it. */
  readonly features: bigint;
  /** GET_PROTOCOL_FEATURES answer; SET_PROTOCOL_FEATURES must stay inside it. */
  readonly protocolFeatures: bigint;
  /** GET_QUEUE_NUM answer (queue pairs). */
  readonly queueNum: number;
  /** Largest payload read; above it the connection is closed ("invalid msg size"). */
  readonly maxPayload: number;
  /** fds one recvmsg harvests (`VHOST_MEMORY_MAX_NREGIONS`). */
  readonly maxFds: number;
  readonly maxVrings: number;
  /** Vrings that must be ready before the device is (`VIRTIO_BUILTIN_NUM_VQS_TO_BE_READY`). */
  readonly vringsToBeReady: number;
}

/**
 * The profile for a set of net_vhost options. Feature arithmetic follows
 * `rte_vhost_driver_register` then the PMD's `rte_vhost_driver_disable_features`.
 */
export function dpdk2211Profile(opts: Partial<DpdkBackendOptions> = {}): DpdkBackendProfile {
  const o: DpdkBackendOptions = { ...DEFAULT_DPDK_BACKEND_OPTIONS, ...opts };
  if (!Number.isInteger(o.queues) || o.queues < 1 || o.queues > DPDK_22_11_QUEUE_NUM) {
    throw new RangeError(`queues=${o.queues}: net_vhost takes 1..${DPDK_22_11_QUEUE_NUM}`);
  }
  if (!(o.reconnectPeriod > 0 && Number.isFinite(o.reconnectPeriod))) throw new RangeError(`reconnectPeriod ${o.reconnectPeriod}`);
  if (!Number.isInteger(o.patch) || o.patch < 0) throw new RangeError(`patch ${o.patch}`);
  let features = DPDK_22_11_VIRTIO_NET_SUPPORTED_FEATURES;
  if (o.linearBuffer && !o.extBuffer) features &= ~featureMask(F.NET_HOST_TSO4, F.NET_HOST_TSO6, F.NET_HOST_UFO);
  if (!o.iommuSupport) features &= ~featureMask(F.ACCESS_PLATFORM);
  if (!o.tso) features &= ~featureMask(F.NET_HOST_TSO4, F.NET_HOST_TSO6);
  let protocolFeatures = DPDK_22_11_VHOST_USER_PROTOCOL_FEATURES;
  if (!o.postcopySupport) protocolFeatures &= ~protocolFeatureMask(ProtocolFeature.PAGEFAULT);
  if (o.inflight) protocolFeatures |= protocolFeatureMask(ProtocolFeature.INFLIGHT_SHMFD);
  return {
    name: 'dpdk-22.11',
    options: Object.freeze(o),
    features,
    protocolFeatures,
    queueNum: DPDK_22_11_QUEUE_NUM,
    maxPayload: DPDK_22_11_MAX_PAYLOAD,
    maxFds: MAX_FDS,
    maxVrings: DPDK_22_11_MAX_VRING,
    vringsToBeReady: 2,
  };
}

/**
 * Options from a net_vhost devargs string (`iface=/tmp/s,client=1,queues=2`); the iface is
 * returned separately. Unknown keys are refused, as rte_kvargs_parse does.
 */
export function parseNetVhostArgs(args: string): { iface?: string; options: Partial<DpdkBackendOptions> } {
  const options: Partial<DpdkBackendOptions> = {};
  let iface: string | undefined;
  const flag = (k: string, v: string): boolean => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new RangeError(`net_vhost ${k}=${v}: not an integer`);
    return n !== 0;
  };
  for (const part of args.split(',').filter((p) => p.length > 0)) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? '' : part.slice(eq + 1);
    switch (k) {
      case 'iface':
        iface = v;
        break;
      case 'queues':
        options.queues = Number(v);
        break;
      case 'client':
        options.client = flag(k, v);
        break;
      case 'iommu-support':
        options.iommuSupport = flag(k, v);
        break;
      case 'postcopy-support':
        options.postcopySupport = flag(k, v);
        break;
      case 'tso':
        options.tso = flag(k, v);
        break;
      case 'linear-buffer':
        options.linearBuffer = flag(k, v);
        break;
      case 'ext-buffer':
        options.extBuffer = flag(k, v);
        break;
      case 'legacy-ol-flags':
        break; // data-path offload flag convention only
      default:
        throw new RangeError(`net_vhost: unknown argument '${k}'`);
    }
  }
  return { ...(iface !== undefined ? { iface } : {}), options };
}
