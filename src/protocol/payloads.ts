/**
 * Payload layouts of vhost-user messages, to and from typed objects.
 * [QDOC "Payload"; DPDK lib/vhost/vhost_user.h; linux/vhost_types.h]
 *
 * Conventions:
 * - u64 fields are `bigint`, narrower fields `number`.
 * - Reserved or padding fields that the spec names (memory-table padding, single-region
 *   padding, the bits of a vring-file u64 above NOFD, the two high bytes of the RARP u64)
 *   are kept so that decode → encode is byte-exact; they appear in a decoded object only
 *   when non-zero, and encoders default them to zero.
 * - Implicit C tail padding (IOTLB's 6 bytes, inflight's 4) is written as zero and ignored
 *   on read, as both DPDK and QEMU do.
 * - Only the bytes a sender really transmits are encoded: a memory table is 8 + 32·n bytes,
 *   a config message 12 + size (QEMU `vhost_user_fill_set_mem_table_msg`, DPDK virtio-user).
 */
import { ProtocolError } from './errors.ts';
import { MAX_CONFIG_SIZE, MAX_REGIONS } from './header.ts';

export type PayloadKind =
  | 'none' // no payload
  | 'u64' // a plain number (GET_QUEUE_NUM reply, NET_SET_MTU, GET_MAX_MEM_SLOTS reply, …)
  | 'features' // virtio feature bits
  | 'protocolFeatures' // vhost-user protocol feature bits
  | 'ack' // REPLY_ACK answer: 0 success, non-zero failure
  | 'status' // virtio device status, u64 with only the low 8 bits valid
  | 'vringFile' // KICK/CALL/ERR: bits 0-7 vring index, bit 8 NOFD
  | 'mac' // SEND_RARP: MAC in the first 6 bytes of a u64
  | 'vringState' // index u32, num u32
  | 'vringAddr' // 40 B: index, flags, desc, used, avail, log
  | 'memoryTable' // nregions u32, padding u32, n × 32-byte region
  | 'singleRegion' // padding u64 + one region (ADD/REM_MEM_REG)
  | 'log' // mmap_size u64, mmap_offset u64
  | 'iotlb' // struct vhost_iotlb_msg, 32 B
  | 'config' // offset, size, flags u32 + size bytes
  | 'vringArea' // u64 (index|NOFD), size u64, offset u64
  | 'inflight' // mmap_size, mmap_offset u64, num_queues, queue_size u16, 4 B pad
  | 'uuid' // 16 B shared-object UUID
  | 'deviceStateFd' // direction u32, phase u32
  | 'deviceStateResult' // SET_DEVICE_STATE_FD reply: bits 0-7 error, bit 8 no fd
  | 'cryptoSession' // opaque: layout differs between DPDK and QEMU versions
  | 'opaque'; // no layout defined (e.g. GET_SHARED_OBJECT reply)

export const PAYLOAD_KINDS: readonly PayloadKind[] = [
  'none', 'u64', 'features', 'protocolFeatures', 'ack', 'status', 'vringFile', 'mac', 'vringState',
  'vringAddr', 'memoryTable', 'singleRegion', 'log', 'iotlb', 'config', 'vringArea', 'inflight',
  'uuid', 'deviceStateFd', 'deviceStateResult', 'cryptoSession', 'opaque',
];

/** One guest memory region as the protocol describes it (`VhostUserMemoryRegion`). */
export interface VhostUserRegion {
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
}

export type Payload =
  | { readonly kind: 'none' }
  | { readonly kind: 'u64'; readonly value: bigint }
  | { readonly kind: 'features'; readonly features: bigint }
  | { readonly kind: 'protocolFeatures'; readonly features: bigint }
  | { readonly kind: 'ack'; readonly value: bigint }
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'vringFile'; readonly index: number; readonly noFd: boolean; readonly reserved?: bigint }
  | { readonly kind: 'mac'; readonly mac: string; readonly reserved?: number }
  | { readonly kind: 'vringState'; readonly index: number; readonly num: number }
  | {
      readonly kind: 'vringAddr';
      readonly index: number;
      /** bit 0: VHOST_VRING_F_LOG */
      readonly flags: number;
      readonly desc: bigint;
      readonly used: bigint;
      readonly avail: bigint;
      readonly log: bigint;
    }
  | { readonly kind: 'memoryTable'; readonly regions: readonly VhostUserRegion[]; readonly padding?: number }
  | { readonly kind: 'singleRegion'; readonly region: VhostUserRegion; readonly padding?: bigint }
  | { readonly kind: 'log'; readonly mmapSize: bigint; readonly mmapOffset: bigint }
  | {
      readonly kind: 'iotlb';
      readonly iova: bigint;
      readonly size: bigint;
      readonly uaddr: bigint;
      /** 0 none, 1 RO, 2 WO, 3 RW */
      readonly perm: number;
      /** 1 MISS, 2 UPDATE, 3 INVALIDATE, 4 ACCESS_FAIL */
      readonly type: number;
    }
  | { readonly kind: 'config'; readonly offset: number; readonly flags: number; readonly data: Uint8Array }
  | {
      readonly kind: 'vringArea';
      readonly index: number;
      readonly noFd: boolean;
      readonly reserved?: bigint;
      readonly size: bigint;
      readonly offset: bigint;
    }
  | {
      readonly kind: 'inflight';
      readonly mmapSize: bigint;
      readonly mmapOffset: bigint;
      readonly numQueues: number;
      readonly queueSize: number;
    }
  | { readonly kind: 'uuid'; readonly uuid: string }
  | { readonly kind: 'deviceStateFd'; readonly direction: number; readonly phase: number }
  | { readonly kind: 'deviceStateResult'; readonly error: number; readonly noFd: boolean; readonly reserved?: bigint }
  | { readonly kind: 'cryptoSession'; readonly bytes: Uint8Array }
  | { readonly kind: 'opaque'; readonly bytes: Uint8Array };

export type PayloadOf<K extends PayloadKind> = Extract<Payload, { kind: K }>;

/** Bit 8 of a vring-file / vring-area u64: no fd attached (poll instead). */
export const VRING_NOFD_MASK = 0x100;
export const VRING_IDX_MASK = 0xff;
export const VRING_F_LOG = 0x1;
export const REGION_SIZE = 32;
export const MEMORY_TABLE_HEADER = 8;
export const CONFIG_HEADER = 12;

/** Wire size of each fixed-size kind; variable kinds (memoryTable, config, cryptoSession, opaque) are absent. */
export const FIXED_PAYLOAD_SIZE: Partial<Record<PayloadKind, number>> = {
  none: 0,
  u64: 8,
  features: 8,
  protocolFeatures: 8,
  ack: 8,
  status: 8,
  vringFile: 8,
  mac: 8,
  vringState: 8,
  vringAddr: 40,
  singleRegion: 40,
  log: 16,
  iotlb: 32,
  vringArea: 24,
  inflight: 24,
  uuid: 16,
  deviceStateFd: 8,
  deviceStateResult: 8,
};

const U64_MAX = (1n << 64n) - 1n;
const LOW9 = 0x1ffn;

export interface PayloadEncodeOptions {
  /**
   * Apply the protocol limits (≤ 8 regions, config ≤ 256 bytes, status ≤ 0xff). Off, a typed
   * payload may break them, for fault injection; fields that cannot be represented at their
   * wire width are refused either way.
   */
  readonly validate?: boolean;
}

function out(kind: string, field: string, value: unknown, what: string): never {
  throw new ProtocolError('field-out-of-range', `${kind}.${field} = ${String(value)} does not fit ${what}`);
}
function checkUint(kind: string, field: string, v: number, bits: 8 | 16 | 32): number {
  if (!Number.isInteger(v) || v < 0 || v > 2 ** bits - 1) out(kind, field, v, `u${bits}`);
  return v;
}
function checkU64(kind: string, field: string, v: bigint): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) out(kind, field, v, 'u64');
  return v;
}
function checkReserved(kind: string, field: string, v: bigint | undefined): bigint {
  const r = v ?? 0n;
  checkU64(kind, field, r);
  if ((r & LOW9) !== 0n) out(kind, field, r, 'the bits above 8 (index and NOFD live in bits 0-8)');
  return r;
}

function parseMac(mac: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(mac);
  if (!m) out('mac', 'mac', mac, 'a MAC address aa:bb:cc:dd:ee:ff');
  return Uint8Array.from(m.slice(1, 7).map((h) => parseInt(h, 16)));
}
function formatMacBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
/** UUID text ↔ bytes: the first three components are stored big-endian [QDOC VhostUserShared], so the bytes are in text order. */
function parseUuid(u: string): Uint8Array {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(u)) out('uuid', 'uuid', u, 'a UUID');
  const hex = u.replace(/-/g, '');
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return b;
}
function formatUuidBytes(b: Uint8Array): string {
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function writeRegion(dv: DataView, off: number, r: VhostUserRegion, kind: string): void {
  dv.setBigUint64(off, checkU64(kind, 'guestPhysAddr', r.guestPhysAddr), true);
  dv.setBigUint64(off + 8, checkU64(kind, 'memorySize', r.memorySize), true);
  dv.setBigUint64(off + 16, checkU64(kind, 'userspaceAddr', r.userspaceAddr), true);
  dv.setBigUint64(off + 24, checkU64(kind, 'mmapOffset', r.mmapOffset), true);
}
function readRegion(dv: DataView, off: number): VhostUserRegion {
  return {
    guestPhysAddr: dv.getBigUint64(off, true),
    memorySize: dv.getBigUint64(off + 8, true),
    userspaceAddr: dv.getBigUint64(off + 16, true),
    mmapOffset: dv.getBigUint64(off + 24, true),
  };
}

/** Wire bytes of a typed payload. Throws `ProtocolError` (`field-out-of-range`, or a protocol limit). */
export function encodePayload(p: Payload, opts: PayloadEncodeOptions = {}): Uint8Array {
  const validate = opts.validate ?? true;
  const fixed = FIXED_PAYLOAD_SIZE[p.kind];
  let size: number;
  switch (p.kind) {
    case 'memoryTable':
      size = MEMORY_TABLE_HEADER + REGION_SIZE * p.regions.length;
      break;
    case 'config':
      size = CONFIG_HEADER + p.data.length;
      break;
    case 'cryptoSession':
    case 'opaque':
      size = p.bytes.length;
      break;
    default:
      size = fixed!;
  }
  const bytes = new Uint8Array(size);
  const dv = new DataView(bytes.buffer);
  const u64 = (off: number, field: string, v: bigint) => dv.setBigUint64(off, checkU64(p.kind, field, v), true);
  const u32 = (off: number, field: string, v: number) => dv.setUint32(off, checkUint(p.kind, field, v, 32), true);
  switch (p.kind) {
    case 'none':
      break;
    case 'u64':
    case 'ack':
      u64(0, 'value', p.value);
      break;
    case 'features':
    case 'protocolFeatures':
      u64(0, 'features', p.features);
      break;
    case 'status':
      if (!Number.isInteger(p.status) || p.status < 0 || p.status > Number.MAX_SAFE_INTEGER) out('status', 'status', p.status, 'u64');
      if (validate && p.status > 0xff) {
        throw new ProtocolError('status-out-of-range', `status 0x${p.status.toString(16)} above 0xff`);
      }
      dv.setBigUint64(0, BigInt(p.status), true);
      break;
    case 'vringFile':
    case 'deviceStateResult': {
      const low = p.kind === 'vringFile' ? checkUint(p.kind, 'index', p.index, 8) : checkUint(p.kind, 'error', p.error, 8);
      const v = BigInt(low) | (p.noFd ? BigInt(VRING_NOFD_MASK) : 0n) | checkReserved(p.kind, 'reserved', p.reserved);
      dv.setBigUint64(0, v, true);
      break;
    }
    case 'mac':
      bytes.set(parseMac(p.mac), 0);
      dv.setUint16(6, checkUint('mac', 'reserved', p.reserved ?? 0, 16), true);
      break;
    case 'vringState':
    case 'deviceStateFd':
      if (p.kind === 'vringState') {
        u32(0, 'index', p.index);
        u32(4, 'num', p.num);
      } else {
        u32(0, 'direction', p.direction);
        u32(4, 'phase', p.phase);
      }
      break;
    case 'vringAddr':
      // Field order is desc, used, avail (struct vhost_vring_addr), not the ring's memory order.
      u32(0, 'index', p.index);
      u32(4, 'flags', p.flags);
      u64(8, 'desc', p.desc);
      u64(16, 'used', p.used);
      u64(24, 'avail', p.avail);
      u64(32, 'log', p.log);
      break;
    case 'memoryTable':
      if (validate && p.regions.length > MAX_REGIONS) {
        throw new ProtocolError('too-many-regions', `memory table with ${p.regions.length} regions (max ${MAX_REGIONS})`);
      }
      u32(0, 'nregions', p.regions.length);
      u32(4, 'padding', p.padding ?? 0);
      p.regions.forEach((r, i) => writeRegion(dv, MEMORY_TABLE_HEADER + REGION_SIZE * i, r, 'memoryTable'));
      break;
    case 'singleRegion':
      u64(0, 'padding', p.padding ?? 0n);
      writeRegion(dv, 8, p.region, 'singleRegion');
      break;
    case 'log':
      u64(0, 'mmapSize', p.mmapSize);
      u64(8, 'mmapOffset', p.mmapOffset);
      break;
    case 'iotlb':
      u64(0, 'iova', p.iova);
      u64(8, 'size', p.size);
      u64(16, 'uaddr', p.uaddr);
      dv.setUint8(24, checkUint('iotlb', 'perm', p.perm, 8));
      dv.setUint8(25, checkUint('iotlb', 'type', p.type, 8));
      break;
    case 'config':
      if (validate && p.data.length > MAX_CONFIG_SIZE) {
        throw new ProtocolError('config-too-large', `config access of ${p.data.length} bytes (max ${MAX_CONFIG_SIZE})`);
      }
      u32(0, 'offset', p.offset);
      u32(4, 'size', p.data.length);
      u32(8, 'flags', p.flags);
      bytes.set(p.data, CONFIG_HEADER);
      break;
    case 'vringArea': {
      const v = BigInt(checkUint('vringArea', 'index', p.index, 8)) | (p.noFd ? BigInt(VRING_NOFD_MASK) : 0n) | checkReserved('vringArea', 'reserved', p.reserved);
      dv.setBigUint64(0, v, true);
      u64(8, 'size', p.size);
      u64(16, 'offset', p.offset);
      break;
    }
    case 'inflight':
      u64(0, 'mmapSize', p.mmapSize);
      u64(8, 'mmapOffset', p.mmapOffset);
      dv.setUint16(16, checkUint('inflight', 'numQueues', p.numQueues, 16), true);
      dv.setUint16(18, checkUint('inflight', 'queueSize', p.queueSize, 16), true);
      break;
    case 'uuid':
      bytes.set(parseUuid(p.uuid), 0);
      break;
    case 'cryptoSession':
    case 'opaque':
      bytes.set(p.bytes, 0);
      break;
  }
  return bytes;
}

function sizeError(kind: PayloadKind, got: number, want: string): ProtocolError {
  return new ProtocolError('size-mismatch', `${kind} payload needs ${want} bytes, got ${got}`);
}

/** Checks the size a kind needs, without reading any field. */
export function payloadSizeFits(kind: PayloadKind, size: number): boolean {
  const fixed = FIXED_PAYLOAD_SIZE[kind];
  if (fixed !== undefined) return size === fixed;
  if (kind === 'memoryTable') return size >= MEMORY_TABLE_HEADER && (size - MEMORY_TABLE_HEADER) % REGION_SIZE === 0;
  if (kind === 'config') return size >= CONFIG_HEADER;
  return true;
}

/**
 * Typed payload from wire bytes. Throws `ProtocolError` with the per-message codes:
 * `size-mismatch`, `too-many-regions`, `region-count-mismatch`, `config-too-large`,
 * `status-out-of-range`. Never reads outside `bytes`.
 */
export function decodePayload(kind: PayloadKind, bytes: Uint8Array): Payload {
  const n = bytes.length;
  const fixed = FIXED_PAYLOAD_SIZE[kind];
  if (fixed !== undefined && n !== fixed) throw sizeError(kind, n, String(fixed));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, n);
  const u64 = (off: number) => dv.getBigUint64(off, true);
  const u32 = (off: number) => dv.getUint32(off, true);
  switch (kind) {
    case 'none':
      return { kind };
    case 'u64':
    case 'ack':
      return { kind, value: u64(0) };
    case 'features':
    case 'protocolFeatures':
      return { kind, features: u64(0) };
    case 'status': {
      // DPDK: "invalid VHOST_USER_SET_STATUS payload" for anything above UINT8_MAX.
      const v = u64(0);
      if (v > 0xffn) throw new ProtocolError('status-out-of-range', `status 0x${v.toString(16)} above 0xff`);
      return { kind, status: Number(v) };
    }
    case 'vringFile': {
      const v = u64(0);
      const reserved = v & ~LOW9;
      return { kind, index: Number(v & 0xffn), noFd: (v & BigInt(VRING_NOFD_MASK)) !== 0n, ...(reserved ? { reserved } : {}) };
    }
    case 'deviceStateResult': {
      const v = u64(0);
      const reserved = v & ~LOW9;
      return { kind, error: Number(v & 0xffn), noFd: (v & BigInt(VRING_NOFD_MASK)) !== 0n, ...(reserved ? { reserved } : {}) };
    }
    case 'mac': {
      const reserved = dv.getUint16(6, true);
      return { kind, mac: formatMacBytes(bytes.subarray(0, 6)), ...(reserved ? { reserved } : {}) };
    }
    case 'vringState':
      return { kind, index: u32(0), num: u32(4) };
    case 'deviceStateFd':
      return { kind, direction: u32(0), phase: u32(4) };
    case 'vringAddr':
      return { kind, index: u32(0), flags: u32(4), desc: u64(8), used: u64(16), avail: u64(24), log: u64(32) };
    case 'memoryTable': {
      if (n < MEMORY_TABLE_HEADER || (n - MEMORY_TABLE_HEADER) % REGION_SIZE !== 0) {
        throw sizeError(kind, n, `8 + 32·nregions`);
      }
      const nregions = u32(0);
      // DPDK checks the count against its array ("too many memory regions") before anything else.
      if (nregions > MAX_REGIONS) {
        throw new ProtocolError('too-many-regions', `memory table claims ${nregions} regions (max ${MAX_REGIONS})`);
      }
      const fromSize = (n - MEMORY_TABLE_HEADER) / REGION_SIZE;
      if (nregions !== fromSize) {
        throw new ProtocolError('region-count-mismatch', `memory table claims ${nregions} regions but its ${n} bytes hold ${fromSize}`);
      }
      const regions: VhostUserRegion[] = [];
      for (let i = 0; i < nregions; i++) regions.push(readRegion(dv, MEMORY_TABLE_HEADER + REGION_SIZE * i));
      const padding = u32(4);
      return { kind, regions, ...(padding ? { padding } : {}) };
    }
    case 'singleRegion': {
      const padding = u64(0);
      return { kind, region: readRegion(dv, 8), ...(padding ? { padding } : {}) };
    }
    case 'log':
      return { kind, mmapSize: u64(0), mmapOffset: u64(8) };
    case 'iotlb':
      return { kind, iova: u64(0), size: u64(8), uaddr: u64(16), perm: dv.getUint8(24), type: dv.getUint8(25) };
    case 'config': {
      if (n < CONFIG_HEADER) throw sizeError(kind, n, '12 + size');
      const size = u32(4);
      // DPDK rejects size > VHOST_USER_MAX_CONFIG_SIZE before looking at the message size.
      if (size > MAX_CONFIG_SIZE) throw new ProtocolError('config-too-large', `config access of ${size} bytes (max ${MAX_CONFIG_SIZE})`);
      if (n !== CONFIG_HEADER + size) throw sizeError(kind, n, `12 + ${size}`);
      return { kind, offset: u32(0), flags: u32(8), data: bytes.slice(CONFIG_HEADER) };
    }
    case 'vringArea': {
      const v = u64(0);
      const reserved = v & ~LOW9;
      return {
        kind,
        index: Number(v & 0xffn),
        noFd: (v & BigInt(VRING_NOFD_MASK)) !== 0n,
        ...(reserved ? { reserved } : {}),
        size: u64(8),
        offset: u64(16),
      };
    }
    case 'inflight':
      return { kind, mmapSize: u64(0), mmapOffset: u64(8), numQueues: dv.getUint16(16, true), queueSize: dv.getUint16(18, true) };
    case 'uuid':
      return { kind, uuid: formatUuidBytes(bytes) };
    case 'cryptoSession':
    case 'opaque':
      return { kind, bytes: bytes.slice() };
  }
}

/** Kinds with a field-level codec; the others are carried as opaque bytes. */
export function isOpaqueKind(kind: PayloadKind): boolean {
  return kind === 'cryptoSession' || kind === 'opaque';
}
