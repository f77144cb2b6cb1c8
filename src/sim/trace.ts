/**
 * The trace format (DESIGN.md "Formats"): JSON Lines, one record a line, the same for real
 * captures and model runs so the two can be diffed.
 *
 *   {"t":3.457,"dir":"f2b","request":2,"flags":1,"size":8,"nfds":0,"payload":"0080005009000000"}
 *   {"t":3.461,"event":"session","n":2}
 *
 * Readers ignore fields they do not know (writers may add `name`, `decoded`, `queue`, …) and
 * accept upper-case hex; writers emit the fields above in that order, payload in lower case.
 *
 * A message record does not say which channel it was on; the request space follows from the
 * direction and the REPLY flag (`requestSpaceOfRecord`): front-end requests and the back-end's
 * replies are front-end codes, back-end requests and the front-end's replies to them are
 * back-end-channel codes.
 */
import { readFileSync } from 'node:fs';
import {
  HEADER_SIZE,
  checkMessage,
  encodeHeader,
  decodeHeader,
  formatMessage,
  requestName,
  requestSpaceOf,
  type CheckOptions,
  type MessageCheck,
  type MessageHeader,
  type RequestSpace,
} from '../protocol/index.ts';

export type Direction = 'f2b' | 'b2f';
export type TraceEventKind = 'session' | 'closed';

export interface TraceMessageRecord {
  /** Seconds (virtual seconds in the model). */
  readonly t: number;
  readonly dir: Direction;
  readonly request: number;
  readonly flags: number;
  readonly size: number;
  readonly nfds: number;
  /** Payload bytes, lower-case hex, `size` bytes. */
  readonly payload: string;
  /**
   * Set by writers that saw the message but not its bytes (a trace made from a DPDK log):
   * `size` and `payload` are placeholders, `decoded` says what is known.
   */
  readonly partial?: true;
  readonly decoded?: string;
}

export interface TraceEventRecord {
  readonly t: number;
  /** `session`: connection number n established; `closed`: connection n gone. */
  readonly event: TraceEventKind;
  readonly n: number;
}

export type TraceRecord = TraceMessageRecord | TraceEventRecord;

export class TraceFormatError extends Error {
  override readonly name = 'TraceFormatError';
  constructor(
    message: string,
    /** 1-based line number, when reading a file or text. */
    readonly line?: number,
  ) {
    super(line !== undefined ? `line ${line}: ${message}` : message);
  }
}

export function isMessageRecord(r: TraceRecord): r is TraceMessageRecord {
  return 'dir' in r;
}
export function isEventRecord(r: TraceRecord): r is TraceEventRecord {
  return 'event' in r;
}

function u32(o: Record<string, unknown>, k: string, line?: number): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new TraceFormatError(`"${k}" must be an unsigned 32-bit integer, got ${JSON.stringify(v)}`, line);
  }
  return v;
}

/** Validates one parsed JSON value as a record; unknown fields are dropped. */
export function parseTraceRecord(value: unknown, line?: number): TraceRecord {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TraceFormatError('record is not a JSON object', line);
  const o = value as Record<string, unknown>;
  const t = o.t;
  if (typeof t !== 'number' || !Number.isFinite(t)) throw new TraceFormatError(`"t" must be a finite number, got ${JSON.stringify(t)}`, line);
  if ('event' in o) {
    if (o.event !== 'session' && o.event !== 'closed') throw new TraceFormatError(`unknown event ${JSON.stringify(o.event)}`, line);
    return { t, event: o.event, n: u32(o, 'n', line) };
  }
  if (o.dir !== 'f2b' && o.dir !== 'b2f') throw new TraceFormatError(`"dir" must be "f2b" or "b2f", got ${JSON.stringify(o.dir)}`, line);
  const payload = o.payload;
  if (typeof payload !== 'string' || !/^(?:[0-9a-fA-F]{2})*$/.test(payload)) throw new TraceFormatError('"payload" must be a string of hex byte pairs', line);
  const size = u32(o, 'size', line);
  if (payload.length / 2 !== size) throw new TraceFormatError(`"size" is ${size} but the payload holds ${payload.length / 2} bytes`, line);
  return {
    t,
    dir: o.dir,
    request: u32(o, 'request', line),
    flags: u32(o, 'flags', line),
    size,
    nfds: u32(o, 'nfds', line),
    payload: payload.toLowerCase(),
    ...(o.partial === true ? { partial: true as const, ...(typeof o.decoded === 'string' ? { decoded: o.decoded } : {}) } : {}),
  };
}

export function parseTraceLine(text: string, line?: number): TraceRecord {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new TraceFormatError(`not JSON: ${(e as Error).message}`, line);
  }
  return parseTraceRecord(v, line);
}

/** All records of a JSONL text; blank lines are skipped. */
export function parseTrace(text: string): TraceRecord[] {
  const out: TraceRecord[] = [];
  text.split(/\r?\n/).forEach((l, i) => {
    if (l.trim() !== '') out.push(parseTraceLine(l, i + 1));
  });
  return out;
}

export function readTraceFile(path: string): TraceRecord[] {
  return parseTrace(readFileSync(path, 'utf8'));
}

/**
 * One JSON line (no newline) with the format's fields in order, then `extra` fields, which
 * may not reuse a format field's name.
 */
export function formatTraceRecord(r: TraceRecord, extra: Readonly<Record<string, unknown>> = {}): string {
  const base: Record<string, unknown> = isMessageRecord(r)
    ? { t: r.t, dir: r.dir, request: r.request, flags: r.flags, size: r.size, nfds: r.nfds, payload: r.payload.toLowerCase() }
    : { t: r.t, event: r.event, n: r.n };
  for (const k of Object.keys(extra)) {
    if (k in base) throw new TraceFormatError(`extra field "${k}" would overwrite a format field`);
  }
  return JSON.stringify({ ...base, ...extra });
}

/** JSONL text, one record a line, ending with a newline. */
export function serializeTrace(records: Iterable<TraceRecord>): string {
  let s = '';
  for (const r of records) s += formatTraceRecord(r) + '\n';
  return s;
}

function hexToBytes(h: string): Uint8Array {
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return b;
}
function bytesToHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

export function recordHeader(r: TraceMessageRecord): MessageHeader {
  return { request: r.request, flags: r.flags, size: r.size };
}
export function recordPayload(r: TraceMessageRecord): Uint8Array {
  return hexToBytes(r.payload);
}

/** The 12 + size bytes the message was on the wire (its fds are not in a trace, only their count). */
export function traceMessageToBytes(r: TraceMessageRecord): Uint8Array {
  const body = recordPayload(r);
  const out = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader({ request: r.request, flags: r.flags, size: body.length }, out);
  out.set(body, HEADER_SIZE);
  return out;
}

/** A message record from wire bytes (exactly one message: 12-byte header + its payload). */
export function traceMessageFromBytes(t: number, dir: Direction, bytes: Uint8Array, nfds: number): TraceMessageRecord {
  if (bytes.length < HEADER_SIZE) throw new TraceFormatError(`${bytes.length} bytes cannot hold a header`);
  const h = decodeHeader(bytes);
  if (bytes.length !== HEADER_SIZE + h.size) throw new TraceFormatError(`header says ${h.size} payload bytes, ${bytes.length - HEADER_SIZE} given`);
  return { t, dir, request: h.request, flags: h.flags, size: h.size, nfds, payload: bytesToHex(bytes.subarray(HEADER_SIZE)) };
}

/** Which side sent the message. */
export function senderOf(dir: Direction): 'frontend' | 'backend' {
  return dir === 'f2b' ? 'frontend' : 'backend';
}

export function requestSpaceOfRecord(r: TraceMessageRecord): RequestSpace {
  return requestSpaceOf(senderOf(r.dir), r.flags);
}

/** Interprets a message record with the codec (its fds counted as `nfds`). */
export function checkTraceMessage(r: TraceMessageRecord, opts: Omit<CheckOptions, 'space'> = {}): MessageCheck {
  return checkMessage(recordHeader(r), recordPayload(r), r.nfds, { ...opts, space: requestSpaceOfRecord(r) });
}

/** `name` and `decoded` fields a writer may add to make a trace readable by eye. */
export function annotateTraceMessage(r: TraceMessageRecord): { name: string; decoded: string } {
  const space = requestSpaceOfRecord(r);
  const check = checkTraceMessage(r);
  const text = formatMessage({ header: recordHeader(r), payload: recordPayload(r), nfds: r.nfds, ...check }, space);
  return { name: requestName(r.request, space), decoded: text };
}
