/**
 * The model front-ends `virtio-user-22.11` (`server=1`) and `qemu-7.2` (chardev server) on
 * real sockets, fds and guest memory, serving a real back-end. Check `realTransportAvailability()` (src/transport/real) before use.
 */
export { RealModelFrontend, BUF_SIZE, type RealModelFrontendOptions, type RealFrontendSession, type RealFrontendLogLine } from './real-frontend.ts';
export { numberedPacket, verifyPacket, exchange, type PacketVerdict, type ExchangeResult } from './traffic.ts';
export { RealQemuFrontend, type RealQemuFrontendOptions } from './real-qemu.ts';
export { GuestPort, type GuestTrafficPort } from './guest-port.ts';
