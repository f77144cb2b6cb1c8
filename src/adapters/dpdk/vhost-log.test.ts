import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { eventsOf, messageNames, parseVhostEvents, parseVhostLog } from './vhost-log.ts';
import { requestName, requestNumber } from './requests.ts';

// ref-*: cleaned logs of DPDK 22.11.11 runs (path prefix removed; vb = virtio-user server,
// vc/vh = QEMU 7.2). real-*: testpmd output captured by this adapter, unedited.
const fixture = (name: string): string => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

/** Fact sheet Appendix B: what a new back-end reads from a reconnecting virtio-user (split). */
const RECONNECT_FROM_VIRTIO_USER = [
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE',
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES',
  'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS', 'SET_MEM_TABLE',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const CLEAN_FRONTEND_STOP = ['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE'];

describe('request table', () => {
  it('maps DPDK names, with or without the prefix, and aliases', () => {
    expect(requestNumber('VHOST_USER_GET_FEATURES')).toBe(1);
    expect(requestNumber('SET_VRING_BASE')).toBe(10);
    expect(requestNumber('VHOST_USER_SET_SLAVE_REQ_FD')).toBe(21);
    expect(requestNumber('VHOST_USER_SET_BACKEND_REQ_FD')).toBe(21);
    expect(requestNumber('VHOST_USER_GET_STATUS')).toBe(40);
    expect(requestNumber('VHOST_USER_NOPE')).toBeUndefined();
    expect(requestName(39)).toBe('SET_STATUS');
    for (let n = 1; n <= 43; n++) expect(requestNumber(requestName(n)!)).toBe(n);
  });
});

describe('parseVhostLog on reference logs (cleaned, no path prefix)', () => {
  it('vb2: first virtio-user session after a failed connect and a retry', () => {
    const log = parseVhostLog(fixture('ref-vb2.log'), { ended: true });
    expect(log.outside.map((e) => e.kind)).toEqual(['socket-created', 'connect-failed', 'reconnecting']);
    expect(log.outside[1]).toMatchObject({ kind: 'connect-failed', error: 'No such file or directory' });
    expect(log.sessions).toHaveLength(1);
    const s = log.sessions[0]!;
    expect(s).toMatchObject({ startedBy: 'connected', vid: 0, end: 'process-end', ready: true });
    expect(s.path).toBeUndefined();
    expect(s.features).toBe(0x950008000n);
    expect(s.protocolFeatures).toBe(0x10009n);
    expect(messageNames(s).slice(0, 7)).toEqual([
      'SET_OWNER', 'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES',
    ]);
    expect(s.messages[0]).toMatchObject({ name: 'SET_OWNER', request: 3 });
    expect(eventsOf(s, 'status').map((e) => e.value)).toEqual([0x0b, 0x0f]);
    expect(eventsOf(s, 'vring-call').map((e) => [e.index, e.fd])).toEqual([[0, 154], [1, 155]]);
    expect(eventsOf(s, 'set-vring-base').map((e) => [e.index, e.lastUsedIdx, e.lastAvailIdx])).toEqual([[0, 0, 0], [1, 0, 0]]);
    expect(eventsOf(s, 'enable').map((e) => [e.index, e.enable])).toEqual([[0, true], [1, true]]);
    const [region] = eventsOf(s, 'memory-region');
    expect(region).toMatchObject({ size: 0x10000000n, guestPhysAddr: 0x100200000n, guestVirtAddr: 0x100200000n, mmapAlign: 0x200000n, mmapOffset: 0n });
    // Debug level: every request is also confirmed.
    const processed = eventsOf(s, 'processed');
    expect(processed.length).toBeGreaterThan(10);
    expect(processed.find((p) => p.name === 'GET_FEATURES')).toMatchObject({ ok: true, needsReply: true, request: 1 });
    expect(eventsOf(s, 'ring-mapped').map((e) => e.ring)).toEqual(['desc', 'avail', 'used', 'desc', 'avail', 'used']);
  });

  it('vb3: the relaunched back-end sees the reconnect sequence of Appendix B, then a clean front-end stop', () => {
    const log = parseVhostLog(fixture('ref-vb3.log'), { ended: true });
    expect(log.sessions).toHaveLength(1);
    const s = log.sessions[0]!;
    expect(s).toMatchObject({ startedBy: 'new-device', vid: 0, end: 'peer-closed', ready: true });
    const names = messageNames(s);
    expect(names.slice(0, RECONNECT_FROM_VIRTIO_USER.length)).toEqual(RECONNECT_FROM_VIRTIO_USER);
    expect(names.slice(RECONNECT_FROM_VIRTIO_USER.length)).toEqual(CLEAN_FRONTEND_STOP);
    expect(eventsOf(s, 'enable').slice(0, 2).map((e) => e.enable)).toEqual([false, false]);
    expect(eventsOf(s, 'get-vring-base').map((e) => [e.index, e.num])).toEqual([[0, 0], [1, 0], [0, 0], [1, 0]]);
    expect(log.outside.map((e) => e.kind)).toEqual(['socket-created', 'socket-created', 'connect-failed', 'reconnecting']);
    // The session ends at the peer close; later retries are outside it.
    expect(s.events.at(-1)!.kind).toBe('peer-closed');
  });

  it('vc2: QEMU resumes both rings at the used index read from guest memory', () => {
    const log = parseVhostLog(fixture('ref-vc2.log'));
    const s = log.sessions[0]!;
    expect(s.protocolFeatures).toBe(0x10cbfn);
    expect(s.features).toBe(0x140000000n);
    expect(messageNames(s).slice(0, 6)).toEqual(['GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'SET_SLAVE_REQ_FD', 'SET_OWNER']);
    expect(s.messages[4]!.request).toBe(21);
    expect(eventsOf(s, 'set-vring-base').map((e) => [e.index, e.lastUsedIdx, e.lastAvailIdx])).toEqual([[0, 7, 7], [1, 7, 7]]);
    expect(eventsOf(s, 'status').map((e) => e.value)).toEqual([0x08, 0x0f, 0x00]);
    expect(eventsOf(s, 'get-vring-base').map((e) => e.num)).toEqual([9, 10]);
    // testpmd `quit` unregisters the socket: "free connfd N".
    expect(s.end).toBe('closed-locally');
  });

  it('vc3: client started before QEMU, connects after retries, QEMU exits', () => {
    const log = parseVhostLog(fixture('ref-vc3.log'));
    expect(log.outside.slice(0, 3).map((e) => e.kind)).toEqual(['socket-created', 'connect-failed', 'reconnecting']);
    expect(log.sessions[0]).toMatchObject({ startedBy: 'connected', vid: 0, end: 'peer-closed', ready: true });
    expect(log.outside.slice(3).map((e) => e.kind)).toEqual(['socket-created', 'connect-failed', 'reconnecting']);
  });

  it('vh2: server mode starts the session at the accepted connection', () => {
    const log = parseVhostLog(fixture('ref-vh2.log'));
    expect(log.outside.map((e) => e.kind)).toEqual(['socket-created', 'bind-ok']);
    expect(log.outside[0]).toMatchObject({ role: 'server', fd: 151 });
    expect(log.sessions).toHaveLength(1);
    expect(log.sessions[0]).toMatchObject({ startedBy: 'new-connection', connFd: 154, vid: 0 });
    expect(eventsOf(log.sessions[0]!, 'mergeable')[0]).toMatchObject({ mrgRxbuf: false, virtio1: true });
    expect(eventsOf(log.sessions[0]!, 'memory-region').map((r) => r.size)).toEqual([0xa0000n, 0x7f40000n]);
    // SET_VRING_ERR is answered with "not implemented" (a debug-level line in 22.11.11).
    expect(log.sessions[0]!.events.some((e) => e.kind === 'other' && e.text === 'not implemented')).toBe(true);
  });
});

describe('parseVhostLog on real testpmd output (path prefix, prompts interleaved)', () => {
  it('first back-end: fresh handshake, closed by its own quit', () => {
    const log = parseVhostLog(fixture('real-split-vhost0.log'), { ended: true });
    expect(log.sessions).toHaveLength(1);
    const s = log.sessions[0]!;
    expect(s.path).toMatch(/^\/tmp\/vhostsim-.*\/vhost-net\.sock$/);
    expect(s).toMatchObject({ startedBy: 'new-device', end: 'closed-locally', ready: true, features: 0x950008000n, protocolFeatures: 0x10009n });
    expect(messageNames(s)[0]).toBe('SET_OWNER');
    expect(eventsOf(s, 'processed')).toEqual([]);
  });

  it('relaunched back-end: Appendix B order, bases 0, split used-index resync, then a clean stop', () => {
    const log = parseVhostLog(fixture('real-split-vhost1.log'), { ended: true });
    expect(log.sessions).toHaveLength(1);
    const s = log.sessions[0]!;
    expect(messageNames(s)).toEqual([...RECONNECT_FROM_VIRTIO_USER, ...CLEAN_FRONTEND_STOP]);
    expect(eventsOf(s, 'set-vring-base').every((e) => e.lastAvailIdx === 0 && e.lastUsedIdx === 0)).toBe(true);
    const mismatches = eventsOf(s, 'used-idx-mismatch');
    expect(mismatches).toHaveLength(2);
    expect(mismatches.every((m) => m.lastUsedIdx === 0 && m.usedIdx > 0)).toBe(true);
    // After traffic, GET_VRING_BASE reports how far the device got.
    expect(eventsOf(s, 'get-vring-base').slice(2).every((e) => e.num > 0)).toBe(true);
    expect(s.end).toBe('peer-closed');
    expect(log.outside.slice(-3).map((e) => e.kind)).toEqual(['socket-created', 'connect-failed', 'reconnecting']);
  });

  it('packed ring at debug level: RING_PACKED negotiated, no resync warning', () => {
    const log = parseVhostLog(fixture('real-packed-debug-vhost1.log'), { ended: true });
    const s = log.sessions[0]!;
    expect(messageNames(s)).toEqual([...RECONNECT_FROM_VIRTIO_USER, ...CLEAN_FRONTEND_STOP]);
    expect(s.features! & (1n << 34n)).toBe(1n << 34n);
    expect(eventsOf(s, 'used-idx-mismatch')).toEqual([]);
    expect(eventsOf(s, 'processed').length).toBe(s.messages.length);
    expect(eventsOf(s, 'processed').every((p) => p.ok)).toBe(true);
  });
});

describe('parseVhostLog edge cases', () => {
  it('ignores the virtio-user side, whose lines also carry the socket path', () => {
    const text = fixture('real-split-virtio-user.log');
    expect(text).toContain('virtio-user reconnection succeeds');
    expect(parseVhostEvents(text)).toEqual([]);
  });

  it('strips prompts, keeps timestamps and line numbers', () => {
    const ev = parseVhostEvents([
      { text: 'testpmd> testpmd> VHOST_CONFIG: (/s) read message VHOST_USER_GET_FEATURES', t: 12.5 },
      'Port 0: link state change event',
      'VHOST_CONFIG: (/s) vring kick idx:1 file:-1',
    ]);
    expect(ev).toHaveLength(2);
    expect(ev[0]).toMatchObject({ kind: 'message', name: 'GET_FEATURES', request: 1, t: 12.5, line: 0, path: '/s' });
    expect(ev[1]).toMatchObject({ kind: 'vring-kick', index: 1, fd: -1, line: 2 });
    expect(ev[1]!.t).toBeUndefined();
  });

  it('keeps sessions of different sockets apart', () => {
    const log = parseVhostLog([
      'VHOST_CONFIG: (/a) new device, handle is 0',
      'VHOST_CONFIG: (/b) new device, handle is 1',
      'VHOST_CONFIG: (/a) read message VHOST_USER_GET_FEATURES',
      'VHOST_CONFIG: (/b) read message VHOST_USER_SET_OWNER',
      'VHOST_CONFIG: (/a) vhost peer closed',
      'VHOST_CONFIG: (/b) read message VHOST_USER_GET_FEATURES',
    ]);
    expect(log.sessions.map((s) => [s.path, s.vid, s.end, messageNames(s).join(',')])).toEqual([
      ['/a', 0, 'peer-closed', 'GET_FEATURES'],
      ['/b', 1, 'open', 'SET_OWNER,GET_FEATURES'],
    ]);
  });

  it('a new device on a socket that is still talking supersedes the old session', () => {
    const log = parseVhostLog([
      'VHOST_CONFIG: (/a) new device, handle is 0',
      'VHOST_CONFIG: (/a) read message VHOST_USER_GET_FEATURES',
      'VHOST_CONFIG: (/a) new device, handle is 1',
    ]);
    expect(log.sessions.map((s) => [s.vid, s.end])).toEqual([[0, 'superseded'], [1, 'open']]);
  });

  it('classifies failures', () => {
    const ev = parseVhostEvents([
      'VHOST_CONFIG: (/a) vhost read message for VHOST_USER_SET_MEM_TABLE failed',
      'VHOST_CONFIG: (/a) processing VHOST_USER_GET_CONFIG failed.',
      'VHOST_CONFIG: (/a) vhost message (req: 36) was not handled.',
      'VHOST_CONFIG: (/a) read message VHOST_USER_SOMETHING_NEW',
      'VHOST_CONFIG: (/a) failed to bind: Address already in use; remove it and try again',
      'VHOST_CONFIG: (/a) expect 0 FDs for request VHOST_USER_SET_OWNER, received 1',
    ]);
    expect(ev.map((e) => e.kind)).toEqual(['error', 'processed', 'error', 'message', 'bind-failed', 'error']);
    expect(ev[1]).toMatchObject({ ok: false, name: 'GET_CONFIG', request: 24 });
    expect(ev[3]).toMatchObject({ name: 'SOMETHING_NEW', request: undefined });
    expect(ev[4]).toMatchObject({ error: 'Address already in use' });
  });
});
