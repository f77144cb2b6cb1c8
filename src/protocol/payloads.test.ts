import { describe, expect, it } from 'vitest';
import { ProtocolError } from './errors.ts';
import { FIXED_PAYLOAD_SIZE, PAYLOAD_KINDS, decodePayload, encodePayload, payloadSizeFits, type Payload, type PayloadKind } from './payloads.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string) => new Uint8Array(Buffer.from(h, 'hex'));

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
  return undefined;
}

describe('payload layouts', () => {
  it('vring addr is index, flags, then desc, used, avail, log (not the ring memory order)', () => {
    const b = encodePayload({ kind: 'vringAddr', index: 1, flags: 1, desc: 0x11n, used: 0x22n, avail: 0x33n, log: 0x44n });
    expect(b.length).toBe(40);
    const dv = new DataView(b.buffer);
    expect(dv.getUint32(0, true)).toBe(1);
    expect(dv.getUint32(4, true)).toBe(1);
    expect([8, 16, 24, 32].map((o) => dv.getBigUint64(o, true))).toEqual([0x11n, 0x22n, 0x33n, 0x44n]);
  });

  it('memory table sends only 8 + 32·n bytes, regions at 8 + 32·i', () => {
    const r = (i: number) => ({ guestPhysAddr: BigInt(i), memorySize: 0x1000n, userspaceAddr: 0x7f00n + BigInt(i), mmapOffset: 0n });
    const b = encodePayload({ kind: 'memoryTable', regions: [r(1), r(2)] });
    expect(b.length).toBe(8 + 64);
    const dv = new DataView(b.buffer);
    expect(dv.getUint32(0, true)).toBe(2);
    expect(dv.getUint32(4, true)).toBe(0);
    expect(dv.getBigUint64(8 + 32, true)).toBe(2n);
    expect(dv.getBigUint64(8 + 32 + 16, true)).toBe(0x7f02n);
    expect(encodePayload({ kind: 'memoryTable', regions: [] }).length).toBe(8);
  });

  it('inflight is 24 bytes: two u64, two u16, 4 bytes of zero padding', () => {
    const b = encodePayload({ kind: 'inflight', mmapSize: 0x1040n, mmapOffset: 0n, numQueues: 2, queueSize: 256 });
    expect(hex(b)).toBe('4010000000000000' + '0000000000000000' + '0200' + '0001' + '00000000');
  });

  it('iotlb is 32 bytes with perm at 24 and type at 25', () => {
    const b = encodePayload({ kind: 'iotlb', iova: 1n, size: 2n, uaddr: 3n, perm: 3, type: 2 });
    expect(b.length).toBe(32);
    expect(b[24]).toBe(3);
    expect(b[25]).toBe(2);
    expect(hex(b.subarray(26))).toBe('000000000000');
  });

  it('config is offset, size, flags then size bytes', () => {
    const b = encodePayload({ kind: 'config', offset: 4, flags: 1, data: bytes('aabbcc') });
    expect(hex(b)).toBe('04000000' + '03000000' + '01000000' + 'aabbcc');
    expect(decodePayload('config', b)).toEqual({ kind: 'config', offset: 4, flags: 1, data: bytes('aabbcc') });
  });

  it('vring file u64: index in bits 0-7, NOFD at bit 8, other bits kept', () => {
    expect(hex(encodePayload({ kind: 'vringFile', index: 3, noFd: true }))).toBe('0301000000000000');
    expect(decodePayload('vringFile', bytes('0501000000000000'))).toEqual({ kind: 'vringFile', index: 5, noFd: true });
    const odd = decodePayload('vringFile', bytes('0102000000000080'));
    expect(odd).toEqual({ kind: 'vringFile', index: 1, noFd: false, reserved: 0x8000000000000200n });
    expect(hex(encodePayload(odd))).toBe('0102000000000080');
  });

  it('vring area u64 packs index and NOFD like a vring file', () => {
    const b = encodePayload({ kind: 'vringArea', index: 2, noFd: false, size: 0x1000n, offset: 0x3000n });
    expect(hex(b)).toBe('0200000000000000' + '0010000000000000' + '0030000000000000');
  });

  it('SEND_RARP carries the MAC in the first 6 bytes', () => {
    expect(hex(encodePayload({ kind: 'mac', mac: '52:54:00:12:34:56' }))).toBe('5254001234560000');
    expect(decodePayload('mac', bytes('5254001234560000'))).toEqual({ kind: 'mac', mac: '52:54:00:12:34:56' });
  });

  it('UUID bytes are in text order (first three components big-endian)', () => {
    const u = '01234567-89ab-cdef-0011-223344556677';
    expect(hex(encodePayload({ kind: 'uuid', uuid: u }))).toBe('0123456789abcdef0011223344556677');
    expect(decodePayload('uuid', encodePayload({ kind: 'uuid', uuid: u.toUpperCase() }))).toEqual({ kind: 'uuid', uuid: u });
  });

  it('device state: request is direction, phase; reply has error in bits 0-7 and no-fd at bit 8', () => {
    expect(hex(encodePayload({ kind: 'deviceStateFd', direction: 1, phase: 0 }))).toBe('0100000000000000');
    expect(decodePayload('deviceStateResult', bytes('0001000000000000'))).toEqual({ kind: 'deviceStateResult', error: 0, noFd: true });
  });

  it('memory table and single region keep non-zero padding, so decode → encode is exact', () => {
    const t = bytes('00000000' + '07000000');
    expect(decodePayload('memoryTable', t)).toEqual({ kind: 'memoryTable', regions: [], padding: 7 });
    expect(hex(encodePayload(decodePayload('memoryTable', t)))).toBe(hex(t));
    const s = new Uint8Array(40);
    s[0] = 9;
    expect(hex(encodePayload(decodePayload('singleRegion', s)))).toBe(hex(s));
  });

  it('every fixed kind refuses any other size with size-mismatch', () => {
    for (const kind of PAYLOAD_KINDS) {
      const size = FIXED_PAYLOAD_SIZE[kind];
      if (size === undefined) continue;
      expect(codeOf(() => decodePayload(kind, new Uint8Array(size + 1))), kind).toBe('size-mismatch');
      if (size > 0) expect(codeOf(() => decodePayload(kind, new Uint8Array(size - 1))), kind).toBe('size-mismatch');
      expect(payloadSizeFits(kind, size)).toBe(true);
    }
  });

  it('memory table checks: > 8 regions, then count against size', () => {
    const table = (n: number, claimed: number) => {
      const b = new Uint8Array(8 + 32 * n);
      new DataView(b.buffer).setUint32(0, claimed, true);
      return b;
    };
    expect(codeOf(() => decodePayload('memoryTable', table(9, 9)))).toBe('too-many-regions');
    expect(codeOf(() => decodePayload('memoryTable', table(1, 9)))).toBe('too-many-regions');
    expect(codeOf(() => decodePayload('memoryTable', table(2, 1)))).toBe('region-count-mismatch');
    expect(codeOf(() => decodePayload('memoryTable', new Uint8Array(8 + 31)))).toBe('size-mismatch');
    expect(codeOf(() => decodePayload('memoryTable', table(8, 8)))).toBeUndefined();
  });

  it('config checks the access size limit, then that the message holds it', () => {
    const cfg = (size: number, have: number) => {
      const b = new Uint8Array(12 + have);
      new DataView(b.buffer).setUint32(4, size, true);
      return b;
    };
    expect(codeOf(() => decodePayload('config', cfg(257, 257)))).toBe('config-too-large');
    expect(codeOf(() => decodePayload('config', cfg(10, 9)))).toBe('size-mismatch');
    expect(codeOf(() => decodePayload('config', new Uint8Array(11)))).toBe('size-mismatch');
    expect(codeOf(() => decodePayload('config', cfg(256, 256)))).toBeUndefined();
  });

  it('status above 0xff is refused both ways (DPDK: invalid SET_STATUS payload)', () => {
    expect(codeOf(() => decodePayload('status', bytes('0001000000000000')))).toBe('status-out-of-range');
    expect(codeOf(() => encodePayload({ kind: 'status', status: 0x100 }))).toBe('status-out-of-range');
    expect(hex(encodePayload({ kind: 'status', status: 0x100 }, { validate: false }))).toBe('0001000000000000');
  });

  it('encoding refuses fields that do not fit their wire width', () => {
    const bad: Payload[] = [
      { kind: 'u64', value: 1n << 64n },
      { kind: 'u64', value: -1n },
      { kind: 'vringState', index: 2 ** 32, num: 0 },
      { kind: 'vringState', index: 0, num: 1.5 },
      { kind: 'vringFile', index: 256, noFd: false },
      { kind: 'vringFile', index: 0, noFd: false, reserved: 0x100n },
      { kind: 'inflight', mmapSize: 0n, mmapOffset: 0n, numQueues: 0x10000, queueSize: 0 },
      { kind: 'iotlb', iova: 0n, size: 0n, uaddr: 0n, perm: 256, type: 0 },
      { kind: 'mac', mac: '52:54:00:12:34' },
      { kind: 'uuid', uuid: 'not-a-uuid' },
    ];
    for (const p of bad) expect(codeOf(() => encodePayload(p)), JSON.stringify(p, (_, v) => (typeof v === 'bigint' ? String(v) : v))).toBe('field-out-of-range');
  });

  it('protocol limits can be lifted for fault injection, representability cannot', () => {
    const regions = Array.from({ length: 9 }, () => ({ guestPhysAddr: 0n, memorySize: 0n, userspaceAddr: 0n, mmapOffset: 0n }));
    expect(codeOf(() => encodePayload({ kind: 'memoryTable', regions }))).toBe('too-many-regions');
    expect(encodePayload({ kind: 'memoryTable', regions }, { validate: false }).length).toBe(8 + 9 * 32);
    expect(codeOf(() => encodePayload({ kind: 'config', offset: 0, flags: 0, data: new Uint8Array(257) }))).toBe('config-too-large');
  });

  it('opaque kinds carry any bytes unchanged', () => {
    for (const kind of ['cryptoSession', 'opaque'] as PayloadKind[]) {
      const b = bytes('00ff10');
      const p = decodePayload(kind, b);
      expect(hex(encodePayload(p))).toBe('00ff10');
    }
  });
});
