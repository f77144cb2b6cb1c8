/**
 * Guest traffic for the real front-end: numbered Ethernet/IPv4/UDP frames whose payload
 * carries a sequence number and a checksum over the rest, so a frame that comes back can be
 * matched to the one sent and checked byte for byte.
 */
import { checkFrame } from '../frames.ts';
import { udpFrame } from '../testing.ts';
import type { GuestTrafficPort } from './guest-port.ts';

/** Offset of the UDP payload in the frame (Ethernet 14 + IPv4 20 + UDP 8). */
const PAYLOAD = 42;
const HDR = 12;

/** FNV-1a over bytes: cheap, and any single changed byte changes it. */
function fnv1a(b: Uint8Array, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ b[i]!, 0x01000193) >>> 0;
  return h;
}

/** A packet: a zeroed 12-byte virtio-net header, then a `len`-byte frame (≥ 50) numbered `seq`. */
export function numberedPacket(seq: number, len = 64): Uint8Array {
  if (len < PAYLOAD + 8) throw new RangeError(`a numbered frame needs at least ${PAYLOAD + 8} bytes`);
  const f = udpFrame(len, seq);
  const dv = new DataView(f.buffer);
  dv.setUint32(PAYLOAD, seq >>> 0);
  dv.setUint32(PAYLOAD + 4, (fnv1a(f, 0, PAYLOAD + 4) ^ fnv1a(f, PAYLOAD + 8, len)) >>> 0);
  const p = new Uint8Array(HDR + len);
  p.set(f, HDR);
  return p;
}

export type PacketVerdict = { ok: true; seq: number } | { ok: false; why: string };

/** Checks a received packet (header included): well-formed IPv4/UDP, checksum right; gives its number. */
export function verifyPacket(p: Uint8Array): PacketVerdict {
  if (p.length < HDR + PAYLOAD + 8) return { ok: false, why: `short packet (${p.length} bytes)` };
  const f = p.subarray(HDR);
  const bad = checkFrame(f, 0, f.length);
  if (bad !== undefined) return { ok: false, why: bad };
  const dv = new DataView(f.buffer, f.byteOffset, f.length);
  // The IPv4 total length says where the frame ends (the back-end may not pad, but might).
  const len = 14 + dv.getUint16(16);
  const sum = (fnv1a(f, 0, PAYLOAD + 4) ^ fnv1a(f, PAYLOAD + 8, len)) >>> 0;
  if (dv.getUint32(PAYLOAD + 4) !== sum) return { ok: false, why: 'payload checksum' };
  return { ok: true, seq: dv.getUint32(PAYLOAD) };
}

export interface ExchangeResult {
  /** Packets placed on the TX ring. */
  sent: number;
  /** Sequence numbers of the good packets received, in arrival order. */
  received: number[];
  /** Received packets that failed the check, with why. */
  bad: string[];
  /** Wall-clock milliseconds taken. */
  ms: number;
}

/**
 * The guest data path on the event loop: transmits `count` numbered packets from `first` in
 * bursts (at most `window` outstanding), keeping the RX ring full, reclaiming TX, until `count` came back or `timeoutMs`
 * passed (then it returns what it has: the caller judges). Yields to the loop between passes
 * so socket messages and the back-end get their turn.
 */
export async function exchange(
  fe: GuestTrafficPort,
  first: number,
  count: number,
  opts: { timeoutMs?: number; burst?: number; window?: number; len?: (seq: number) => number } = {},
): Promise<ExchangeResult> {
  const t0 = Date.now();
  const end = t0 + (opts.timeoutMs ?? 10_000);
  const burst = opts.burst ?? 32;
  // Frames out and not back yet. A back-end frees a TX buffer before it has an RX buffer for
  // the frame, so without a bound a slow guest outruns its own RX ring and the back-end drops
  // (testpmd's TX-dropped). At most half the ring in flight leaves RX always room.
  const window = opts.window ?? fe.cfg.queueSize / 2;
  const len = opts.len ?? ((s: number) => 60 + (s % 200));
  const r: ExchangeResult = { sent: 0, received: [], bad: [], ms: 0 };
  let idle = 0;
  while (r.received.length + r.bad.length < count && Date.now() < end) {
    let work = fe.reclaimTx();
    for (const p of fe.receive()) {
      work++;
      const v = verifyPacket(p);
      if (v.ok) r.received.push(v.seq);
      else r.bad.push(v.why);
    }
    fe.postRx(fe.cfg.queueSize);
    const batch: Uint8Array[] = [];
    const room = window - (r.sent - r.received.length - r.bad.length);
    for (let i = 0; i < Math.min(burst, room) && r.sent + batch.length < count; i++) batch.push(numberedPacket(first + r.sent + batch.length, len(first + r.sent + batch.length)));
    const n = fe.send(batch);
    r.sent += n;
    work += n;
    idle = work > 0 ? 0 : idle + 1;
    // Busy: let I/O in and go on; idle: wait a millisecond.
    await new Promise((res) => (idle === 0 ? setImmediate(res) : setTimeout(res, 1)));
  }
  r.ms = Date.now() - t0;
  return r;
}
