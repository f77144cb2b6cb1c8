import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from '../memory/index.ts';
import { RingError } from '../ring/errors.ts';
import { checkModelInvariants, isMemoryFault, judgeResume } from './invariants.ts';
import { parseScenario } from './scenario.ts';
import { SchedulerEventError } from './scheduler.ts';
import type { TraceRecord } from './trace.ts';

const scenario = (ring: 'split' | 'packed') =>
  parseScenario({ name: 't', ring, topology: 'pvp', vms: 1, queues: 1, queueSize: 256, frontend: 'qemu-7.2', backend: 'dpdk-22.11', guest: 'virtio-pmd', steps: [{ op: 'launch-backend' }] });

// GET_FEATURES request (1), flags 1, no payload; and its reply with 8 bytes.
const GET_FEATURES: TraceRecord = { t: 0, dir: 'f2b', request: 1, flags: 1, size: 0, nfds: 0, payload: '' };
const REPLY: TraceRecord = { t: 0, dir: 'b2f', request: 1, flags: 5, size: 8, nfds: 0, payload: '0000000000000000' };

describe('model invariants', () => {
  const inv = (r: ReturnType<typeof checkModelInvariants>, name: string) => r.find((i) => i.name === name)!;

  it('hold on a well-formed, complete trace', () => {
    const r = checkModelInvariants({ trace: [{ t: 0, event: 'session', n: 1 }, GET_FEATURES, REPLY, { t: 1, event: 'closed', n: 1 }], escaped: [] });
    expect(r.every((i) => i.verdict === 'holds')).toBe(true);
    expect(inv(r, 'well-formed-messages').checks).toBe(2);
  });

  it('a malformed message breaks well-formed-messages, naming its trace line', () => {
    const bad: TraceRecord = { ...REPLY, size: 3, payload: '000000' };
    const r = checkModelInvariants({ trace: [{ t: 0, event: 'session', n: 1 }, GET_FEATURES, bad], escaped: [] });
    expect(inv(r, 'well-formed-messages')).toMatchObject({ verdict: 'violated', firstViolation: { traceLine: 3 } });
  });

  it('a message outside a session or an unmatched close breaks trace-complete', () => {
    expect(inv(checkModelInvariants({ trace: [GET_FEATURES], escaped: [] }), 'trace-complete').verdict).toBe('violated');
    expect(inv(checkModelInvariants({ trace: [{ t: 0, event: 'closed', n: 1 }], escaped: [] }), 'trace-complete').verdict).toBe('violated');
  });

  it('a ring or memory error escaping as a crash breaks memory safety; any other error aborts the trace', () => {
    const ring = new SchedulerEventError('pop', 1, 1, new RingError('avail-overrun', 'too far'));
    expect(isMemoryFault(ring)).toBe(true);
    expect(isMemoryFault(new GuestMemoryError('unmapped', 'x'))).toBe(true);
    expect(isMemoryFault(new Error('x'))).toBe(false);
    expect(inv(checkModelInvariants({ trace: [], escaped: [{ t: 1, where: 'event pop', error: ring.cause }] }), 'memory-safety').verdict).toBe('violated');
    const other = checkModelInvariants({ trace: [], escaped: [{ t: 1, where: 'step', error: new TypeError('boom') }] });
    expect(inv(other, 'memory-safety').verdict).toBe('holds');
    expect(inv(other, 'trace-complete').firstViolation!.reason).toMatch(/aborted \(boom\)/);
  });

  it('determinism is reported only when checked', () => {
    expect(inv(checkModelInvariants({ trace: [], escaped: [] }), 'deterministic')).toMatchObject({ verdict: 'holds', checks: 0 });
    expect(inv(checkModelInvariants({ trace: [], escaped: [], determinism: { same: false, hashA: 'a'.repeat(64), hashB: 'b'.repeat(64) } }), 'deterministic').verdict).toBe('violated');
  });
});

describe('judgeResume (ring state across a reconnect)', () => {
  const base = { vm: 0, vring: 0, t: 5, connection: 2 };

  it('split after a back-end quit: resumes at used->idx, where the old back-end stopped', () => {
    const after = { vm: 0, vring: 0, t: 4, end: 'backend-lost' as const, lastAvail: { idx: 700 }, used: { idx: 700 } };
    expect(judgeResume(scenario('split'), { ...base, avail: { idx: 700 }, used: { idx: 700 }, after }).verdict).toBe('holds');
    // A back-end starting at 0 is nothing the model predicts.
    expect(judgeResume(scenario('split'), { ...base, avail: { idx: 0 }, used: { idx: 0 }, after }).verdict).toBe('violated');
  });

  it("packed under QEMU 7.2 after a lost back-end: the stale base is a modelled failure with its mechanism", () => {
    const after = { vm: 0, vring: 1, t: 4, end: 'backend-lost' as const, lastAvail: { idx: 100, wrap: false }, used: { idx: 100, wrap: false }, frontendBase: { idx: 0, wrap: true } };
    const v = judgeResume(scenario('packed'), { ...base, vring: 1, avail: { idx: 0, wrap: true }, used: { idx: 0, wrap: true }, after });
    expect(v.verdict).toBe('fails-as-modelled');
    expect(v.mechanism).toMatchObject({ profile: 'qemu-7.2', messages: [{ request: 'SET_VRING_BASE', vring: 1, value: 0x8000 }] });
    expect(v.mechanism!.lostState![0]).toMatch(/100\/wrap 0/);
  });

  it('after a guest reset the ring restarts at 0 (wrap 1 for packed)', () => {
    const after = { vm: 0, vring: 0, t: 4, end: 'device-reset' as const, lastAvail: { idx: 9, wrap: true }, used: { idx: 9, wrap: true } };
    expect(judgeResume(scenario('packed'), { ...base, avail: { idx: 0, wrap: true }, used: { idx: 0, wrap: true }, after }).verdict).toBe('holds');
    expect(judgeResume(scenario('packed'), { ...base, avail: { idx: 9, wrap: true }, used: { idx: 9, wrap: true }, after }).verdict).toBe('violated');
  });
});
