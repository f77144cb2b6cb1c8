import { describe, expect, it } from 'vitest';
import {
  BACKEND_REQUESTS,
  BackendRequest,
  FRONTEND_REQUESTS,
  FrontendRequest,
  expectedFdCount,
  formsFor,
  lookupRequest,
  needsAck,
  requestByName,
  requestName,
  requestSpaceOf,
} from './requests.ts';

describe('request catalogue', () => {
  it('has every front-end request 1..43 and every back-end request 1..8, once each', () => {
    expect(FRONTEND_REQUESTS.map((s) => s.code)).toEqual(Array.from({ length: 43 }, (_, i) => i + 1));
    expect(BACKEND_REQUESTS.map((s) => s.code)).toEqual(Array.from({ length: 8 }, (_, i) => i + 1));
    const names = [...FRONTEND_REQUESTS, ...BACKEND_REQUESTS].flatMap((s) => [s.name, ...s.aliases]);
    expect(new Set(names).size).toBe(names.length);
  });

  it('uses the DPDK 22.11 / QEMU 7.2 names and knows the renamed ones as aliases', () => {
    expect(lookupRequest(21)!.name).toBe('SET_SLAVE_REQ_FD');
    expect(requestByName('VHOST_USER_SET_BACKEND_REQ_FD')!.code).toBe(21);
    expect(FrontendRequest.SET_SLAVE_REQ_FD).toBe(21);
    expect(FrontendRequest.SET_BACKEND_REQ_FD).toBe(21);
    expect(lookupRequest(1, 'backend')!.name).toBe('SLAVE_IOTLB_MSG');
    expect(BackendRequest.BACKEND_VRING_HOST_NOTIFIER_MSG).toBe(3);
    expect(requestByName('backend_shared_object_lookup')!.space).toBe('backend');
    expect(requestByName('CRYPTO_CREATE_SESS')!.code).toBe(26);
    expect(requestName(44)).toBe('UNKNOWN(44)');
    expect(requestName(0)).toBe('UNKNOWN(0)');
    expect(requestName(9, 'backend')).toBe('BACKEND_UNKNOWN(9)');
    expect(requestName(3, 'backend')).toBe('SLAVE_VRING_HOST_NOTIFIER_MSG');
  });

  it('marks exactly the requests DPDK 22.11 handles', () => {
    const handled = FRONTEND_REQUESTS.filter((s) => s.dpdk2211).map((s) => s.code);
    const expected = [...Array.from({ length: 22 }, (_, i) => i + 1), 24, 25, 28, 29, 30, 31, 32, 39, 40];
    expect(handled).toEqual(expected);
    expect(BACKEND_REQUESTS.filter((s) => s.dpdk2211).map((s) => s.code)).toEqual([1, 2, 3]);
  });

  it('gives the payload kinds of the fact sheet', () => {
    const kind = (n: string) => requestByName(n)!.payload;
    expect(kind('GET_FEATURES')).toBe('none');
    expect(kind('SET_FEATURES')).toBe('features');
    expect(kind('SET_MEM_TABLE')).toBe('memoryTable');
    expect(kind('SET_LOG_BASE')).toBe('log');
    expect(kind('SET_VRING_ADDR')).toBe('vringAddr');
    expect(kind('SET_VRING_KICK')).toBe('vringFile');
    expect(kind('IOTLB_MSG')).toBe('iotlb');
    expect(kind('GET_INFLIGHT_FD')).toBe('inflight');
    expect(kind('ADD_MEM_REG')).toBe('singleRegion');
    expect(kind('SET_STATUS')).toBe('status');
    expect(kind('SET_DEVICE_STATE_FD')).toBe('deviceStateFd');
    expect(kind('GET_SHARED_OBJECT')).toBe('uuid');
    expect(requestByName('SLAVE_VRING_HOST_NOTIFIER_MSG')!.payload).toBe('vringArea');
  });

  it('gives reply rules: payload replies, ack-if-requested, and the size-0 SET_LOG_BASE reply', () => {
    expect(requestByName('GET_FEATURES')!.reply).toEqual({ type: 'payload', kind: 'features' });
    expect(requestByName('GET_PROTOCOL_FEATURES')!.reply).toEqual({ type: 'payload', kind: 'protocolFeatures' });
    expect(requestByName('GET_VRING_BASE')!.reply).toEqual({ type: 'payload', kind: 'vringState' });
    expect(requestByName('GET_STATUS')!.reply).toEqual({ type: 'payload', kind: 'status' });
    expect(requestByName('SET_LOG_BASE')!.reply).toEqual({ type: 'empty' });
    expect(requestByName('SET_MEM_TABLE')!.reply).toEqual({ type: 'ack-if-requested' });
    // An ack-only request reads an 8-byte reply as the ack, never as an empty memory table.
    expect(requestByName('SET_MEM_TABLE')!.replyForms[0]!.kind).toBe('ack');
    for (const s of [...FRONTEND_REQUESTS, ...BACKEND_REQUESTS]) expect(s.replyForms.some((f) => f.kind === 'ack'), s.name).toBe(true);
  });

  it('computes expected fd counts: per region, NOFD bit, exact, range', () => {
    const mem = requestByName('SET_MEM_TABLE')!;
    const region = { guestPhysAddr: 0n, memorySize: 0n, userspaceAddr: 0n, mmapOffset: 0n };
    expect(expectedFdCount(mem.fds, { kind: 'memoryTable', regions: [region, region, region] })).toEqual({ min: 3, max: 3 });
    const kick = requestByName('SET_VRING_KICK')!;
    expect(expectedFdCount(kick.fds, { kind: 'vringFile', index: 0, noFd: false })).toEqual({ min: 1, max: 1 });
    expect(expectedFdCount(kick.fds, { kind: 'vringFile', index: 0, noFd: true })).toEqual({ min: 0, max: 0 });
    expect(expectedFdCount(requestByName('SET_INFLIGHT_FD')!.fds, undefined)).toEqual({ min: 1, max: 1 });
    expect(expectedFdCount(requestByName('REM_MEM_REG')!.fds, undefined)).toEqual({ min: 0, max: 1 });
    expect(expectedFdCount(requestByName('GET_FEATURES')!.fds, undefined)).toEqual({ min: 0, max: 0 });
    const inflightReply = formsFor(requestByName('GET_INFLIGHT_FD')!, 0x5)[0]!;
    expect(inflightReply.kind).toBe('inflight');
    expect(expectedFdCount(inflightReply.fds, undefined)).toEqual({ min: 1, max: 1 });
    const dsReply = formsFor(requestByName('SET_DEVICE_STATE_FD')!, 0x5)[0]!;
    expect(expectedFdCount(dsReply.fds, { kind: 'deviceStateResult', error: 0, noFd: true })).toEqual({ min: 0, max: 0 });
  });

  it('derives the request space from sender and REPLY flag', () => {
    expect(requestSpaceOf('frontend', 0x1)).toBe('frontend');
    expect(requestSpaceOf('backend', 0x5)).toBe('frontend');
    expect(requestSpaceOf('backend', 0x9)).toBe('backend');
    expect(requestSpaceOf('frontend', 0x5)).toBe('backend');
  });

  it('asks for an ack only when NEED_REPLY is set on a request without its own reply', () => {
    expect(needsAck(requestByName('SET_MEM_TABLE'), 0x9)).toBe(true);
    expect(needsAck(requestByName('SET_MEM_TABLE'), 0x1)).toBe(false);
    expect(needsAck(requestByName('GET_FEATURES'), 0x9)).toBe(false);
    expect(needsAck(requestByName('SET_LOG_BASE'), 0x9)).toBe(false);
    expect(needsAck(undefined, 0x9)).toBe(true); // DPDK answers an unknown request with ack 1
    expect(needsAck(requestByName('SET_STATUS'), 0xd)).toBe(false); // a reply is never acked
  });
});
