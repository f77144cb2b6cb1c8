import { describe, expect, it } from 'vitest';
import { Scheduler } from '../sim/scheduler.ts';
import { SocketNamespace, type AnyFd, type SocketFd } from '../transport/index.ts';
import { makeRequest, makeReply } from '../protocol/codec.ts';
import { FrontendRequest } from '../protocol/requests.ts';
import type { DecodedMessage } from '../protocol/decoder.ts';
import { MessageChannel } from './message-channel.ts';
import { TraceRecorder } from './trace-recorder.ts';

function pair(chunking: 'whole' | 'bytes' = 'whole') {
  const sched = new Scheduler({ seed: 7 });
  const ns = new SocketNamespace({ scheduler: sched, faults: { chunking } });
  const [a, b] = ns.socketpair({ faults: { chunking } }) as [SocketFd, SocketFd];
  const recorder = new TraceRecorder(sched);
  const front = new MessageChannel(a, { role: 'frontend', recorder });
  const back = new MessageChannel(b, { role: 'backend' });
  const got: DecodedMessage<AnyFd>[] = [];
  const closed: boolean[] = [];
  back.on({ message: (m) => got.push(m), fatal: () => closed.push(true), closed: () => closed.push(false) });
  const replies: DecodedMessage<AnyFd>[] = [];
  const frontClosed: boolean[] = [];
  front.on({ message: (m) => replies.push(m), fatal: () => undefined, closed: () => frontClosed.push(true) });
  return { sched, ns, a, b, front, back, got, closed, replies, frontClosed, recorder };
}

describe('MessageChannel', () => {
  it.each(['whole', 'bytes'] as const)('delivers whole messages with their fds and traces both directions (%s chunks)', (chunking) => {
    const p = pair(chunking);
    const call = p.ns.eventfd('call0');
    expect(p.front.send(makeRequest(FrontendRequest.GET_FEATURES))).toBeUndefined();
    expect(p.front.send(makeRequest(FrontendRequest.SET_VRING_CALL, { kind: 'vringFile', index: 0, noFd: false }, { fds: [call] }))).toBeUndefined();
    p.sched.run();
    expect(p.got.map((m) => m.header.request)).toEqual([FrontendRequest.GET_FEATURES, FrontendRequest.SET_VRING_CALL]);
    expect(p.got[0].fds).toHaveLength(0);
    expect(p.got[1].fds).toHaveLength(1);
    expect(p.got[1].fds[0].kind).toBe('eventfd');
    expect(p.back.send(makeReply(p.got[0].header, { kind: 'features', features: 0x1234n }))).toBeUndefined();
    p.sched.run();
    expect(p.replies).toHaveLength(1);
    const dirs = p.recorder.records.map((r) => ('dir' in r ? `${r.dir}:${r.request}` : ''));
    expect(dirs).toEqual(['f2b:1', 'f2b:13', 'b2f:1']);
  });

  it('drops the connection when the framing is lost, so the peer sees the close', () => {
    const p = pair();
    const bad = new Uint8Array(12);
    new DataView(bad.buffer).setUint32(0, 1, true);
    new DataView(bad.buffer).setUint32(4, 0x2, true); // version 2: not a vhost-user stream
    p.a.send(bad);
    p.sched.run();
    expect(p.closed).toEqual([true]);
    expect(p.frontClosed).toEqual([true]);
  });

  it('refuses to send on a closed connection and traces nothing for it', () => {
    const p = pair();
    p.front.close();
    const err = p.front.send(makeRequest(FrontendRequest.GET_FEATURES));
    expect(err).toBeDefined();
    expect(p.recorder.records).toHaveLength(0);
  });
});
