/**
 * Replay of a real capture against the model back-end: every front-end → back-end message of
 * the capture is fed, in order, to a fresh `VhostUserDevice` per session (with synthetic fds:
 * memfds sized from the memory table, eventfds for kick/call/err, a socketpair end for the
 * back-end channel), and each message the model sends is compared with the back-end message
 * captured at the same place.
 *
 * Verdicts (see replay-report.ts): `match` when request, flags, payload and fd count are equal;
 * `state-dependent` when only a value that depends on what the capture does not carry differs
 * — a GET_VRING_BASE of a ring that ran (its index moved with traffic in guest memory the
 * capture does not contain) or a postcopy memory table (back-end addresses); `differs`,
 * `missing` and `extra` otherwise.
 */
import { REPLY_FLAGS } from '../protocol/index.ts';
import { Scheduler } from '../sim/scheduler.ts';
import {
  isEventRecord,
  isMessageRecord,
  recordHeader,
  recordPayload,
  traceMessageFromBytes,
  type TraceMessageRecord,
  type TraceRecord,
} from '../sim/trace.ts';
import { SocketNamespace, MemFd, type AnyFd, type SocketFd } from '../transport/index.ts';
import { dpdk2211Profile, type DpdkBackendOptions, type DpdkBackendProfile } from './backend/profile.ts';
import type { VhostLogEvent } from './backend/log.ts';
import { VhostUserDevice, encodeBackendMessage } from './backend/vhost-device.ts';
import type { ReplayReport, ReplayStep } from './replay-report.ts';

export interface ReplayBackendOptions {
  /** A profile, or options for `dpdk2211Profile` (default: testpmd's net_vhost defaults). */
  profile?: DpdkBackendProfile | Partial<DpdkBackendOptions>;
  /** Largest synthetic memfd (default 4 GiB); bigger regions get this size and the model refuses to map them. */
  maxMemfdBytes?: number;
  /** Receives the model back-end's log events. */
  onEvent?: (e: VhostLogEvent, session: number) => void;
}

interface Pending {
  record: TraceMessageRecord;
  /** The vring a GET_VRING_BASE reply is about, and whether it ran in this session. */
  ranVring?: boolean;
}

export function replayAsBackend(records: readonly TraceRecord[], opts: ReplayBackendOptions = {}): ReplayReport {
  const p = opts.profile;
  const profile = p !== undefined && 'name' in p ? (p as DpdkBackendProfile) : dpdk2211Profile(p as Partial<DpdkBackendOptions> | undefined);
  const maxMemfd = opts.maxMemfdBytes ?? 4 * 1024 * 1024 * 1024;
  const sched = new Scheduler({ seed: 'replay-backend' });
  const ns = new SocketNamespace({ scheduler: sched, name: 'replay' });
  const steps: ReplayStep[] = [];

  const fdMaker = new CaptureFds(ns, maxMemfd);

  let session = 0;
  let device: VhostUserDevice | undefined;
  let closedByModel = false;
  let queue: Pending[] = [];
  let lastIndex = -1;
  const ran = new Set<number>();

  const open = () => {
    session++;
    device = new VhostUserDevice(profile, { path: 'replay', memfd: (name, size) => ns.memfd(name, size) }, 0);
    closedByModel = false;
    queue = [];
    ran.clear();
  };
  const flushExtra = () => {
    for (const q of queue) {
      steps.push({ index: lastIndex, session, actual: q.record, verdict: 'extra', detail: `the model sent ${describe(q.record)}, the capture has nothing here` });
    }
    queue = [];
  };
  const close = () => {
    flushExtra();
    device?.destroy();
    device = undefined;
  };
  const noteEvents = (events: readonly VhostLogEvent[]) => {
    for (const e of events) {
      if (e.kind === 'vring-state' && e.enable) ran.add(e.index);
      if (e.kind === 'device-created') for (let i = 0; i < 2 * profile.options.queues; i++) if (device?.vringState(i)?.ready) ran.add(i);
      opts.onEvent?.(e, session);
    }
  };

  records.forEach((rec, index) => {
    if (isEventRecord(rec)) {
      if (rec.event === 'session') {
        if (device !== undefined) close();
        open();
      } else if (rec.event === 'closed') {
        close();
      }
      lastIndex = index;
      return;
    }
    if (!isMessageRecord(rec)) return;
    if (device === undefined && !closedByModel) open();
    if (rec.dir === 'f2b') {
      lastIndex = index;
      if (device === undefined || closedByModel) return;
      const fds = fdMaker.fdsFor(rec);
      const res = device.handle({ header: recordHeader(rec), payload: recordPayload(rec), fds });
      noteEvents(res.events);
      for (const reply of res.replies) {
        const enc = encodeBackendMessage(reply, 'frontend', profile.maxFds);
        const actual = traceMessageFromBytes(rec.t, 'b2f', enc.bytes, enc.fds.length);
        const pend: Pending = { record: actual };
        if (actual.request === 11 && actual.size === 8) pend.ranVring = ran.has(new DataView(enc.bytes.buffer, enc.bytes.byteOffset + 12, 4).getUint32(0, true));
        if (actual.request === 31) {
          const fd = reply.fds?.[0];
          if (fd instanceof MemFd) fdMaker.inflightArea = fd;
        }
        queue.push(pend);
      }
      if (res.close) {
        closedByModel = true;
        device.destroy();
        device = undefined;
      }
      return;
    }
    // b2f: compare with the model's next message.
    const next = queue.shift();
    if (next === undefined) {
      steps.push({
        index,
        session,
        expected: rec,
        verdict: 'missing',
        detail: closedByModel ? `the model had closed the connection; the capture has ${describe(rec)}` : `the model sent nothing for ${describe(rec)}`,
      });
      lastIndex = index;
      return;
    }
    steps.push({ index, session, ...compare(rec, next) });
    lastIndex = index;
  });
  close();
  fdMaker.dispose();
  return {
    as: 'backend',
    profile: profile.name,
    steps,
    diverged: steps.some((s) => s.verdict === 'differs' || s.verdict === 'missing' || s.verdict === 'extra'),
  };
}

/**
 * Synthetic fds for captured front-end messages (a capture records only how many fds a message
 * carried): memfds sized from SET_MEM_TABLE's regions (mmap_offset + memory_size; the same
 * memfd again for the same region in a later session, as a front-end keeps its guest memory),
 * from SET_LOG_BASE / SET_INFLIGHT_FD's sizes, a socketpair end for SET_SLAVE_REQ_FD, and
 * eventfds for everything else.
 */
export class CaptureFds {
  private readonly memfds = new Map<string, MemFd>();
  private readonly kept: AnyFd[] = [];
  /** The area the model handed out in GET_INFLIGHT_FD, re-sent by SET_INFLIGHT_FD. */
  inflightArea: MemFd | undefined;

  constructor(
    private readonly ns: SocketNamespace,
    private readonly maxMemfd = 4 * 1024 * 1024 * 1024,
  ) {}

  fdsFor(r: TraceMessageRecord): AnyFd[] {
    const out: AnyFd[] = [];
    const payload = recordPayload(r);
    const dv = new DataView(payload.buffer, payload.byteOffset, payload.length);
    const safe = (v: bigint) => (v <= BigInt(this.maxMemfd) ? Number(v) : this.maxMemfd);
    for (let i = 0; i < r.nfds; i++) {
      let fd: AnyFd;
      if (r.request === 5 && payload.length >= 8 + 32 * (i + 1)) {
        const o = 8 + 32 * i;
        const size = dv.getBigUint64(o + 8, true);
        const uaddr = dv.getBigUint64(o + 16, true);
        const off = dv.getBigUint64(o + 24, true);
        const key = `${i}@${uaddr.toString(16)}+${size.toString(16)}`;
        let m = this.memfds.get(key);
        if (m === undefined) {
          m = this.ns.memfd(`guest ${key}`, safe(size + off));
          this.memfds.set(key, m);
        }
        fd = m.dup();
      } else if ((r.request === 6 || r.request === 32) && payload.length >= 16 && i === 0) {
        const total = dv.getBigUint64(0, true) + dv.getBigUint64(8, true);
        if (r.request === 32 && this.inflightArea !== undefined && !this.inflightArea.closed) fd = this.inflightArea.dup();
        else fd = this.ns.memfd(r.request === 6 ? 'log' : 'inflight', total <= BigInt(this.maxMemfd) ? Number(total) : 4096);
      } else if (r.request === 21 && i === 0) {
        const [front, back] = this.ns.socketpair();
        this.kept.push(front);
        fd = back as SocketFd;
      } else {
        fd = this.ns.eventfd(`fd ${i} of request ${r.request}`);
      }
      out.push(fd);
    }
    return out;
  }

  /** Closes the front-end's own handles. */
  dispose(): void {
    for (const fd of this.kept) if (!fd.closed) fd.close();
    for (const m of this.memfds.values()) if (!m.closed) m.close();
  }
}

function describe(r: TraceMessageRecord): string {
  return `request ${r.request} flags 0x${r.flags.toString(16)} size ${r.size} payload ${r.payload || '(none)'}${r.nfds ? ` nfds ${r.nfds}` : ''}`;
}

function compare(expected: TraceMessageRecord, p: Pending): Omit<ReplayStep, 'index' | 'session'> {
  const actual = p.record;
  const same =
    expected.request === actual.request &&
    expected.flags === actual.flags &&
    expected.size === actual.size &&
    expected.payload === actual.payload &&
    expected.nfds === actual.nfds;
  if (same) return { expected, actual, verdict: 'match', detail: '' };
  const diffs: string[] = [];
  if (expected.request !== actual.request) diffs.push(`request ${expected.request} ≠ ${actual.request}`);
  if (expected.flags !== actual.flags) diffs.push(`flags 0x${expected.flags.toString(16)} ≠ 0x${actual.flags.toString(16)}`);
  if (expected.size !== actual.size) diffs.push(`size ${expected.size} ≠ ${actual.size}`);
  if (expected.nfds !== actual.nfds) diffs.push(`nfds ${expected.nfds} ≠ ${actual.nfds}`);
  if (expected.payload !== actual.payload) diffs.push(`payload ${expected.payload} ≠ ${actual.payload}`);
  const shapeSame = expected.request === actual.request && expected.flags === actual.flags && expected.size === actual.size && expected.nfds === actual.nfds;
  if (shapeSame && expected.flags === REPLY_FLAGS) {
    if (expected.request === 11 && expected.size === 8 && expected.payload.slice(0, 8) === actual.payload.slice(0, 8) && p.ranVring) {
      const le = (h: string) => parseInt(h.match(/../g)!.reverse().join(''), 16);
      const vring = le(expected.payload.slice(0, 8));
      return {
        expected,
        actual,
        verdict: 'state-dependent',
        detail: `vring ${vring} base: capture ${le(expected.payload.slice(8))}, model ${le(actual.payload.slice(8))}; the ring ran, and its position follows traffic in guest memory the capture does not carry`,
      };
    }
    if (expected.request === 5 && expected.size > 8) {
      return { expected, actual, verdict: 'state-dependent', detail: 'postcopy memory table: back-end mapping addresses' };
    }
  }
  return { expected, actual, verdict: 'differs', detail: diffs.join('; ') };
}
