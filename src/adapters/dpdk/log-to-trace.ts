/**
 * A message-level trace (DESIGN.md "Formats: Trace") from a DPDK 22.11 `VHOST_CONFIG` log,
 * for runs where nobody sat on the socket: the back-end's log names every request it read,
 * and at INFO or debug level shows some of the values.
 *
 * What each record holds:
 * - one `session` event per vhost session of the log (`parseVhostLog`), numbered from 1, and a
 *   `closed` event where the session ended with `vhost peer closed` (extra `by: "frontend"`)
 *   or `free connfd N` (`by: "backend"`, the back-end's own quit); a session cut short by the
 *   end of the log or by the next session on the same socket gets no `closed`;
 * - one `f2b` record per `read message VHOST_USER_X`, `request` from the name (0 when the
 *   name is not a known request). The back-end's replies are not in the log, so there are no
 *   `b2f` records; a reply value the log shows (GET_VRING_BASE) is in `decoded`/`known`.
 * - `flags` is always 1 (protocol version 1, which DPDK requires of every message it reads).
 *   Whether NEED_REPLY was set is never logged.
 * - `size`/`payload`/`nfds` are the real ones where the log determines the bytes: requests
 *   without payload (GET_FEATURES, SET_OWNER, SET_SLAVE_REQ_FD …), SET_FEATURES,
 *   SET_PROTOCOL_FEATURES, SET_STATUS, SET_VRING_ENABLE, SET_VRING_KICK/CALL, and SET_VRING_BASE
 *   on a split ring. Elsewhere (SET_MEM_TABLE, SET_VRING_ADDR, SET_VRING_NUM, GET_VRING_BASE,
 *   SET_VRING_BASE on a packed ring whose wrap bits are not printed …) the record carries
 *   `"partial": true` and `size` 0 / `payload` "" are placeholders, not the message's length;
 *   `nfds` is the real count where the log implies it (one per memory region), else 0.
 *   These placeholders keep every line valid for trace readers, which ignore `partial`;
 *   a reader that checks payloads against the codec will report them as size mismatches.
 * - `t`: seconds since the first time-stamped VHOST_CONFIG line when the lines carry times (`LogLine.t`,
 *   milliseconds); plain log text has none, and then `t` is 0 for every record, with the
 *   order given by the file and by `line` (1-based line in the log).
 * - extra fields on every record: `source: "log"`, `line`; on messages also `name`,
 *   `decoded` (the known values as text), `known` (the same as JSON; 64-bit values as hex
 *   strings), `result` ("ok" / "failed" where debug lines report it).
 */
import { lookupRequest } from '../../protocol/index.ts';
import { formatTraceRecord, type TraceRecord } from '../../sim/trace.ts';
import { parseVhostLog, type LogLine, type VhostEvent, type VhostSession } from './vhost-log.ts';

export interface LogTraceLine {
  record: TraceRecord;
  extra: Record<string, unknown>;
}

const RING_PACKED = 1n << 34n;
const VRING_NOFD = 0x100;

const hex64 = (v: bigint): string => `0x${v.toString(16)}`;

function u64le(v: bigint): string {
  let s = '';
  for (let i = 0n; i < 8n; i++) s += Number((v >> (8n * i)) & 0xffn).toString(16).padStart(2, '0');
  return s;
}
function u32le(v: number): string {
  return u64le(BigInt(v >>> 0)).slice(0, 8);
}
/** `struct vhost_vring_state`: u32 index, u32 num. */
const vringState = (index: number, num: number): string => u32le(index) + u32le(num);

interface Built {
  payload?: string;
  nfds?: number;
  known: Record<string, unknown>;
}

/** What the detail lines after one `read message` say about it. */
function build(name: string, request: number | undefined, details: readonly VhostEvent[], sessionFeatures: bigint | undefined): Built {
  const spec = request === undefined ? undefined : lookupRequest(request);
  const known: Record<string, unknown> = {};
  const first = <K extends VhostEvent['kind']>(kind: K): Extract<VhostEvent, { kind: K }> | undefined =>
    details.find((e): e is Extract<VhostEvent, { kind: K }> => e.kind === kind);

  // Requests defined without payload: the bytes are known from the request alone.
  if (spec && spec.payload === 'none') {
    const nfds = spec.fds.type === 'exact' ? spec.fds.count : undefined;
    return nfds === undefined ? { known } : { payload: '', nfds, known };
  }
  switch (name) {
    case 'SET_FEATURES': {
      const f = first('features');
      if (!f) return { known };
      known.features = hex64(f.value);
      return { payload: u64le(f.value), nfds: 0, known };
    }
    case 'SET_PROTOCOL_FEATURES': {
      const f = first('protocol-features');
      if (!f) return { known };
      known.protocolFeatures = hex64(f.value);
      return { payload: u64le(f.value), nfds: 0, known };
    }
    case 'SET_STATUS': {
      const s = first('status');
      if (!s) return { known };
      known.status = s.value;
      return { payload: u64le(BigInt(s.value)), nfds: 0, known };
    }
    case 'SET_VRING_ENABLE': {
      const e = first('enable');
      if (!e) return { known };
      Object.assign(known, { index: e.index, enable: e.enable ? 1 : 0 });
      return { payload: vringState(e.index, e.enable ? 1 : 0), nfds: 0, known };
    }
    case 'SET_VRING_KICK':
    case 'SET_VRING_CALL': {
      const e = name === 'SET_VRING_KICK' ? first('vring-kick') : first('vring-call');
      if (!e) return { known };
      // DPDK prints the fd it received, or -1 when the NOFD bit was set (no fd sent).
      const nofd = e.fd < 0;
      Object.assign(known, { index: e.index, nofd });
      return { payload: u64le(BigInt(e.index | (nofd ? VRING_NOFD : 0))), nfds: nofd ? 0 : 1, known };
    }
    case 'SET_VRING_BASE': {
      const e = first('set-vring-base');
      if (!e) return { known };
      Object.assign(known, { index: e.index, lastAvailIdx: e.lastAvailIdx, lastUsedIdx: e.lastUsedIdx });
      // Split: both indices are `num`. Packed: DPDK prints them without the wrap bits, so `num` is unknown.
      const split = sessionFeatures !== undefined && (sessionFeatures & RING_PACKED) === 0n;
      return split ? { payload: vringState(e.index, e.lastAvailIdx), nfds: 0, known } : { known };
    }
    case 'GET_VRING_BASE': {
      const e = first('get-vring-base');
      if (e) Object.assign(known, { index: e.index, replyNum: e.num });
      return { known };
    }
    case 'SET_MEM_TABLE': {
      const regions = details.filter((d): d is Extract<VhostEvent, { kind: 'memory-region' }> => d.kind === 'memory-region');
      if (first('memory-unchanged')) known.unchanged = true;
      if (regions.length === 0) return { known };
      known.regions = regions.map((r) => ({
        size: hex64(r.size),
        ...(r.guestPhysAddr !== undefined ? { gpa: hex64(r.guestPhysAddr) } : {}),
        ...(r.guestVirtAddr !== undefined ? { uva: hex64(r.guestVirtAddr) } : {}),
        ...(r.mmapOffset !== undefined ? { mmapOffset: hex64(r.mmapOffset) } : {}),
      }));
      return { nfds: regions.length, known };
    }
    default:
      return { known };
  }
}

function describeKnown(known: Record<string, unknown>): string {
  return Object.entries(known)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ');
}

export interface LogToTraceOptions {
  /** Passed to `parseVhostLog`: the process has exited. */
  ended?: boolean;
}

/** The trace records of a log, each with its extra fields. */
export function logToTrace(input: string | readonly (string | LogLine)[], opts: LogToTraceOptions = {}): LogTraceLine[] {
  const log = parseVhostLog(input, { ended: opts.ended ?? true });
  const t0 = log.events.find((e) => e.t !== undefined)?.t;
  const tOf = (e: VhostEvent): number => (e.t !== undefined && t0 !== undefined ? Math.round((e.t - t0) * 1000) / 1e6 : 0);
  const out: LogTraceLine[] = [];
  log.sessions.forEach((s, i) => sessionRecords(s, i + 1, tOf, out));
  return out;
}

function sessionRecords(s: VhostSession, n: number, tOf: (e: VhostEvent) => number, out: LogTraceLine[]): void {
  const start = s.events[0];
  if (!start) return;
  out.push({ record: { t: tOf(start), event: 'session', n }, extra: { source: 'log', line: start.line + 1 } });
  let features: bigint | undefined;
  for (let i = 0; i < s.events.length; i++) {
    const ev = s.events[i]!;
    if (ev.kind === 'features') features = ev.value;
    if (ev.kind === 'peer-closed' || ev.kind === 'closed-locally') {
      out.push({ record: { t: tOf(ev), event: 'closed', n }, extra: { source: 'log', line: ev.line + 1, by: ev.kind === 'peer-closed' ? 'frontend' : 'backend' } });
      continue;
    }
    if (ev.kind !== 'message') continue;
    // Detail lines belong to the message until the next one is read.
    let j = i + 1;
    while (j < s.events.length && s.events[j]!.kind !== 'message') j++;
    const details = s.events.slice(i + 1, j);
    const b = build(ev.name, ev.request, details, features);
    const processed = details.find((d): d is Extract<VhostEvent, { kind: 'processed' }> => d.kind === 'processed' && d.name === ev.name);
    const request = ev.request ?? 0;
    const exact = b.payload !== undefined;
    out.push({
      record: { t: tOf(ev), dir: 'f2b', request, flags: 1, size: exact ? b.payload!.length / 2 : 0, nfds: b.nfds ?? 0, payload: b.payload ?? '' },
      extra: {
        source: 'log',
        line: ev.line + 1,
        name: ev.name,
        ...(exact ? {} : { partial: true }),
        ...(Object.keys(b.known).length > 0 ? { decoded: describeKnown(b.known), known: b.known } : {}),
        ...(processed ? { result: processed.ok ? 'ok' : 'failed' } : {}),
      },
    });
  }
}

/** JSONL text of `logToTrace`. */
export function logToTraceText(input: string | readonly (string | LogLine)[], opts: LogToTraceOptions = {}): string {
  return logToTrace(input, opts)
    .map((l) => formatTraceRecord(l.record, l.extra) + '\n')
    .join('');
}
