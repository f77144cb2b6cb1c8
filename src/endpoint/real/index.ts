/**
 * The model back-end on real sockets, fds and guest memory: `RealModelBackend` serves a real
 * front-end (DPDK virtio-user, QEMU) in client mode, in real time. Check
 * `realTransportAvailability()` (src/transport/real) before use.
 */
export { RealModelBackend, type RealModelBackendConfig, type RealSession, type RealBackendState } from './real-backend.ts';
export { NetDataPath, type DataPathOptions, type DataPathStats, type QueueCounters } from './data-path.ts';
export { RealFdAdapters, RealBackedEventFd, RealBackedMemFd, RealTimeScheduler, realFdOf, epochSeconds } from './fd-adapter.ts';
export { checkFrame, checkTxHeader, netHeaderLength, type FrameProblem, type FrameInfo } from './frames.ts';
export * from './frontend/index.ts';
