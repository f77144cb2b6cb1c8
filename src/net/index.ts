export * from './packet.ts';
export * from './net-header.ts';
export { Mbuf, MbufPool, type MbufPoolOptions, type NetPacket, type PacketSource } from './mbuf.ts';
export { GuestMbuf, GuestMbufPool, GUEST_MBUF_DATAROOM, GUEST_MBUF_HEADROOM, type GuestMbufPoolOptions } from './guest-mbuf.ts';
export {
  PortCounters,
  PortStatsDisplay,
  formatPortStats,
  formatForwardStats,
  ZERO_RATES,
  type EthPort,
  type PortRates,
  type ForwardPortStats,
} from './port.ts';
export {
  VhostDequeue,
  VhostEnqueue,
  VhostQueueStats,
  VHOST_MAX_PKT_BURST,
  BUF_VECTOR_MAX,
  type VhostQueueOptions,
  type DetachReport,
  type QueueDirection,
} from './vhost-queues.ts';
export { VhostPort, vhostDefaultMac, type VhostPortOptions, type VhostAttachOptions, type VhostPmdQueueStats } from './vhost-port.ts';
export { Testpmd, topologyTxPort, defaultPeerMac, DEF_PKT_BURST, type FwdMode, type PortTopology, type TestpmdOptions, type FwdStream } from './forwarding.ts';
export { VirtioNetQueuePair, type VirtioQueuePairOptions } from './virtio-net-driver.ts';
export { VirtioPmdPort, GuestVirtioPmd, type VirtioPmdPortOptions, type GuestVirtioPmdOptions } from './guest-virtio-pmd.ts';
export {
  StreamSender,
  StreamReceiver,
  type StreamTransport,
  type StreamSenderOptions,
  type StreamReceiverOptions,
  type StreamSenderReport,
  type StreamReceiverReport,
} from './stream.ts';
export { GuestVirtioNet, type GuestVirtioNetOptions } from './guest-virtio-net.ts';
export { Nic, flowHash, rssQueue, RSS_RETA_SIZE, type NicOptions, type WireEnd } from './nic.ts';
export { TrafficGenerator, FlowStats, type GeneratorStreamOptions, type GeneratorReport } from './traffic-generator.ts';
export { layoutNetRings, makeGuestDrivers, makeBackendDevice, type NetRings, type NetRingsOptions, type DeviceResume } from './ring-setup.ts';
