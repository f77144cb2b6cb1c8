/**
 * The model front-end `virtio-user-22.11` (`server=1`) on real sockets, fds and guest memory,
 * serving a real back-end. Check `realTransportAvailability()` (src/transport/real) before use.
 */
export { RealModelFrontend, BUF_SIZE, type RealModelFrontendOptions, type RealFrontendSession, type RealFrontendLogLine } from './real-frontend.ts';
export { numberedPacket, verifyPacket, exchange, type PacketVerdict, type ExchangeResult } from './traffic.ts';
