/**
 * Replays a real capture against the model front-end: a stand-in back-end connects for each
 * captured session, answers with the captured b2f messages, closes when the capture's
 * back-end went away, and every f2b message the model sends is compared with the captured
 * one at the same place.
 *
 * The model's own stimuli are the capture's events: a session is a back-end connecting, a
 * `closed` the back-end leaving. A virtio-user front-end left idle only talks again when
 * its application closes the port, so captured f2b messages after an idle point are taken
 * as testpmd's `quit` and the model is told to quit there; the step says so.
 *
 * Verdicts (see ReplayVerdict): fields that depend on the real process's state (guest
 * memory layout, ring addresses, uninitialised bytes) are `state-dependent`, with the reason;
 * everything the profile determines must match byte for byte.
 */
import { Scheduler } from '../sim/scheduler.ts';
import {
  isEventRecord,
  isMessageRecord,
  checkTraceMessage,
  traceMessageFromBytes,
  traceMessageToBytes,
  type TraceMessageRecord,
  type TraceRecord,
} from '../sim/trace.ts';
import { FrontendRequest as FR, messageBytes, requestName } from '../protocol/index.ts';
import { SocketNamespace, TransportError, type AnyFd, type SocketFd } from '../transport/index.ts';
import { MessageChannel } from './message-channel.ts';
import type { ReplayReport, ReplayStep } from './replay-report.ts';
import { VirtioUserFrontend, type VirtioUserFrontendOptions } from './frontend/virtio-user.ts';

export interface ReplayFrontendOptions {
  /** Only `virtio-user-22.11` is replayable (the captures are of it). */
  readonly profile?: 'virtio-user-22.11';
  /** Front-end options (queues, packed_vq, memory …); defaults: server mode, 4 MiB of memory. */
  readonly frontend?: Partial<Omit<VirtioUserFrontendOptions, 'ns' | 'path'>>;
  readonly seed?: number;
}

const PATH = 'run/vu.sock';

/** Compares one f2b message of the model with the captured one. */
export function compareFrontendMessage(
  expected: TraceMessageRecord,
  actual: TraceMessageRecord,
  ctx: { previousRequest: number | undefined },
): { verdict: ReplayStep['verdict']; detail: string } {
  const name = requestName(expected.request);
  if (actual.request !== expected.request) {
    return { verdict: 'differs', detail: `request ${requestName(actual.request)}, captured ${name}` };
  }
  if (actual.flags !== expected.flags) {
    return { verdict: 'differs', detail: `${name}: flags 0x${actual.flags.toString(16)}, captured 0x${expected.flags.toString(16)}` };
  }
  if (actual.nfds !== expected.nfds) return { verdict: 'differs', detail: `${name}: ${actual.nfds} fds, captured ${expected.nfds}` };
  if (actual.payload === expected.payload) return { verdict: 'match', detail: name };
  const e = checkTraceMessage(expected).decoded;
  const a = checkTraceMessage(actual).decoded;
  const hexDiff = `payload ${actual.payload || '(empty)'}, captured ${expected.payload || '(empty)'}`;
  if (e === undefined || a === undefined || e.kind !== a.kind) return { verdict: 'differs', detail: `${name}: ${hexDiff}` };
  if (e.kind === 'memoryTable' && a.kind === 'memoryTable') {
    if (e.regions.length !== a.regions.length) return { verdict: 'differs', detail: `${name}: ${a.regions.length} regions, captured ${e.regions.length}` };
    return {
      verdict: 'state-dependent',
      detail: `${name}: region addresses, sizes and offsets are the process's own memory layout (GPA == VA in virtio-user); ${e.regions.length} region(s) as captured`,
    };
  }
  if (e.kind === 'vringAddr' && a.kind === 'vringAddr') {
    if (e.index !== a.index) return { verdict: 'differs', detail: `${name}: vring ${a.index}, captured ${e.index}` };
    if (e.flags !== a.flags) return { verdict: 'differs', detail: `${name}: flags 0x${a.flags.toString(16)}, captured 0x${e.flags.toString(16)}` };
    if (e.log !== a.log) return { verdict: 'differs', detail: `${name}: log 0x${a.log.toString(16)}, captured 0x${e.log.toString(16)}` };
    return { verdict: 'state-dependent', detail: `${name} vring ${e.index}: desc/used/avail are where the PMD allocated the ring` };
  }
  if (e.kind === 'vringState' && a.kind === 'vringState' && expected.request === FR.GET_VRING_BASE) {
    if (e.index !== a.index) return { verdict: 'differs', detail: `${name}: vring ${a.index}, captured ${e.index}` };
    if (ctx.previousRequest !== FR.GET_VRING_BASE) {
      return {
        verdict: 'state-dependent',
        detail: `${name} vring ${e.index}: num 0x${a.num.toString(16)}, captured 0x${e.num.toString(16)}: the first request of a stop carries uninitialised stack memory (virtio_user_stop_device)`,
      };
    }
    return { verdict: 'differs', detail: `${name} vring ${e.index}: num ${a.num}, captured ${e.num} (later rings carry the previous reply)` };
  }
  return { verdict: 'differs', detail: `${name}: ${hexDiff}` };
}

interface Peer {
  fd: SocketFd | undefined;
  mc: MessageChannel | undefined;
  modelClosed: boolean;
  session: number;
}

export function replayAsFrontend(records: readonly TraceRecord[], opts: ReplayFrontendOptions = {}): ReplayReport {
  const profile = opts.profile ?? 'virtio-user-22.11';
  const sched = new Scheduler({ seed: opts.seed ?? 1, tieBreak: 'fifo' });
  const ns = new SocketNamespace({ scheduler: sched });
  const fe = new VirtioUserFrontend({ ramSize: 4 * 1024 * 1024, ...opts.frontend, ns, path: PATH });
  const steps: ReplayStep[] = [];
  let pos = 0;
  let previousRequest: number | undefined;
  let stimulus: string | undefined;
  let peer: Peer | undefined;

  const flushReplies = (p: Peer): void => {
    while (pos < records.length) {
      const r = records[pos];
      if (!isMessageRecord(r) || r.dir !== 'b2f') return;
      pos++;
      const bytes = traceMessageToBytes(r);
      sched.at(Math.max(sched.now, r.t), () => {
        if (p.fd !== undefined && !p.fd.closed) p.fd.send(bytes);
      }, 'replay b2f');
    }
  };

  const onModelMessage = (p: Peer, bytes: Uint8Array, nfds: number): void => {
    const actual = traceMessageFromBytes(sched.now, 'f2b', bytes, nfds);
    const exp = records[pos];
    if (exp !== undefined && isMessageRecord(exp) && exp.dir === 'f2b') {
      const c = compareFrontendMessage(exp, actual, { previousRequest });
      const detail = stimulus !== undefined ? `${c.detail} [${stimulus}]` : c.detail;
      stimulus = undefined;
      steps.push({ index: pos, session: p.session, expected: exp, actual, verdict: c.verdict, detail });
      previousRequest = actual.request;
      pos++;
      flushReplies(p);
      return;
    }
    steps.push({ index: pos, session: p.session, actual, verdict: 'extra', detail: `${requestName(actual.request)} not in the capture here` });
    previousRequest = actual.request;
  };

  const connect = (session: number): void => {
    const p: Peer = { fd: undefined, mc: undefined, modelClosed: false, session };
    peer = p;
    ns.connect(PATH, (r) => {
      if (r instanceof TransportError) {
        p.modelClosed = true;
        return;
      }
      p.fd = r;
      const mc = new MessageChannel(r, { role: 'backend', space: 'frontend', maxPayload: 1 << 20 });
      p.mc = mc;
      mc.on({
        message: (m) => {
          for (const fd of m.fds as AnyFd[]) fd.close();
          onModelMessage(p, messageBytes(m), m.fds.length);
        },
        fatal: () => {
          p.modelClosed = true;
        },
        closed: () => {
          p.modelClosed = true;
        },
      });
      flushReplies(p);
    });
  };

  const missing = (r: TraceMessageRecord, session: number, why: string): void => {
    steps.push({ index: pos, session, expected: r, verdict: 'missing', detail: `${requestName(r.request)}: ${why}` });
  };

  fe.start();
  let session = 0;
  let quitSent = false;
  while (pos < records.length) {
    sched.run();
    const r = records[pos];
    if (isEventRecord(r)) {
      sched.run({ until: Math.max(sched.now, r.t) });
      if (r.event === 'session') {
        session = r.n;
        pos++;
        quitSent = false;
        connect(session);
      } else {
        pos++;
        if (peer !== undefined && !peer.modelClosed) {
          // The captured back-end went away here.
          peer.mc?.close();
          peer.fd = undefined;
        }
        peer = undefined;
      }
      continue;
    }
    if (r.dir === 'b2f') {
      // Only reached when a session starts with a back-end message, or after a missing request.
      if (peer !== undefined) flushReplies(peer);
      else pos++;
      continue;
    }
    // An f2b message the idle model has not sent.
    if (!quitSent && peer !== undefined && !peer.modelClosed && fe.phase !== 'closed') {
      quitSent = true;
      sched.run({ until: Math.max(sched.now, r.t) });
      stimulus = 'sent after the application closed the port (testpmd quit), the only thing an idle virtio-user answers';
      fe.quit();
      continue;
    }
    missing(r, session, 'the model did not send it');
    pos++;
    // Its replies have nobody to answer.
    while (pos < records.length) {
      const n = records[pos];
      if (!isMessageRecord(n) || n.dir !== 'b2f') break;
      pos++;
    }
  }
  sched.run();
  fe.dispose();
  const diverged = steps.some((s) => s.verdict === 'differs' || s.verdict === 'missing' || s.verdict === 'extra');
  return { as: 'frontend', profile, steps, diverged };
}
