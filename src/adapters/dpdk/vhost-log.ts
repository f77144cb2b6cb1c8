/**
 * Parse the DPDK 22.11 vhost library's `VHOST_CONFIG:` log lines (from testpmd's output)
 * into events and per-connection sessions.
 *
 * Lines look like `VHOST_CONFIG: (<socket path>) <text>`; cleaned logs may drop the
 * `(<path>) ` part. Multi-line entries (device status bits, memory-region details) continue
 * on tab-indented lines with the same prefix and are folded into the entry they belong to.
 * Both the default (INFO) and the debug level (`--log-level=lib.vhost.config:debug`) are
 * understood; the debug-only lines become `processed` and `ring-mapped` events. A line may
 * start with one or more `testpmd> ` prompts, because the prompt is written straight to the
 * terminal and the next log line lands after it.
 */
import type { ConfigKinds, EventOf, ParsedOnlyKinds } from '../../endpoint/backend/log-kinds.ts';
import { requestNumber, shortRequestName } from './requests.ts';

/** A line of output, optionally time-stamped (milliseconds, any epoch). */
export interface LogLine {
  text: string;
  t?: number;
}

interface Base {
  /** Index of the line in the input. */
  line: number;
  t?: number;
  /** Socket path from the `(<path>)` prefix, when printed. */
  path?: string;
  /** The text after the prefix. */
  text: string;
}

/** Every kind the parser reads and its fields, shared with the model's `VhostLogEvent`: log-kinds.ts. */
export type VhostEvent = Base & EventOf<ConfigKinds<'parsed'> & ParsedOnlyKinds>;

export type VhostEventKind = VhostEvent['kind'];

/** How a session ended. `open`: still connected when the input stopped. */
export type SessionEnd = 'peer-closed' | 'closed-locally' | 'superseded' | 'process-end' | 'open';

/** One connection (one vhost device) from its start to its close. */
export interface VhostSession {
  /** Position among all sessions in the log. */
  index: number;
  path?: string;
  /** The device handle from `new device, handle is N`. */
  vid?: number;
  /** The accepted fd (server mode) from `new vhost user connection is N`. */
  connFd?: number;
  startedBy: 'connected' | 'new-connection' | 'new-device';
  end: SessionEnd;
  events: VhostEvent[];
  /** The `read message` events in order. */
  messages: Array<Extract<VhostEvent, { kind: 'message' }>>;
  /** Last negotiated values seen in this session. */
  features?: bigint;
  protocolFeatures?: bigint;
  /** Reached `virtio is now ready for processing.` */
  ready: boolean;
}

export interface VhostLog {
  /** Every VHOST_CONFIG event in order. */
  events: VhostEvent[];
  sessions: VhostSession[];
  /** Events outside any session: socket creation, connect failures, retries. */
  outside: VhostEvent[];
}

const PREFIX = /^(?:testpmd> )*(VHOST_CONFIG|VHOST_DATA): (?:\(([^)]*)\) )?(.*)$/;
const HEX = (s: string): bigint => BigInt(s);

type Body = VhostEvent extends infer E ? (E extends VhostEvent ? Omit<E, keyof Base> : never) : never;

function classify(text: string): Body {
  let m: RegExpExecArray | null;
  if ((m = /^read message (\S+)/.exec(text))) {
    const name = shortRequestName(m[1]!);
    return { kind: 'message', name, request: requestNumber(name) };
  }
  if ((m = /^processing (\S+) (succeeded( and needs reply)?|failed)\.?$/.exec(text))) {
    const name = shortRequestName(m[1]!);
    return { kind: 'processed', name, request: requestNumber(name), ok: m[2] !== 'failed', needsReply: m[3] !== undefined };
  }
  if ((m = /^vring base idx:(\d+) last_used_idx:(\d+) last_avail_idx:(\d+)/.exec(text)))
    return { kind: 'set-vring-base', index: Number(m[1]), lastUsedIdx: Number(m[2]), lastAvailIdx: Number(m[3]) };
  if ((m = /^vring base idx:(\d+) file:(-?\d+)/.exec(text))) return { kind: 'get-vring-base', index: Number(m[1]), num: Number(m[2]) };
  if ((m = /^vring kick idx:(\d+) file:(-?\d+)/.exec(text))) return { kind: 'vring-kick', index: Number(m[1]), fd: Number(m[2]) };
  if ((m = /^vring call idx:(\d+) file:(-?\d+)/.exec(text))) return { kind: 'vring-call', index: Number(m[1]), fd: Number(m[2]) };
  if ((m = /^set queue enable: (\d+) to qp idx: (\d+)/.exec(text))) return { kind: 'enable', enable: m[1] !== '0', index: Number(m[2]) };
  if ((m = /^negotiated Virtio features: (0x[0-9a-fA-F]+)/.exec(text))) return { kind: 'features', value: HEX(m[1]!) };
  if ((m = /^negotiated Vhost-user protocol features: (0x[0-9a-fA-F]+)/.exec(text))) return { kind: 'protocol-features', value: HEX(m[1]!) };
  if ((m = /^mergeable RX buffers (on|off), virtio 1 (on|off)/.exec(text))) return { kind: 'mergeable', mrgRxbuf: m[1] === 'on', virtio1: m[2] === 'on' };
  if ((m = /^new device status\((0x[0-9a-fA-F]+)\)/.exec(text))) return { kind: 'status', value: Number(m[1]) };
  if ((m = /^guest memory region size: (0x[0-9a-fA-F]+)/.exec(text))) return { kind: 'memory-region', size: HEX(m[1]!) };
  if (/^memory regions not changed/.test(text)) return { kind: 'memory-unchanged' };
  if ((m = /^mapped address (desc|avail|used): (0x[0-9a-fA-F]+)/.exec(text)))
    return { kind: 'ring-mapped', ring: m[1] as 'desc' | 'avail' | 'used', addr: HEX(m[2]!) };
  if ((m = /^last_used_idx \((\d+)\) and vq->used->idx \((\d+)\) mismatches/.exec(text)))
    return { kind: 'used-idx-mismatch', lastUsedIdx: Number(m[1]), usedIdx: Number(m[2]) };
  if (/^virtio is now ready for processing/.test(text)) return { kind: 'ready' };
  if (/^vhost peer closed/.test(text)) return { kind: 'peer-closed' };
  if ((m = /^free connfd (-?\d+)/.exec(text))) return { kind: 'closed-locally', fd: Number(m[1]) };
  if ((m = /^new device, handle is (\d+)/.exec(text))) return { kind: 'new-device', vid: Number(m[1]) };
  if ((m = /^new vhost user connection is (-?\d+)/.exec(text))) return { kind: 'new-connection', fd: Number(m[1]) };
  if ((m = /^vhost-user (client|server): socket created, fd: (-?\d+)/.exec(text)))
    return { kind: 'socket-created', role: m[1] as 'client' | 'server', fd: Number(m[2]) };
  if (/^binding succeeded/.test(text)) return { kind: 'bind-ok' };
  if ((m = /^failed to bind: (.*?)(?:; remove it and try again)?$/.exec(text))) return { kind: 'bind-failed', error: m[1]! };
  if ((m = /^failed to connect: (.*)$/.exec(text))) return { kind: 'connect-failed', error: m[1]! };
  if (/^reconnecting\.\.\./.test(text)) return { kind: 'reconnecting' };
  if (/^connected$/.test(text)) return { kind: 'connected' };
  if ((m = /^reconnection for fd (-?\d+) failed/.exec(text))) return { kind: 'reconnect-failed', fd: Number(m[1]) };
  if ((m = /^external request (\d+)/.exec(text))) return { kind: 'external-request', request: Number(m[1]) };
  // Everything the library reports as a failure: read/size/fd errors, unhandled requests,
  // invalid payloads, failed mappings and allocations.
  if (/fail|invalid|not handled|unexpected|too many|truncated|expect \d+ FDs|changed while device is running/i.test(text))
    return { kind: 'error', message: text };
  return { kind: 'other' };
}

/** Details of a multi-line entry, on tab-indented continuation lines. */
function fold(prev: VhostEvent | undefined, text: string): void {
  if (!prev || prev.kind !== 'memory-region') return;
  const m = /^\s*(guest physical addr|guest virtual\s+addr|mmap size|mmap align|mmap off)\s*:\s*(0x[0-9a-fA-F]+)/.exec(text);
  if (!m) return;
  const v = HEX(m[2]!);
  const key = m[1]!.replace(/\s+/g, ' ');
  if (key === 'guest physical addr') prev.guestPhysAddr = v;
  else if (key === 'guest virtual addr') prev.guestVirtAddr = v;
  else if (key === 'mmap size') prev.mmapSize = v;
  else if (key === 'mmap align') prev.mmapAlign = v;
  else if (key === 'mmap off') prev.mmapOffset = v;
}

function toLines(input: string | readonly (string | LogLine)[]): LogLine[] {
  if (typeof input === 'string') return input.split(/\r?\n/).map((text) => ({ text }));
  return input.map((l) => (typeof l === 'string' ? { text: l } : l));
}

/** Parse VHOST_CONFIG events only, in order. */
export function parseVhostEvents(input: string | readonly (string | LogLine)[]): VhostEvent[] {
  const out: VhostEvent[] = [];
  const lastByPath = new Map<string, VhostEvent>();
  toLines(input).forEach((l, line) => {
    const m = PREFIX.exec(l.text);
    if (!m || m[1] !== 'VHOST_CONFIG') return;
    const path = m[2];
    const text = m[3]!;
    const key = path ?? '';
    // Continuations are tab-indented; "some packets maybe resent…" completes the mismatch warning.
    if (text.startsWith('\t') || /^some packets maybe resent/.test(text)) {
      fold(lastByPath.get(key), text);
      return;
    }
    const ev = { line, text, ...(l.t !== undefined ? { t: l.t } : {}), ...(path !== undefined ? { path } : {}), ...classify(text) } as VhostEvent;
    out.push(ev);
    lastByPath.set(key, ev);
  });
  return out;
}

export interface ParseVhostLogOptions {
  /** The process has exited: sessions still open end as `process-end` instead of `open`. */
  ended?: boolean;
}

/**
 * Parse a testpmd output into sessions. A session starts at `connected` (client after a
 * retry), `new vhost user connection is N` (server accept) or, when neither came first,
 * `new device, handle is N` (client connected at once); it ends at `vhost peer closed`, at
 * `free connfd N` (closed by this side), when a new session on the same socket starts, or
 * at the end of the input. Sessions are kept per socket path, so a testpmd with several
 * vhost ports yields interleaved sessions that do not disturb each other.
 */
export function parseVhostLog(input: string | readonly (string | LogLine)[], opts: ParseVhostLogOptions = {}): VhostLog {
  const events = parseVhostEvents(input);
  const sessions: VhostSession[] = [];
  const outside: VhostEvent[] = [];
  const open = new Map<string, VhostSession>();

  const start = (ev: VhostEvent, startedBy: VhostSession['startedBy']): VhostSession => {
    const key = ev.path ?? '';
    const prev = open.get(key);
    if (prev) prev.end = 'superseded';
    const s: VhostSession = {
      index: sessions.length,
      ...(ev.path !== undefined ? { path: ev.path } : {}),
      startedBy,
      end: 'open',
      events: [],
      messages: [],
      ready: false,
    };
    sessions.push(s);
    open.set(key, s);
    return s;
  };

  for (const ev of events) {
    const key = ev.path ?? '';
    let s = open.get(key);
    switch (ev.kind) {
      case 'connected':
        s = start(ev, 'connected');
        break;
      case 'new-connection':
        s = start(ev, 'new-connection');
        s.connFd = ev.fd;
        break;
      case 'new-device':
        // Joins the session its connection opened; otherwise the device is the start.
        if (!s || s.vid !== undefined || s.messages.length > 0) s = start(ev, 'new-device');
        s.vid = ev.vid;
        break;
      default:
        break;
    }
    if (!s) {
      outside.push(ev);
      continue;
    }
    s.events.push(ev);
    switch (ev.kind) {
      case 'message':
        s.messages.push(ev);
        break;
      case 'features':
        s.features = ev.value;
        break;
      case 'protocol-features':
        s.protocolFeatures = ev.value;
        break;
      case 'ready':
        s.ready = true;
        break;
      case 'peer-closed':
        s.end = 'peer-closed';
        open.delete(key);
        break;
      case 'closed-locally':
        s.end = 'closed-locally';
        open.delete(key);
        break;
      default:
        break;
    }
  }
  if (opts.ended) for (const s of open.values()) s.end = 'process-end';
  return { events, sessions, outside };
}

/** The short request names a session read, in order (`['SET_OWNER', 'GET_FEATURES', …]`). */
export function messageNames(s: VhostSession): string[] {
  return s.messages.map((m) => m.name);
}

/** The events of one kind in a session, typed. */
export function eventsOf<K extends VhostEventKind>(s: { events: readonly VhostEvent[] }, kind: K): Array<Extract<VhostEvent, { kind: K }>> {
  return s.events.filter((e): e is Extract<VhostEvent, { kind: K }> => e.kind === kind);
}
