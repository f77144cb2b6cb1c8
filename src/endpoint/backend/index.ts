export {
  dpdk2211Profile,
  parseNetVhostArgs,
  DEFAULT_DPDK_BACKEND_OPTIONS,
  DPDK_22_11_NET_VHOST_FEATURES,
  DPDK_22_11_VIRTIO_NET_SUPPORTED_FEATURES,
  DPDK_22_11_VHOST_USER_PROTOCOL_FEATURES,
  DPDK_22_11_QUEUE_NUM,
  DPDK_22_11_MAX_VRING,
  DPDK_22_11_MAX_QUEUE_SIZE,
  type DpdkBackendOptions,
  type DpdkBackendProfile,
} from './profile.ts';
export {
  formatVhostLog,
  formatVhostLogLines,
  eventsOfKind,
  statusLines,
  type VhostLogEvent,
  type VhostLogKind,
  type LogLevel,
  type LogSource,
  type ErrorCode,
  type ModelNote,
  type FormatLogOptions,
} from './log.ts';
export { Vring, qvaToGpa, translateRingAddresses, fdNumber, type FdSlot, type RingAddrs } from './vring.ts';
export {
  VhostUserDevice,
  dpdkHandlerName,
  dpdkHandlerAcceptsFd,
  encodeBackendMessage,
  type IncomingMessage,
  type DeviceEnvironment,
  type HandleResult,
  type Lifecycle,
  type VringView,
  type VringInflight,
} from './vhost-device.ts';
export { InflightTracker } from './inflight-tracker.ts';
export { DpdkMessageReader, type ReadResult } from './reader.ts';
export { DpdkBackend, type DpdkBackendConfig, type BackendState } from './backend.ts';
export {
  inflightSizeSplit,
  inflightSizePacked,
  inflightSizePerQueue,
  initInflightRegion,
  checkInflightsSplit,
  checkInflightsPacked,
  InflightSplitView,
  InflightPackedView,
  INFLIGHT_ALIGNMENT,
  INFLIGHT_VERSION,
  type InflightCheck,
  type ResubmitDesc,
} from './inflight.ts';
export { IotlbCache, type IotlbEntry } from './iotlb.ts';
