import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { frontendSequence, type FrontendProfile } from '../../../models/session.ts';
import { decodeTraceRecords } from '../../cli/trace-decode.ts';
import { traceFromLog } from '../../cli/from-log.ts';
import { isEventRecord, isMessageRecord, parseTrace, readTraceFile } from '../../sim/trace.ts';
import { logToTrace, logToTraceText, type LogTraceLine } from './log-to-trace.ts';

const fixture = (name: string): string => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

const messages = (lines: LogTraceLine[]): LogTraceLine[] => lines.filter((l) => isMessageRecord(l.record));
const names = (lines: LogTraceLine[]): string[] => messages(lines).map((l) => l.extra.name as string);
const model = (profile: FrontendProfile, ...kinds: Array<'connect' | 'start' | 'stop' | 'reconnect'>): string[] =>
  kinds.flatMap((k) => frontendSequence(profile, k, { ring: 'split' }).map((e) => (e.type === 'request' ? e.name : e.type)));
const payloadOf = (lines: LogTraceLine[], name: string, i = 0): string => {
  const r = messages(lines).filter((l) => l.extra.name === name)[i]!.record;
  return isMessageRecord(r) ? r.payload : '';
};

describe('logToTrace on reference logs', () => {
  it('vb3: a relaunched back-end reads exactly the model virtio-user reconnect, then its stop', () => {
    const lines = logToTrace(fixture('ref-vb3.log'));
    expect(names(lines)).toEqual(model('virtio-user-22.11', 'reconnect', 'stop'));
    const events = lines.filter((l) => isEventRecord(l.record)).map((l) => ({ ...l.record, by: l.extra.by }));
    expect(events).toEqual([
      { t: 0, event: 'session', n: 1, by: undefined },
      { t: 0, event: 'closed', n: 1, by: 'frontend' },
    ]);
    // Values the log shows become real payloads.
    expect(payloadOf(lines, 'SET_FEATURES')).toBe('0080005009000000');
    expect(payloadOf(lines, 'SET_PROTOCOL_FEATURES')).toBe('0900010000000000');
    expect(payloadOf(lines, 'SET_STATUS', 0)).toBe('0b00000000000000');
    expect(payloadOf(lines, 'SET_STATUS', 1)).toBe('0f00000000000000');
    expect(payloadOf(lines, 'SET_VRING_ENABLE', 2)).toBe('0000000001000000');
    expect(payloadOf(lines, 'SET_VRING_BASE', 1)).toBe('0100000000000000');
    const kick = messages(lines).find((l) => l.extra.name === 'SET_VRING_KICK')!;
    expect(kick.record).toMatchObject({ request: 12, flags: 1, size: 8, nfds: 1, payload: '0000000000000000' });
    // What the log does not show is marked, not invented.
    const partial = messages(lines).filter((l) => l.extra.partial === true).map((l) => l.extra.name);
    expect(new Set(partial)).toEqual(new Set(['GET_VRING_BASE', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_ADDR']));
    for (const l of messages(lines).filter((m) => m.extra.partial === true)) expect(l.record).toMatchObject({ size: 0, payload: '' });
    const gvb = messages(lines).find((l) => l.extra.name === 'GET_VRING_BASE')!;
    expect(gvb.extra.known).toEqual({ index: 0, replyNum: 0 });
    const mem = messages(lines).find((l) => l.extra.name === 'SET_MEM_TABLE')!;
    expect(mem.record).toMatchObject({ nfds: 1 });
    expect(mem.extra.known).toEqual({ regions: [{ size: '0x10000000', gpa: '0x100200000', uva: '0x100200000', mmapOffset: '0x0' }] });
    // Debug-level results and log line numbers ride along.
    expect(messages(lines).every((l) => l.extra.result === 'ok' && l.extra.source === 'log' && typeof l.extra.line === 'number')).toBe(true);
  });

  it('vb2: a fresh virtio-user start is the model connect + start, with the extra GET_STATUS of a first init', () => {
    const got = names(logToTrace(fixture('ref-vb2.log')));
    const expected = model('virtio-user-22.11', 'connect', 'start');
    const at = expected.indexOf('GET_STATUS');
    // The PMD reads the status once more during its first initialisation; the model sends it once.
    expect(got).toEqual([...expected.slice(0, at + 1), 'GET_STATUS', ...expected.slice(at + 1)]);
  });

  it('vc2: QEMU reads the model QEMU sequence and stop, then re-enables both vrings before testpmd quits', () => {
    const lines = logToTrace(fixture('ref-vc2.log'));
    const expected = model('qemu-7.2', 'reconnect', 'stop');
    const got = names(lines);
    expect(got.slice(0, expected.length)).toEqual(expected);
    expect(got.slice(expected.length)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE']);
    // SET_SLAVE_REQ_FD has no payload and one fd: known in full from the request alone.
    expect(messages(lines).find((l) => l.extra.name === 'SET_SLAVE_REQ_FD')!.record).toMatchObject({ request: 21, size: 0, nfds: 1 });
    // QEMU resumes at used index 7: split ring, so SET_VRING_BASE is exact.
    expect(payloadOf(lines, 'SET_VRING_BASE', 0)).toBe('0000000007000000');
    expect(messages(lines).find((l) => l.extra.name === 'GET_VRING_BASE')!.extra.known).toEqual({ index: 0, replyNum: 9 });
    // testpmd's quit closed the connection itself.
    expect(lines.at(-1)!.record).toMatchObject({ event: 'closed', n: 1 });
    expect(lines.at(-1)!.extra.by).toBe('backend');
  });

  it('packed ring: SET_VRING_BASE stays partial (the log drops the wrap bits)', () => {
    const lines = logToTrace(fixture('real-packed-debug-vhost1.log'));
    const bases = messages(lines).filter((l) => l.extra.name === 'SET_VRING_BASE');
    expect(bases).toHaveLength(2);
    for (const b of bases) expect(b.extra.partial).toBe(true);
  });

  it('times come from time-stamped lines, in seconds from the first', () => {
    const text = fixture('ref-vb3.log').split('\n');
    const lines = logToTrace(text.map((t, i) => ({ text: t, t: 1000 + 10 * i })));
    const ts = lines.map((l) => l.record.t);
    // The clock starts at the first VHOST_CONFIG line (socket created), one line before the session.
    expect(ts[0]).toBe(0.01);
    expect([...ts].sort((a, b) => a - b)).toEqual(ts);
    expect(ts.at(-1)).toBeGreaterThan(1);
  });

  it.each(['ref-vb2.log', 'ref-vb3.log', 'ref-vc2.log', 'ref-vc3.log', 'ref-vh2.log', 'real-split-vhost0.log', 'real-split-vhost1.log', 'real-packed-debug-vhost1.log'])(
    '%s: the JSONL reads back as a trace and decodes line by line',
    (name) => {
      const text = logToTraceText(fixture(name));
      const records = parseTrace(text);
      // readers keep the partial marker and its text; everything else is the record as written
      const core = (r: object) => {
        const { partial: _p, decoded: _d, ...rest } = r as Record<string, unknown>;
        return rest;
      };
      expect(records.map(core)).toEqual(logToTrace(fixture(name)).map((l) => core(l.record)));
      const decoded = decodeTraceRecords(records);
      expect(decoded).toHaveLength(records.length);
      // Partial records are named and shown as coming from the log, never run through the codec.
      const partial = text.trim().split('\n').map((l) => (JSON.parse(l) as { partial?: boolean }).partial === true);
      decoded.forEach((d, i) => {
        expect(d).not.toContain('!');
        if (partial[i]) expect(d).toContain('(from log');
      });
    },
  );
});

describe('traceFromLog (the command)', () => {
  it('writes the file and counts what it wrote', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhostsim-fromlog-'));
    try {
      const out = join(dir, 'vb3.jsonl');
      const r = traceFromLog(new URL('./fixtures/ref-vb3.log', import.meta.url).pathname, { out });
      expect(r).toMatchObject({ sessions: 1, messages: 28, partial: 9 });
      expect(readTraceFile(out)).toHaveLength(30);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
