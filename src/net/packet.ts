/**
 * The frames vhostsim sends: an Ethernet header followed by a small trace header, so
 * that every delivery can be followed end to end (which flow, which sequence number,
 * intact or not), and a deterministic payload covered by a checksum.
 *
 * Layout (multi-byte fields big-endian, as on the wire):
 *
 * | off | size | field |
 * |----:|-----:|-------|
 * | 0   | 6    | destination MAC |
 * | 6   | 6    | source MAC |
 * | 12  | 2    | ethertype 0x88b5 (IEEE local experimental ethertype 1) |
 * | 14  | 2    | magic 0x5653 ("VS") |
 * | 16  | 1    | kind (FrameKind) |
 * | 17  | 1    | flags (free for the sender) |
 * | 18  | 2    | frame length (bytes, without FCS) |
 * | 20  | 4    | flow id |
 * | 24  | 4    | sequence number |
 * | 28  | 4    | acknowledgement (stream frames; 0 otherwise) |
 * | 32  | 4    | checksum: FNV-1a over bytes 12..len with this field taken as 0 |
 * | 36  | …    | payload: a pattern derived from (flow, seq) |
 *
 * The MAC addresses are outside the checksum on purpose: forwarding engines rewrite them.
 * MAC addresses are handled as 48-bit integers (exact in a JavaScript number), so the hot
 * path never allocates for them.
 */

export const ETHERTYPE_VHOSTSIM = 0x88b5;
export const FRAME_MAGIC = 0x5653;
/** Bytes before the payload. */
export const FRAME_HEADER_LEN = 36;
/** Minimum Ethernet frame without FCS. */
export const MIN_FRAME_LEN = 60;
/** Largest length the 16-bit length field carries. */
export const MAX_FRAME_LEN = 0xffff;
/** An Ethernet FCS: a generator's "64-byte frame" is 60 bytes of packet. */
export const ETHER_CRC_LEN = 4;

export const FrameKind = {
  /** Generator traffic (PVP). */
  Data: 0,
  /** Stream data segment. */
  Segment: 1,
  /** Stream acknowledgement. */
  Ack: 2,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const OFF_ETHERTYPE = 12;
const OFF_MAGIC = 14;
const OFF_KIND = 16;
const OFF_FLAGS = 17;
const OFF_LEN = 18;
const OFF_FLOW = 20;
const OFF_SEQ = 24;
const OFF_ACK = 28;
const OFF_CSUM = 32;

const TWO_40 = 2 ** 40;
const TWO_32 = 2 ** 32;
const TWO_24 = 2 ** 24;
const TWO_16 = 2 ** 16;
const TWO_8 = 2 ** 8;

export const BROADCAST_MAC = 0xffff_ffff_ffff;

/** Parses `aa:bb:cc:dd:ee:ff` into a 48-bit integer. */
export function parseMac(s: string): number {
  const parts = s.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new TypeError(`'${s}' is not a MAC address`);
  let v = 0;
  for (const p of parts) v = v * 256 + parseInt(p, 16);
  return v;
}

/** Formats a 48-bit integer as testpmd does (`%02X:%02X:…`). */
export function formatMac(mac: number): string {
  const out: string[] = [];
  for (let i = 5; i >= 0; i--) out.push((Math.floor(mac / 2 ** (8 * i)) % 256).toString(16).toUpperCase().padStart(2, '0'));
  return out.join(':');
}

export function readMac(bytes: Uint8Array, off: number): number {
  return bytes[off] * TWO_40 + bytes[off + 1] * TWO_32 + bytes[off + 2] * TWO_24 + bytes[off + 3] * TWO_16 + bytes[off + 4] * TWO_8 + bytes[off + 5];
}

export function writeMac(bytes: Uint8Array, off: number, mac: number): void {
  const hi = Math.floor(mac / TWO_32);
  const lo = mac >>> 0;
  bytes[off] = (hi >>> 8) & 0xff;
  bytes[off + 1] = hi & 0xff;
  bytes[off + 2] = lo >>> 24;
  bytes[off + 3] = (lo >>> 16) & 0xff;
  bytes[off + 4] = (lo >>> 8) & 0xff;
  bytes[off + 5] = lo & 0xff;
}

/** The fields a sender chooses; the length is given separately. */
export interface FrameFields {
  dst: number;
  src: number;
  kind: FrameKind;
  flow: number;
  seq: number;
  ack?: number;
  flags?: number;
}

export interface DecodedFrame extends Required<FrameFields> {
  len: number;
  ethertype: number;
  checksum: number;
  /** Magic, length field and checksum all agree with the bytes. */
  valid: boolean;
}

function u32be(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}
function putU32be(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}
function putU16be(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}

/** Payload byte i of (flow, seq): cheap, and different for neighbouring flows and sequence numbers. */
function patternSeed(flow: number, seq: number): number {
  return (Math.imul(flow, 0x9e3779b1) ^ Math.imul(seq, 0x85ebca6b)) >>> 0;
}

/** FNV-1a over bytes[12, len) with the checksum field read as zero. */
export function frameChecksum(bytes: Uint8Array, len: number): number {
  let h = 0x811c9dc5;
  for (let i = OFF_ETHERTYPE; i < OFF_CSUM; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  for (let i = 0; i < 4; i++) h = Math.imul(h, 0x01000193); // the zeroed checksum bytes
  for (let i = FRAME_HEADER_LEN; i < len; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

/**
 * Writes a complete frame of `len` bytes at the start of `bytes`. `len` must lie in
 * [FRAME_HEADER_LEN, MAX_FRAME_LEN] and fit the array.
 */
export function writeFrame(bytes: Uint8Array, fields: FrameFields, len: number): void {
  if (!Number.isInteger(len) || len < FRAME_HEADER_LEN || len > MAX_FRAME_LEN) throw new RangeError(`frame length ${len} is outside [${FRAME_HEADER_LEN}, ${MAX_FRAME_LEN}]`);
  if (len > bytes.length) throw new RangeError(`frame of ${len} bytes does not fit a ${bytes.length}-byte buffer`);
  writeMac(bytes, 0, fields.dst);
  writeMac(bytes, 6, fields.src);
  putU16be(bytes, OFF_ETHERTYPE, ETHERTYPE_VHOSTSIM);
  putU16be(bytes, OFF_MAGIC, FRAME_MAGIC);
  bytes[OFF_KIND] = fields.kind;
  bytes[OFF_FLAGS] = (fields.flags ?? 0) & 0xff;
  putU16be(bytes, OFF_LEN, len);
  putU32be(bytes, OFF_FLOW, fields.flow >>> 0);
  putU32be(bytes, OFF_SEQ, fields.seq >>> 0);
  putU32be(bytes, OFF_ACK, (fields.ack ?? 0) >>> 0);
  // The checksum (as frameChecksum computes it) is folded into the payload loop: one pass over the bytes.
  let h = 0x811c9dc5;
  for (let i = OFF_ETHERTYPE; i < OFF_CSUM; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  for (let i = 0; i < 4; i++) h = Math.imul(h, 0x01000193); // the zeroed checksum bytes
  let x = patternSeed(fields.flow >>> 0, fields.seq >>> 0) | 1;
  for (let i = FRAME_HEADER_LEN; i < len; i++) {
    // xorshift32: a payload whose every byte depends on (flow, seq)
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const b = x & 0xff;
    bytes[i] = b;
    h = Math.imul(h ^ b, 0x01000193);
  }
  putU32be(bytes, OFF_CSUM, h >>> 0);
}

/** Builds a fresh frame (tests, tracing; not the hot path). */
export function encodeFrame(fields: FrameFields, len: number): Uint8Array {
  const b = new Uint8Array(len);
  writeFrame(b, fields, len);
  return b;
}

export function frameKind(bytes: Uint8Array): number {
  return bytes[OFF_KIND];
}
export function frameFlow(bytes: Uint8Array): number {
  return u32be(bytes, OFF_FLOW);
}
export function frameSeq(bytes: Uint8Array): number {
  return u32be(bytes, OFF_SEQ);
}
export function frameAck(bytes: Uint8Array): number {
  return u32be(bytes, OFF_ACK);
}
export function frameLenField(bytes: Uint8Array): number {
  return (bytes[OFF_LEN] << 8) | bytes[OFF_LEN + 1];
}

/** True when the first `len` bytes are a whole, unmodified vhostsim frame (MACs aside). */
export function verifyFrame(bytes: Uint8Array, len: number): boolean {
  if (len < FRAME_HEADER_LEN || len > bytes.length) return false;
  if (((bytes[OFF_ETHERTYPE] << 8) | bytes[OFF_ETHERTYPE + 1]) !== ETHERTYPE_VHOSTSIM) return false;
  if (((bytes[OFF_MAGIC] << 8) | bytes[OFF_MAGIC + 1]) !== FRAME_MAGIC) return false;
  if (frameLenField(bytes) !== len) return false;
  return u32be(bytes, OFF_CSUM) === frameChecksum(bytes, len);
}

/** Reads every field (tests and traces). */
export function decodeFrame(bytes: Uint8Array, len = bytes.length): DecodedFrame {
  if (len < FRAME_HEADER_LEN) throw new RangeError(`${len} bytes is shorter than a frame header (${FRAME_HEADER_LEN})`);
  return {
    dst: readMac(bytes, 0),
    src: readMac(bytes, 6),
    ethertype: (bytes[OFF_ETHERTYPE] << 8) | bytes[OFF_ETHERTYPE + 1],
    kind: bytes[OFF_KIND] as FrameKind,
    flags: bytes[OFF_FLAGS],
    len,
    flow: frameFlow(bytes),
    seq: frameSeq(bytes),
    ack: frameAck(bytes),
    checksum: u32be(bytes, OFF_CSUM),
    valid: verifyFrame(bytes, len),
  };
}
