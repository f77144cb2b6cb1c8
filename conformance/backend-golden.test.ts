/**
 * The dpdk-22.11 back-end profile against the real capture of DPDK 22.11 virtio-user
 * (`server=1`) and the DPDK 22.11 vhost PMD (`client=1`): handshake, traffic, back-end `quit`,
 * relaunch, second handshake, front-end `quit` (reference/traces), and against the testpmd
 * logs of the same scenario (reference/logs/vb2.log, vb3.log).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MessageChannel } from '../src/endpoint/message-channel.ts';
import { replayAsBackend, CaptureFds } from '../src/endpoint/replay-backend.ts';
import { summarizeReplay } from '../src/endpoint/replay-report.ts';
import { TraceRecorder } from '../src/endpoint/trace-recorder.ts';
import { DpdkBackend } from '../src/endpoint/backend/backend.ts';
import { formatVhostLog, type VhostLogEvent } from '../src/endpoint/backend/log.ts';
import { simHost } from '../src/endpoint/backend/testing.ts';
import { parseVhostLog, type VhostEvent } from '../src/adapters/dpdk/vhost-log.ts';
import { isEventRecord, isMessageRecord, readTraceFile, recordPayload, type TraceMessageRecord, type TraceRecord } from '../src/sim/trace.ts';
import type { SocketFd } from '../src/transport/index.ts';

const REF = new URL('../../shared/reference/', import.meta.url).pathname;
const CAPTURE = `${REF}traces/dpdk22.11-virtio-user-vhost-split-reconnect.jsonl`;
const records = readTraceFile(CAPTURE);

describe('replay of the DPDK 22.11 virtio-user ↔ vhost capture', () => {
  const events: VhostLogEvent[][] = [[], [], []];
  const report = replayAsBackend(records, { onEvent: (e, s) => events[s]!.push(e) });

  it('every back-end message the profile determines is byte-identical; nothing differs, is missing or extra', () => {
    expect(summarizeReplay(report)).toEqual({ match: 16, differs: 0, 'state-dependent': 1, missing: 0, extra: 0 });
    expect(report.diverged).toBe(false);
  });

  it('matches GET_FEATURES, GET_PROTOCOL_FEATURES, the acks, GET_STATUS and the fresh back-end\'s GET_VRING_BASE = 0', () => {
    const matched = report.steps.filter((s) => s.verdict === 'match').map((s) => `${s.session}:${s.expected!.request}:${s.expected!.payload}`);
    expect(matched).toEqual([
      '1:1:cbe7667c0d000000',
      '1:15:bf0c010000000000',
      '1:39:0000000000000000',
      '1:40:0b00000000000000',
      '1:40:0b00000000000000',
      '1:5:0000000000000000',
      '1:39:0000000000000000',
      '2:11:0000000000000000', // vring 0 of the fresh back-end
      '2:11:0100000000000000', // vring 1 of the fresh back-end
      '2:1:cbe7667c0d000000',
      '2:15:bf0c010000000000',
      '2:39:0000000000000000',
      '2:40:0b00000000000000',
      '2:5:0000000000000000',
      '2:39:0000000000000000',
      '2:11:0000000000000000', // vring 0 at the end: no traffic on it
    ]);
  });

  it('the last GET_VRING_BASE of session 2 (base 50272 after traffic) is reported state-dependent, not skipped', () => {
    const sd = report.steps.filter((s) => s.verdict === 'state-dependent');
    expect(sd).toHaveLength(1);
    expect(sd[0]!.session).toBe(2);
    expect(sd[0]!.expected!.payload).toBe('0100000060c40000');
    expect(sd[0]!.actual!.payload).toBe('0100000000000000');
    expect(sd[0]!.detail).toMatch(/capture 50272, model 0/);
    expect(sd[0]!.index).toBe(records.length - 2);
  });

  it('the model reaches "virtio is now ready for processing." once in each session', () => {
    expect(events[1]!.filter((e) => e.kind === 'ready')).toHaveLength(1);
    expect(events[2]!.filter((e) => e.kind === 'ready')).toHaveLength(1);
  });

  // The testpmd logs of the same scenario, at DEBUG: the model's lines must read the same,
  // apart from fd numbers and addresses (kick/call fds, host mappings).
  const KINDS = new Set<VhostEvent['kind']>([
    'message',
    'processed',
    'set-vring-base',
    'get-vring-base',
    'enable',
    'features',
    'protocol-features',
    'status',
    'ready',
    'mergeable',
    'used-idx-mismatch',
    'memory-unchanged',
    'vring-kick',
    'vring-call',
    'error',
  ]);
  const FIELDS = ['name', 'ok', 'needsReply', 'index', 'lastUsedIdx', 'lastAvailIdx', 'num', 'enable', 'value', 'mrgRxbuf', 'virtio1', 'usedIdx', 'message'];
  const key = (e: VhostEvent) => {
    const o: Record<string, unknown> = { kind: e.kind };
    for (const f of FIELDS) if (f in e) o[f] = String((e as unknown as Record<string, unknown>)[f]);
    return JSON.stringify(o);
  };
  for (const [session, file] of [
    [1, 'vb2.log'],
    [2, 'vb3.log'],
  ] as const) {
    it(`the model's log of session ${session} reads like the real testpmd log ${file}`, () => {
      const model = parseVhostLog(formatVhostLog(events[session]!, { configLevel: 'DEBUG' })).events.filter((e) => KINDS.has(e.kind)).map(key);
      const real = parseVhostLog(readFileSync(`${REF}logs/${file}`, 'utf8')).sessions[0]!.events.filter((e) => KINDS.has(e.kind)).map(key);
      expect(model.length).toBeGreaterThan(50);
      expect(model).toEqual(real);
    });
  }
});

describe('the capture played over the in-process socket, with the back-end quit and relaunched at the capture times', () => {
  it('the back-end sends the captured messages, in order, at the same places', () => {
    const { sched, ns } = simHost('golden');
    const path = '/tmp/vhost-user-golden.sock';
    const rec = new TraceRecorder(sched);
    const fds = new CaptureFds(ns);
    const sessions: { start: number; end: number; msgs: TraceMessageRecord[] }[] = [];
    for (const r of records as TraceRecord[]) {
      if (isEventRecord(r) && r.event === 'session') sessions.push({ start: r.t, end: Infinity, msgs: [] });
      else if (isEventRecord(r) && r.event === 'closed') sessions[sessions.length - 1]!.end = r.t;
      else if (isMessageRecord(r)) sessions[sessions.length - 1]!.msgs.push(r);
    }
    expect(sessions).toHaveLength(2);

    // virtio-user server=1: listen, and on connection n play session n's front-end messages at their times.
    let n = 0;
    const channels: MessageChannel[] = [];
    const listener = ns.listen(path, (sock: SocketFd) => {
      const s = sessions[n++]!;
      const ch = new MessageChannel(sock, { role: 'frontend' });
      channels.push(ch);
      ch.on({ message: (m) => m.fds.forEach((f) => f.close()), fatal: () => ch.close(), closed: () => ch.close() });
      for (const m of s.msgs.filter((x) => x.dir === 'f2b')) {
        sched.at(Math.max(sched.now, m.t), () => {
          ch.send({ request: m.request, flags: m.flags, payload: recordPayload(m), fds: fds.fdsFor(m) }, { validate: false });
        });
      }
      if (n === 2) {
        // front-end quit: the connection and its socket file go
        sched.at(s.end, () => {
          ch.close();
          if (!(listener instanceof Error)) listener.close({ unlink: true });
        });
      }
    });
    let be = new DpdkBackend({ ns, path, profile: { client: true }, recorder: rec });
    sched.at(sessions[0]!.start, () => be.start());
    sched.at(sessions[0]!.end, () => be.quit()); // testpmd quit
    sched.at(sessions[1]!.start, () => {
      be = new DpdkBackend({ ns, path, profile: { client: true }, recorder: rec });
      be.start();
    });
    sched.run({ until: 30 });

    const strip = (r: TraceMessageRecord) => `${r.dir} ${r.request} ${r.flags} ${r.nfds} ${r.payload}`;
    const expected = records.filter(isMessageRecord).map(strip);
    const actual = rec.records.filter(isMessageRecord).map(strip);
    expect(actual.length).toBe(expected.length);
    const diffs = actual.flatMap((a, i) => (a === expected[i] ? [] : [[i, expected[i], a]]));
    // Only the traffic-dependent base of vring 1 at the very end.
    expect(diffs).toEqual([[expected.length - 1, 'b2f 11 5 0 0100000060c40000', 'b2f 11 5 0 0100000000000000']]);
    expect(rec.records.filter(isEventRecord).map((e) => `${e.event} ${e.n}`)).toEqual(['session 1', 'closed 1', 'session 2', 'closed 2']);
    expect(be.events.filter((e) => e.kind === 'peer-closed')).toHaveLength(1);
    // …after which the relaunched back-end goes back to retrying, as in vb3.log.
    expect(be.events.slice(-3).map((e) => e.text)).toEqual(['vhost-user client: socket created, fd: 101', 'failed to connect: No such file or directory', 'reconnecting...']);
    fds.dispose();
  });
});
