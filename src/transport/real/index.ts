/**
 * The real AF_UNIX transport: OS sockets, memfds and eventfds through koffi, behind the
 * same `Channel` / `Fd` contracts as the in-process model. Check `realTransportAvailability()`
 * before use: it loads nothing else and says why the transport cannot run here.
 */
export {
  OsError,
  osAvailability as realTransportAvailability,
  openFdNumbers,
  pollBackend,
  setPollBackend,
  MAX_UNIX_PATH_BYTES,
  SCM_MAX_FD,
  type PollBackend,
} from './libc.ts';
export {
  RealFdRegistry,
  RealFdBase,
  RealMemFd,
  RealEventFd,
  Mapping,
  MappedGuestMemory,
  defaultRealRegistry,
  type MappedRegion,
} from './real-fd.ts';
export {
  RealSocketFd,
  RealUnixListener,
  connectUnix,
  realSocketpair,
  adoptFd,
  VHOST_USER_FRAMING,
  type Framing,
  type RealFd,
  type RealChannelOptions,
  type RealChannelStats,
  type RealListenOptions,
} from './unix-socket.ts';
