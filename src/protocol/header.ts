/**
 * The 12-byte vhost-user header: request u32, flags u32, size u32, host byte order
 * (little-endian on every platform DPDK and QEMU run vhost-user on). Payload follows.
 * [QDOC "Header"; DPDK lib/vhost/vhost_user.h]
 */
export const HEADER_SIZE = 12;

/** Flags bits 0-1: protocol version, always 1. */
export const VERSION = 0x1;
export const VERSION_MASK = 0x3;
/** Flags bit 2: set on every reply. */
export const FLAG_REPLY = 0x4;
/** Flags bit 3: the sender wants an ack (REPLY_ACK protocol feature). */
export const FLAG_NEED_REPLY = 0x8;
/** The only flags value QEMU and DPDK virtio-user accept on a reply (VERSION|REPLY). */
export const REPLY_FLAGS = VERSION | FLAG_REPLY;

/**
 * DPDK 22.11 refuses a size above `sizeof(VhostUserMsg.payload)` = 632 bytes (the largest
 * union member is its crypto-session struct) and closes the connection
 * [DPDK lib/vhost/vhost_user.c `read_vhost_message`].
 */
export const DPDK_22_11_MAX_PAYLOAD = 632;
/**
 * QEMU 7.2's `VhostUserPayload` is also 632 bytes (its crypto session is 8 + 48 + 64 + 512).
 * Recent QEMU added asymmetric crypto sessions to the union (op_code 8 + asym 32 + key 1024 +
 * session_id 8), so its `vhost_user_read` accepts replies up to 1072 bytes
 * [qemu hw/virtio/vhost-user.c `VHOST_USER_PAYLOAD_SIZE`, 10.x source].
 */
export const QEMU_7_2_MAX_PAYLOAD = 632;
export const QEMU_MAX_PAYLOAD = 1072;

/** DPDK's recvmsg control buffer holds 8 fds (`VHOST_MEMORY_MAX_NREGIONS`). */
export const MAX_FDS = 8;
/** QEMU's chardev accepts up to 16 fds per read (`TCP_MAX_FDS`). */
export const QEMU_MAX_FDS = 16;
/** SET_MEM_TABLE carries at most 8 regions (DPDK `VHOST_MEMORY_MAX_NREGIONS`, QEMU `VHOST_MEMORY_BASELINE_NREGIONS`). */
export const MAX_REGIONS = 8;
/** `VHOST_USER_MAX_CONFIG_SIZE`. */
export const MAX_CONFIG_SIZE = 256;

export interface MessageHeader {
  readonly request: number;
  readonly flags: number;
  readonly size: number;
}

export function encodeHeader(h: MessageHeader, into?: Uint8Array, offset = 0): Uint8Array {
  const out = into ?? new Uint8Array(HEADER_SIZE);
  const dv = new DataView(out.buffer, out.byteOffset + offset, HEADER_SIZE);
  dv.setUint32(0, h.request >>> 0, true);
  dv.setUint32(4, h.flags >>> 0, true);
  dv.setUint32(8, h.size >>> 0, true);
  return out;
}

/** Reads a header; the caller guarantees 12 bytes from `offset`. */
export function decodeHeader(bytes: Uint8Array, offset = 0): MessageHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_SIZE);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

export function versionOf(flags: number): number {
  return flags & VERSION_MASK;
}
export function isReply(flags: number): boolean {
  return (flags & FLAG_REPLY) !== 0;
}
export function wantsReply(flags: number): boolean {
  return (flags & FLAG_NEED_REPLY) !== 0;
}

/** Flags for a request: version 1, NEED_REPLY when an ack is wanted (0x1 or 0x9). */
export function requestFlags(needReply = false): number {
  return VERSION | (needReply ? FLAG_NEED_REPLY : 0);
}

/**
 * Flags of DPDK's reply to a request with `requestFlags`: clear the version and NEED_REPLY
 * bits, set VERSION and REPLY, keep anything else [DPDK vhost_user.c `send_vhost_reply`].
 * For every request a sane front-end sends (0x1, 0x9) this is exactly 0x5.
 */
export function replyFlagsFor(requestFlags: number): number {
  return ((requestFlags & ~(VERSION_MASK | FLAG_NEED_REPLY)) | VERSION | FLAG_REPLY) >>> 0;
}

/** A decoded message's bytes as they were on the wire (header + payload), for traces and comparisons. */
export function messageBytes(m: { header: { request: number; flags: number }; payload: Uint8Array }): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + m.payload.length);
  encodeHeader({ request: m.header.request, flags: m.header.flags, size: m.payload.length }, out);
  out.set(m.payload, HEADER_SIZE);
  return out;
}
