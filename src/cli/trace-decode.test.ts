import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { TraceFormatError, readTraceFile } from '../sim/trace.ts';
import { traceDecode } from './trace-decode.ts';

const here = dirname(fileURLToPath(import.meta.url));
const CAPTURE = resolve(here, '../../..', 'shared/reference/traces/dpdk22.11-virtio-user-vhost-split-reconnect.jsonl');
const tmp = mkdtempSync(join(tmpdir(), 'vhostsim-trace-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('trace decode', () => {
  it('prints one line per record of the reference capture, in order', () => {
    const lines = traceDecode(CAPTURE);
    expect(lines).toHaveLength(readTraceFile(CAPTURE).length);
    expect(lines[0]).toBe('3.44811 session n=1');
    expect(lines[1]).toBe('3.452866 f2b SET_OWNER size=0');
    expect(lines[3]).toMatch(/^3\.456713 b2f GET_FEATURES reply size=8 features=0xd7c66e7cb .*MRG_RXBUF/);
    expect(lines).toContain('3.456843 f2b SET_PROTOCOL_FEATURES size=8 protocol-features=0x10009 MQ|REPLY_ACK|STATUS');
    expect(lines).toContain('3.456991 f2b SET_STATUS need-reply size=8 status=0xb ACKNOWLEDGE|DRIVER|FEATURES_OK');
    expect(lines).toContain('3.476983 f2b SET_MEM_TABLE need-reply size=40 fds=1 regions=1 [gpa=0x100c3e000 size=0x40000000 uva=0x100c3e000 offset=0x0]');
    expect(lines).toContain('6.519923 f2b SET_VRING_ADDR size=40 vring=0 flags=0x0 desc=0x140be2000 used=0x140be4000 avail=0x140be3000 log=0x0');
    expect(lines).toContain('10.524933 closed n=1');
    expect(lines.at(-2)).toBe('21.661365 b2f GET_VRING_BASE reply size=8 vring=1 base=50272');
    expect(lines.some((l) => l.includes('!'))).toBe(false);
  });

  it('prints an invalid message with its error instead of failing', () => {
    const f = join(tmp, 'bad-message.jsonl');
    writeFileSync(f, '{"t":1,"dir":"f2b","request":99,"flags":1,"size":1,"nfds":0,"payload":"ff"}\n{"t":2,"dir":"f2b","request":12,"flags":1,"size":8,"nfds":0,"payload":"0000000000000000"}\n');
    expect(traceDecode(f)).toEqual([
      '1 f2b UNKNOWN(99) size=1 payload=ff !unknown-request: unknown frontend request 99',
      '2 f2b SET_VRING_KICK size=8 payload=0000000000000000 !fd-count: SET_VRING_KICK: expected 1 fds, received 0',
    ]);
  });

  it('fails on a malformed trace line, naming it', () => {
    const f = join(tmp, 'bad-line.jsonl');
    writeFileSync(f, '{"t":1,"event":"session","n":1}\n{"t":2,"dir":"f2b"\n');
    expect(() => traceDecode(f)).toThrow(TraceFormatError);
    expect(() => traceDecode(f)).toThrow(/^line 2: /);
  });

  it('decodes back-end channel traffic by direction and REPLY flag', () => {
    const f = join(tmp, 'backend.jsonl');
    writeFileSync(
      f,
      [
        '{"t":1,"dir":"b2f","request":1,"flags":9,"size":32,"nfds":0,"payload":"0010000000000000000000000000000000000000000000000301000000000000"}',
        '{"t":2,"dir":"f2b","request":1,"flags":5,"size":8,"nfds":0,"payload":"0000000000000000"}',
      ].join('\n'),
    );
    expect(traceDecode(f)).toEqual([
      '1 b2f SLAVE_IOTLB_MSG need-reply size=32 iova=0x1000 size=0x0 uaddr=0x0 perm=RW type=MISS',
      '2 f2b SLAVE_IOTLB_MSG reply size=8 ack=0 (ok)',
    ]);
  });
});
