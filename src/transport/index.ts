export { TransportError, isTransportError, type TransportErrorCode } from './errors.ts';
export { FdHandle, FdObject, FdRegistry, type Fd, type FdKind, type AnyFd, type TransportScheduler, type TransportRng } from './fd.ts';
export { MemFd, MemFdObject } from './memfd.ts';
export { EventFd, EventFdObject, EVENTFD_BYTES, EVENTFD_MAX, eventfdCounter, eventfdAdd, eventfdTake, eventfdPeek } from './eventfd.ts';
export type { Channel, DataCallback, CloseCallback, CloseInfo } from './channel.ts';
export { SocketFd, SocketEnd, Connection, createConnection, MAX_FDS_PER_MESSAGE, type PipeStats } from './socket.ts';
export {
  SocketNamespace,
  Listener,
  MAX_SOCKET_PATH_BYTES,
  type SocketNamespaceOptions,
  type ConnectOptions,
  type ConnectCallback,
  type PendingConnect,
} from './socket-namespace.ts';
export {
  closeAfter,
  closeMidMessage,
  drawDelay,
  splitMessage,
  resolveFaults,
  validateFaults,
  type DelaySpec,
  type Chunking,
  type Role,
  type CutFault,
  type ChannelFaults,
  type ConnectionInfo,
  type FaultPolicy,
} from './faults.ts';
