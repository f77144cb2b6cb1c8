import { describe, expect, it } from 'vitest';
import { checkMessage } from './codec.ts';
import { ProtocolError } from './errors.ts';
import { formatFlags, formatMessage, formatPayload, formatVirtioFeatures } from './format.ts';
import { FrontendRequest as R } from './requests.ts';

describe('formatting', () => {
  it('names virtio features without the NET_ prefix', () => {
    expect(formatVirtioFeatures(0x950008000n)).toBe('MRG_RXBUF|RING_INDIRECT_DESC|PROTOCOL_FEATURES|VERSION_1|IN_ORDER');
  });

  it('shows flags only when they say something', () => {
    expect(formatFlags(0x1)).toBe('');
    expect(formatFlags(0x9)).toBe('need-reply');
    expect(formatFlags(0x5)).toBe('reply');
    expect(formatFlags(0xd)).toBe('reply need-reply flags=0xd');
    expect(formatFlags(0x0)).toBe('flags=0x0');
    expect(formatFlags(0x15)).toBe('reply flags=0x15');
  });

  it('labels a vring state by what the request means', () => {
    const s = { kind: 'vringState', index: 1, num: 256 } as const;
    expect(formatPayload(s, 'SET_VRING_NUM')).toBe('vring=1 num=256');
    expect(formatPayload(s, 'SET_VRING_BASE')).toBe('vring=1 base=256');
    expect(formatPayload(s, 'GET_VRING_BASE', true)).toBe('vring=1 base=256');
    expect(formatPayload({ ...s, num: 0 }, 'GET_VRING_BASE')).toBe('vring=1');
    expect(formatPayload({ ...s, num: 1 }, 'SET_VRING_ENABLE')).toBe('vring=1 enable=1');
    expect(formatPayload(s)).toBe('index=1 num=256');
  });

  it('formats a whole message: name, reply, size, fds, decoded payload', () => {
    const header = { request: R.GET_FEATURES, flags: 0x5, size: 8 };
    const payload = new Uint8Array(Buffer.from('cbe7667c0d000000', 'hex'));
    const c = checkMessage(header, payload, 0);
    expect(formatMessage({ header, payload, ...c })).toMatch(/^GET_FEATURES reply size=8 features=0xd7c66e7cb CSUM\|GUEST_CSUM\|.*\|MRG_RXBUF\|.*\|IN_ORDER$/);
    expect(formatMessage({ header: { request: R.SET_VRING_KICK, flags: 1, size: 8 }, decoded: { kind: 'vringFile', index: 1, noFd: false }, nfds: 1 })).toBe(
      'SET_VRING_KICK size=8 fds=1 vring=1',
    );
    expect(formatMessage({ header: { request: R.GET_STATUS, flags: 5, size: 8 }, decoded: { kind: 'status', status: 0xf } })).toBe(
      'GET_STATUS reply size=8 status=0xf ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK',
    );
  });

  it('shows an invalid message raw, with the error', () => {
    const error = new ProtocolError('unknown-request', 'unknown frontend request 99', 99);
    expect(formatMessage({ header: { request: 99, flags: 1, size: 2 }, payload: new Uint8Array([0xab, 0xcd]), error })).toBe(
      'UNKNOWN(99) size=2 payload=abcd !unknown-request: unknown frontend request 99',
    );
  });

  it('names IOTLB permissions and types, and device-state directions', () => {
    expect(formatPayload({ kind: 'iotlb', iova: 0x1000n, size: 0x1000n, uaddr: 0x7f00n, perm: 3, type: 2 })).toBe(
      'iova=0x1000 size=0x1000 uaddr=0x7f00 perm=RW type=UPDATE',
    );
    expect(formatPayload({ kind: 'deviceStateFd', direction: 1, phase: 0 })).toBe('direction=load phase=stopped');
    expect(formatPayload({ kind: 'ack', value: 1n })).toBe('ack=1 (failed)');
  });
});
