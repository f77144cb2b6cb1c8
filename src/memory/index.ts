export { GuestMemory, MemoryRegion, PacketBuffer, type RegionSpec, type MemoryArea } from './guest-memory.ts';
export { GuestMemoryError, type MemoryErrorCode } from './errors.ts';
export { DirtyLog, LOG_PAGE_SIZE } from './dirty-log.ts';
