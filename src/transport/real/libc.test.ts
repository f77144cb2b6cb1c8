import { afterEach, describe, expect, it } from 'vitest';
import {
  errno,
  errnoName,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  fdType,
  memfdCreate,
  openFdNumbers,
  peekByte,
  pollNow,
  recvChunk,
  sendChunk,
  socketpairCreate,
  sysClose,
  sysDup,
  type Received,
} from './libc.ts';
import { fdsOpenedSince, skipReason } from './test-support.ts';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);

function recv(fd: number, max = 100, maxFds = 8): Received {
  const r = recvChunk(fd, max, maxFds);
  if (typeof r === 'number') throw new Error(`recvmsg: ${errnoName(-r)}`);
  return r;
}

describe.skipIf(skipReason !== undefined)(`libc through koffi${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  const opened: number[] = [];
  const track = (...fds: number[]): number[] => {
    opened.push(...fds);
    return fds;
  };
  afterEach(() => {
    for (const fd of opened.splice(0)) sysClose(fd);
  });

  it('names errnos both ways', () => {
    expect(errnoName(errno('EAGAIN'))).toBe('EAGAIN');
    expect(errnoName(errno('ECONNREFUSED'))).toBe('ECONNREFUSED');
    expect(errnoName(100000)).toBe('E100000');
  });

  it('sends bytes and an SCM_RIGHTS fd in one sendmsg, received with the first byte', () => {
    const [a, b] = track(...socketpairCreate());
    const [m] = track(memfdCreate('t', 4096));
    expect(sendChunk(a, text('hello'), [m])).toBe(5);
    const r = recv(b);
    track(...r.fds);
    expect(str(r.bytes)).toBe('hello');
    expect(r.fds).toHaveLength(1);
    expect(r.fds[0]).not.toBe(m);
    expect(fdType(r.fds[0])).toBe('file');
    expect(r.ctrunc).toBe(false);
  });

  it('shows the kernel joining earlier bytes in front of a message with fds, and stopping after it', () => {
    // This is why unix-socket.ts reads vhost-user messages header-first, as DPDK does.
    const [a, b] = track(...socketpairCreate());
    const [e] = track(eventfdCreate(0, false));
    sendChunk(a, text('AAAA'), []);
    sendChunk(a, text('BBBB'), [e]);
    sendChunk(a, text('CCCC'), []);
    const first = recv(b);
    track(...first.fds);
    expect(str(first.bytes)).toBe('AAAABBBB');
    expect(first.fds).toHaveLength(1);
    expect(fdType(first.fds[0])).toBe('eventfd');
    expect(str(recv(b).bytes)).toBe('CCCC');
    expect(recvChunk(b, 100, 8)).toBe(-errno('EAGAIN'));
  });

  it('reports a truncated control buffer and keeps the fds that fit', () => {
    const [a, b] = track(...socketpairCreate());
    const e = track(eventfdCreate(0, false), eventfdCreate(0, false), eventfdCreate(0, false));
    sendChunk(a, text('x'), e);
    const r = recv(b, 100, 2);
    track(...r.fds);
    expect(r.ctrunc).toBe(true);
    expect(r.fds).toHaveLength(2);
  });

  it('peeks without consuming, and sees end of stream and EPIPE after the peer closes', () => {
    const [a, b] = socketpairCreate();
    track(b);
    expect(peekByte(b)).toBe(-errno('EAGAIN'));
    expect(pollNow(b, { readable: true }).readable).toBe(false);
    sendChunk(a, text('z'), []);
    expect(pollNow(b, { readable: true }).readable).toBe(true);
    expect(peekByte(b)).toBe(1);
    expect(str(recv(b).bytes)).toBe('z');
    expect(sysClose(a)).toBe(0);
    expect(peekByte(b)).toBe(0);
    expect(recv(b).bytes).toHaveLength(0);
    expect(sendChunk(b, text('late'), [])).toBe(-errno('EPIPE'));
  });

  it('counts with an eventfd: writes add, a read takes the sum, an empty read is 0n', () => {
    const [e] = track(eventfdCreate(2, false));
    expect(eventfdWrite(e, 3n)).toBe(0);
    expect(eventfdRead(e)).toBe(5n);
    expect(eventfdRead(e)).toBe(0n);
    expect(eventfdWrite(e, 0xfffffffffffffffen)).toBe(0);
    expect(eventfdWrite(e, 1n)).toBe(-errno('EAGAIN'));
    const [s] = track(eventfdCreate(2, true));
    expect(eventfdRead(s)).toBe(1n);
    expect(eventfdRead(s)).toBe(1n);
    expect(eventfdRead(s)).toBe(0n);
  });

  it('dups to a new number and closes each number once', () => {
    const before = openFdNumbers();
    const m = memfdCreate('d', 4096);
    const d = sysDup(m);
    expect(d).not.toBe(m);
    expect(fdsOpenedSince(before)).toHaveLength(2);
    expect(sysClose(m)).toBe(0);
    expect(sysClose(d)).toBe(0);
    expect(sysClose(d)).toBe(-errno('EBADF'));
    expect(fdsOpenedSince(before)).toEqual([]);
  });
});
