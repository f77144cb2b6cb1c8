import { describe, expect, it } from 'vitest';
import {
  TraceFormatError,
  annotateTraceMessage,
  checkTraceMessage,
  formatTraceRecord,
  isEventRecord,
  isMessageRecord,
  parseTrace,
  parseTraceLine,
  requestSpaceOfRecord,
  serializeTrace,
  traceMessageFromBytes,
  traceMessageToBytes,
  type TraceMessageRecord,
  type TraceRecord,
} from './trace.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Lines as the reference capture writes them (spaces after colons).
const CAPTURE = [
  '{"t": 3.44811, "event": "session", "n": 1}',
  '{"t": 3.456713, "dir": "b2f", "request": 1, "flags": 5, "size": 8, "nfds": 0, "payload": "cbe7667c0d000000"}',
  '{"t": 3.456923, "dir": "f2b", "request": 13, "flags": 1, "size": 8, "nfds": 1, "payload": "0000000000000000"}',
  '',
  '{"t": 10.524933, "event": "closed", "n": 1}',
].join('\n');

function thrown(f: () => unknown): TraceFormatError {
  try {
    f();
  } catch (e) {
    if (e instanceof TraceFormatError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('trace format', () => {
  it('reads message and event records, skipping blank lines', () => {
    const rs = parseTrace(CAPTURE);
    expect(rs).toHaveLength(4);
    expect(rs[0]).toEqual({ t: 3.44811, event: 'session', n: 1 });
    expect(rs[1]).toEqual({ t: 3.456713, dir: 'b2f', request: 1, flags: 5, size: 8, nfds: 0, payload: 'cbe7667c0d000000' });
    expect(rs.map((r) => isMessageRecord(r))).toEqual([false, true, true, false]);
    expect(rs.map((r) => isEventRecord(r))).toEqual([true, false, false, true]);
  });

  it('ignores fields it does not know and accepts upper-case hex', () => {
    const r = parseTraceLine('{"t":1,"dir":"f2b","request":2,"flags":1,"size":1,"nfds":0,"payload":"AB","name":"SET_FEATURES","queue":3}');
    expect(r).toEqual({ t: 1, dir: 'f2b', request: 2, flags: 1, size: 1, nfds: 0, payload: 'ab' });
  });

  it('refuses malformed records, naming the line', () => {
    const bad = [
      'not json',
      '[]',
      '{"t":"1","event":"session","n":1}',
      '{"t":1,"event":"opened","n":1}',
      '{"t":1,"event":"session","n":-1}',
      '{"t":1,"dir":"x2y","request":1,"flags":1,"size":0,"nfds":0,"payload":""}',
      '{"t":1,"dir":"f2b","request":1,"flags":1,"size":0,"nfds":0,"payload":"0"}',
      '{"t":1,"dir":"f2b","request":1,"flags":1,"size":2,"nfds":0,"payload":"00"}',
      '{"t":1,"dir":"f2b","request":1,"flags":1,"size":0,"nfds":1.5,"payload":""}',
      '{"t":1,"dir":"f2b","request":4294967296,"flags":1,"size":0,"nfds":0,"payload":""}',
    ];
    for (const l of bad) expect(() => parseTraceLine(l), l).toThrow(TraceFormatError);
    const e = thrown(() => parseTrace('{"t":1,"event":"session","n":1}\n\n{"t":2}'));
    expect(e.line).toBe(3);
    expect(e.message).toMatch(/^line 3: /);
  });

  it('writes the format fields in order, compact, then any extra fields', () => {
    const r: TraceMessageRecord = { t: 3.457, dir: 'f2b', request: 2, flags: 1, size: 8, nfds: 0, payload: '0080005009000000' };
    expect(formatTraceRecord(r)).toBe('{"t":3.457,"dir":"f2b","request":2,"flags":1,"size":8,"nfds":0,"payload":"0080005009000000"}');
    expect(formatTraceRecord({ t: 3.461, event: 'session', n: 2 })).toBe('{"t":3.461,"event":"session","n":2}');
    expect(formatTraceRecord(r, { name: 'SET_FEATURES' })).toMatch(/"payload":"0080005009000000","name":"SET_FEATURES"}$/);
    expect(() => formatTraceRecord(r, { size: 9 })).toThrow(TraceFormatError);
  });

  it('reads back what it writes', () => {
    const rs: TraceRecord[] = parseTrace(CAPTURE);
    const text = serializeTrace(rs);
    expect(text.endsWith('\n')).toBe(true);
    expect(parseTrace(text)).toEqual(rs);
  });

  it('gives the wire bytes of a message record, and back', () => {
    const r = parseTraceLine(CAPTURE.split('\n')[1]!) as TraceMessageRecord;
    const b = traceMessageToBytes(r);
    expect(hex(b)).toBe('01000000' + '05000000' + '08000000' + 'cbe7667c0d000000');
    expect(traceMessageFromBytes(r.t, r.dir, b, r.nfds)).toEqual(r);
    expect(() => traceMessageFromBytes(0, 'f2b', b.subarray(0, 15), 0)).toThrow(TraceFormatError);
  });

  it('puts replies from the back-end in the front-end space and back-end requests in the back-end space', () => {
    const rec = (dir: 'f2b' | 'b2f', flags: number): TraceMessageRecord => ({ t: 0, dir, request: 1, flags, size: 0, nfds: 0, payload: '' });
    expect(requestSpaceOfRecord(rec('f2b', 1))).toBe('frontend');
    expect(requestSpaceOfRecord(rec('b2f', 5))).toBe('frontend');
    expect(requestSpaceOfRecord(rec('b2f', 1))).toBe('backend');
    expect(requestSpaceOfRecord(rec('f2b', 5))).toBe('backend');
  });

  it('interprets and annotates message records with the codec', () => {
    const r = parseTraceLine(CAPTURE.split('\n')[2]!) as TraceMessageRecord;
    expect(checkTraceMessage(r).decoded).toEqual({ kind: 'vringFile', index: 0, noFd: false });
    expect(annotateTraceMessage(r)).toEqual({ name: 'SET_VRING_CALL', decoded: 'SET_VRING_CALL size=8 fds=1 vring=0' });
    expect(checkTraceMessage({ ...r, nfds: 0 }).error?.code).toBe('fd-count');
  });
});
