import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ACCEPTS,
  DPDK_22_11_SESSION,
  PHASES,
  SESSION_FIELDS,
  SESSION_INVARIANT,
  accepts,
  allowedLoss,
  apply,
  expectedResumeIndex,
  frontendSequence,
  inFlight,
  initialSession,
  phaseOf,
  run,
  sessionViolations,
  survivesReconnect,
  type FrontendProfile,
  type ModelRequest,
  type Session,
  type SessionEvent,
} from './session.ts';

const req = (name: ModelRequest, vring?: number, value?: number | bigint): SessionEvent => ({
  type: 'request',
  name,
  ...(vring !== undefined ? { vring } : {}),
  ...(value !== undefined ? { value } : {}),
});

function connected(): Session {
  return apply(initialSession(), { type: 'connect' }).session;
}

function runAll(s: Session, events: readonly SessionEvent[]): Session {
  const r = run(s, events);
  expect(r.refused).toBeUndefined();
  return r.session;
}

/** A QEMU 7.2 session driven to running (split unless said otherwise). */
function qemuRunning(ring: 'split' | 'packed' = 'split'): Session {
  const s = runAll(connected(), frontendSequence('qemu-7.2', 'connect', { ring }));
  return runAll(s, frontendSequence('qemu-7.2', 'start', { ring }));
}

const SPLIT_FEATURES = 0x140008000n; // VERSION_1 | PROTOCOL_FEATURES | MRG_RXBUF

describe('session lifecycle: which requests each phase accepts', () => {
  it('accepts nothing before the socket is up, and only the handshake right after', () => {
    const s0 = initialSession();
    expect(phaseOf(s0)).toBe('disconnected');
    expect(accepts(s0, req('GET_FEATURES'))).toEqual({ ok: false, reason: "GET_FEATURES is not accepted in phase 'disconnected'" });
    const s = connected();
    expect(phaseOf(s)).toBe('connected');
    // QEMU sends CALL, ERR and ENABLE before SET_FEATURES (§4.1); virtio-user sends
    // GET_VRING_BASE to a new back-end (§5.4).
    for (const name of ['SET_VRING_CALL', 'SET_VRING_ERR', 'GET_VRING_BASE'] as const) expect(accepts(s, req(name, 0)).ok).toBe(true);
    expect(accepts(s, req('SET_VRING_ENABLE', 0, 1)).ok).toBe(true);
    expect(accepts(s, req('SET_MEM_TABLE')).ok).toBe(false);
    expect(accepts(s, req('SET_VRING_NUM', 0, 256)).ok).toBe(false);
  });

  it('takes memory after features, and ring set-up after memory', () => {
    let s = runAll(connected(), [req('SET_FEATURES', undefined, SPLIT_FEATURES)]);
    expect(phaseOf(s)).toBe('features-negotiated');
    expect(accepts(s, req('SET_VRING_ADDR', 0)).ok).toBe(false);
    s = runAll(s, [req('SET_MEM_TABLE')]);
    expect(phaseOf(s)).toBe('memory-set');
    expect(accepts(s, req('SET_VRING_ADDR', 0)).ok).toBe(true);
  });

  it('while running refuses renegotiation and ring resizing or rebasing', () => {
    const s = qemuRunning();
    expect(phaseOf(s)).toBe('running');
    for (const e of [req('SET_PROTOCOL_FEATURES', undefined, 0x10cbfn), req('SET_OWNER'), req('SET_VRING_NUM', 0, 256), req('SET_VRING_BASE', 0, 0)]) {
      expect(accepts(s, e).ok, e.type === 'request' ? e.name : '').toBe(false);
    }
    for (const e of [req('GET_FEATURES'), req('SET_VRING_ENABLE', 0, 0), req('SET_MEM_TABLE'), req('SET_VRING_ADDR', 0), req('GET_VRING_BASE', 0)]) {
      expect(accepts(s, e).ok).toBe(true);
    }
    expect([...ACCEPTS.running].sort()).not.toContain('SET_VRING_NUM');
  });

  it('refuses SET_VRING_BASE on a started ring until GET_VRING_BASE stops it', () => {
    // The ring-state rule of the vhost-user spec ("Ring states"): the base is set while stopped.
    expect(accepts(qemuRunning(), req('SET_VRING_BASE', 0, 7)).ok).toBe(false);
    const start = frontendSequence('qemu-7.2', 'start', { ring: 'split' });
    const ring0Kicked = start.findIndex((e) => e.type === 'request' && e.name === 'SET_VRING_KICK') + 1;
    let s = runAll(runAll(connected(), frontendSequence('qemu-7.2', 'connect', { ring: 'split' })), start.slice(0, ring0Kicked));
    expect(phaseOf(s)).toBe('memory-set');
    expect(accepts(s, req('SET_VRING_BASE', 0, 7))).toEqual({ ok: false, reason: 'vring 0 is started: stop it with GET_VRING_BASE first' });
    expect(accepts(s, req('SET_VRING_BASE', 1, 7)).ok).toBe(true);
    s = runAll(s, [req('GET_VRING_BASE', 0)]);
    expect(accepts(s, req('SET_VRING_BASE', 0, 7)).ok).toBe(true);
  });

  it('checks values as DPDK does: offered features, protocol features, sizes, indices', () => {
    const s = runAll(connected(), [req('SET_FEATURES', undefined, SPLIT_FEATURES), req('SET_MEM_TABLE')]);
    expect(accepts(s, req('SET_FEATURES', undefined, 1n << 33n))).toEqual({ ok: false, reason: 'received invalid negotiated features.' });
    expect(accepts(s, req('SET_PROTOCOL_FEATURES', undefined, 1n << 12n))).toEqual({ ok: false, reason: 'received invalid protocol features.' });
    expect(accepts(s, req('SET_VRING_NUM', 0, 1000)).ok).toBe(false); // split: power of two
    expect(accepts(s, req('SET_VRING_NUM', 0, 32768)).ok).toBe(true);
    expect(accepts(s, req('SET_VRING_NUM', 0, 65536)).ok).toBe(false);
    expect(accepts(s, req('SET_VRING_CALL', 256))).toEqual({ ok: false, reason: 'invalid vring index: 256' });
    expect(accepts(s, req('SET_VRING_ENABLE', 0, 2)).ok).toBe(false);
    const packed = runAll(connected(), [req('SET_FEATURES', undefined, SPLIT_FEATURES | (1n << 34n)), req('SET_MEM_TABLE')]);
    expect(accepts(packed, req('SET_VRING_NUM', 0, 1000)).ok).toBe(true); // packed: any size ≤ 32768
  });

  it('while running refuses a change of features except LOG_ALL', () => {
    const s = qemuRunning();
    expect(accepts(s, req('SET_FEATURES', undefined, SPLIT_FEATURES | 1n))).toEqual({ ok: false, reason: 'features changed while device is running.' });
    expect(accepts(s, req('SET_FEATURES', undefined, SPLIT_FEATURES | (1n << 26n))).ok).toBe(true);
  });
});

describe('session lifecycle: the front-ends’ real orders', () => {
  it('QEMU 7.2: ready only at SET_STATUS(0x0f), after every ring is configured (§4.2 [OBS])', () => {
    const s = runAll(connected(), frontendSequence('qemu-7.2', 'connect', { ring: 'split' }));
    expect(phaseOf(s)).toBe('connected');
    const start = frontendSequence('qemu-7.2', 'start', { ring: 'split' });
    const almost = runAll(s, start.slice(0, -1));
    expect(phaseOf(almost)).toBe('rings-configured');
    expect(phaseOf(runAll(almost, start.slice(-1)))).toBe('running');
  });

  it('virtio-user 22.11: enables pair 0 after the kicks, ready at SET_STATUS(0x0f) (§4.5)', () => {
    const s = runAll(connected(), frontendSequence('virtio-user-22.11', 'connect', { ring: 'packed' }));
    const start = frontendSequence('virtio-user-22.11', 'start', { ring: 'packed' });
    expect(start.filter((e) => e.type === 'request' && e.name === 'SET_VRING_BASE').map((e) => (e as { value: number }).value)).toEqual([0x8000, 0x8000]);
    const almost = runAll(s, start.slice(0, -1));
    expect(phaseOf(almost)).toBe('rings-configured');
    expect(phaseOf(runAll(almost, start.slice(-1)))).toBe('running');
  });

  it('without STATUS negotiated the last ring’s KICK makes it ready; without bit 30 a KICK enables', () => {
    // The call fds came with the init (§4.1), so DPDK's readiness needs only the last kick.
    const noStatus = frontendSequence('qemu-7.2', 'connect', { ring: 'split', protocolFeatures: 0x0cbfn });
    let s = runAll(connected(), noStatus);
    const start = frontendSequence('qemu-7.2', 'start', { ring: 'split' });
    const lastKick = start.map((e) => e.type === 'request' && e.name === 'SET_VRING_KICK').lastIndexOf(true);
    expect(phaseOf(runAll(s, start.slice(0, lastKick)))).toBe('memory-set');
    expect(phaseOf(runAll(s, start.slice(0, lastKick + 1)))).toBe('running');
    // Legacy negotiation: no PROTOCOL_FEATURES bit, no ENABLE messages at all.
    s = connected();
    const legacy = [
      req('SET_FEATURES', undefined, 1n << 32n),
      req('SET_MEM_TABLE'),
      ...[0, 1].flatMap((i) => [req('SET_VRING_NUM', i, 256), req('SET_VRING_ADDR', i), req('SET_VRING_KICK', i), req('SET_VRING_CALL', i)]),
    ];
    expect(phaseOf(runAll(s, legacy))).toBe('running');
  });

  it('GET_VRING_BASE stops the device; a restart must re-send NUM, ADDR, KICK and CALL (§5.7)', () => {
    let s = runAll(qemuRunning(), frontendSequence('qemu-7.2', 'stop', { ring: 'split' }));
    expect(phaseOf(s)).toBe('stopped');
    expect(s.running).toBe(false);
    expect(s.vrings[0]).toMatchObject({ kick: false, call: false, addr: false, stopped: true, enabled: true });
    expect(s.vrings[0]!.num).toBeUndefined();
    s = runAll(s, [req('SET_VRING_KICK', 0)]);
    expect(s.vrings[0]!.stopped).toBe(true); // a kick alone does not restart an unmapped ring
    s = runAll(s, frontendSequence('qemu-7.2', 'start', { ring: 'split' }));
    expect(phaseOf(s)).toBe('running');
  });

  it('RESET_OWNER is a full device reset; FEATURES_OK without features is cleared; no MQ keeps one pair', () => {
    const r = runAll(qemuRunning(), [req('RESET_OWNER')]);
    expect(phaseOf(r)).toBe('connected');
    expect(r.features).toBeUndefined();
    expect(r.protocolFeatures).toBeUndefined();
    expect(runAll(connected(), [req('SET_STATUS', undefined, 0x0b)]).status).toBe(0x03);
    const wide = runAll(connected(), [0, 1, 2, 3].map((i) => req('SET_VRING_CALL', i)));
    expect(wide.vrings).toHaveLength(4);
    expect(runAll(wide, [req('SET_FEATURES', undefined, SPLIT_FEATURES)]).vrings).toHaveLength(2);
    expect(runAll(wide, [req('SET_FEATURES', undefined, SPLIT_FEATURES | (1n << 22n))]).vrings).toHaveLength(4);
  });

  it('a disconnect ends the session; the next connection starts from nothing (DPDK keeps nothing, §5.1)', () => {
    const s = apply(qemuRunning(), { type: 'disconnect' }).session;
    expect(phaseOf(s)).toBe('disconnected');
    expect(s).toMatchObject({ connected: false, connections: 1, memTable: false, vrings: [], running: false, status: 0 });
    expect(sessionViolations(s)).toEqual([]);
    const again = apply(s, { type: 'connect' }).session;
    expect(again.connections).toBe(2);
    expect(accepts(again, { type: 'connect' }).ok).toBe(false);
  });

  for (const profile of ['qemu-7.2', 'virtio-user-22.11'] as const) {
    for (const ring of ['split', 'packed'] as const) {
      it(`${profile} ${ring}: the reconnect sequence brings a new back-end to running`, () => {
        const s = runAll(connected(), frontendSequence(profile, 'reconnect', { ring, queues: 2 }));
        expect(phaseOf(s)).toBe('running');
      });
    }
  }
  it('virtio-user’s reconnect begins with ENABLE(0) and GET_VRING_BASE, and sends no SET_OWNER (§5.4, Appendix B)', () => {
    const seq = frontendSequence('virtio-user-22.11', 'reconnect', { ring: 'split' }).map((e) => (e.type === 'request' ? e.name : e.type));
    expect(seq.slice(0, 4)).toEqual(['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE']);
    expect(seq).not.toContain('SET_OWNER');
  });
});

describe('what survives a reconnect (§5.4)', () => {
  it('DPDK 22.11 keeps nothing', () => {
    for (const f of SESSION_FIELDS) {
      const a = survivesReconnect('dpdk-22.11', f, 'split');
      expect(a.survives, f).toBe(false);
      expect(a.outcome).toBe('lost');
    }
  });

  it('QEMU 7.2 keeps acked features, ring GPAs, size, enable state; split last_avail_idx restored from used idx, packed kept', () => {
    for (const f of ['acked-features', 'ring-addresses', 'ring-size', 'vring-enable', 'mem-table', 'kick-call-fds', 'device-status'] as const) {
      expect(survivesReconnect('qemu-7.2', f).outcome, f).toBe('kept');
    }
    expect(survivesReconnect('qemu-7.2', 'protocol-features').outcome).toBe('renegotiated');
    expect(survivesReconnect('qemu-7.2', 'last-avail-idx', 'split')).toMatchObject({ outcome: 'restored', survives: true });
    expect(survivesReconnect('qemu-7.2', 'last-avail-idx', 'packed')).toMatchObject({ outcome: 'kept', survives: true });
    expect(survivesReconnect('qemu-7.2', 'inflight-region').outcome).toBe('unused');
  });

  it('virtio-user 22.11 (server=1) keeps split rings and resets packed ones', () => {
    expect(survivesReconnect('virtio-user-22.11', 'last-avail-idx', 'split').outcome).toBe('restored');
    expect(survivesReconnect('virtio-user-22.11', 'last-avail-idx', 'packed')).toMatchObject({ outcome: 'reset', survives: false });
    expect(survivesReconnect('virtio-user-22.11', 'acked-features').survives).toBe(true);
  });

  it('asks for the ring kind where the answer depends on it', () => {
    expect(() => survivesReconnect('qemu-7.2', 'last-avail-idx')).toThrow(/depends on the ring kind/);
    expect(() => survivesReconnect('dpdk-22.11', 'last-avail-idx')).not.toThrow();
  });
});

describe('expectedResumeIndex', () => {
  const split = (lastAvail: number, used: number) => ({ size: 1024, lastAvail: { idx: lastAvail }, used: { idx: used } });

  it('QEMU split after losing the back-end: base = used->idx from guest memory (Appendix A: 7)', () => {
    expect(expectedResumeIndex('qemu-7.2', 'split', { end: 'backend-lost', ...split(7, 7) })).toMatchObject({
      base: 7,
      avail: { idx: 7 },
      replayed: 0,
      exact: true,
      source: 'used-idx-in-guest-memory',
    });
    expect(expectedResumeIndex('qemu-7.2', 'split', { end: 'backend-lost', ...split(10, 7) })).toMatchObject({ base: 7, replayed: 3, dropped: 0, exact: false });
    expect(expectedResumeIndex('qemu-7.2', 'split', { end: 'backend-lost', ...split(2, 65534) })).toMatchObject({ base: 65534, replayed: 4 });
  });

  it('QEMU split after a clean stop sends the reply, but DPDK resyncs to used->idx', () => {
    expect(expectedResumeIndex('qemu-7.2', 'split', { end: 'frontend-stopped', ...split(9, 9) })).toMatchObject({ base: 9, source: 'get-vring-base-reply', exact: true });
    expect(expectedResumeIndex('qemu-7.2', 'split', { end: 'frontend-stopped', ...split(10, 7) })).toMatchObject({
      base: 10,
      avail: { idx: 7 },
      replayed: 3,
      source: 'used-idx-in-guest-memory',
    });
  });

  it('virtio-user split sends base 0 and lands on used->idx', () => {
    expect(expectedResumeIndex('virtio-user-22.11', 'split', { end: 'backend-lost', ...split(12, 12) })).toMatchObject({ base: 0, avail: { idx: 12 }, exact: true });
  });

  it('virtio-user packed resets the ring and drops what was in flight', () => {
    const r = expectedResumeIndex('virtio-user-22.11', 'packed', { end: 'backend-lost', size: 256, lastAvail: { idx: 5, wrap: false }, used: { idx: 250, wrap: true } });
    expect(r).toMatchObject({ base: 0x8000, avail: { idx: 0, wrap: true }, replayed: 0, dropped: 11, source: 'ring-reset', exact: false });
  });

  it('QEMU packed after a clean stop: DPDK returns the avail half only and sets used = avail (§5.6)', () => {
    const r = expectedResumeIndex('qemu-7.2', 'packed', { end: 'frontend-stopped', size: 1024, lastAvail: { idx: 100, wrap: false }, used: { idx: 98, wrap: false } });
    expect(r).toMatchObject({ base: 100, avail: { idx: 100, wrap: false }, used: { idx: 100, wrap: false }, dropped: 2, exact: false });
  });

  it('QEMU packed after losing the back-end resumes at the stale copy it held', () => {
    const at = { size: 1024, lastAvail: { idx: 300, wrap: true }, used: { idx: 300, wrap: true } };
    const stale = expectedResumeIndex('qemu-7.2', 'packed', { end: 'backend-lost', ...at, frontendBase: { idx: 0, wrap: true } });
    expect(stale).toMatchObject({ base: 0x8000, avail: { idx: 0, wrap: true }, exact: false, replayed: null, dropped: null, source: 'front-end-stale-copy' });
    const lucky = expectedResumeIndex('qemu-7.2', 'packed', { end: 'backend-lost', ...at, frontendBase: { idx: 300, wrap: true } });
    expect(lucky).toMatchObject({ base: 0x8000 | 300, exact: true, replayed: 0, dropped: 0 });
    expect(() => expectedResumeIndex('qemu-7.2', 'packed', { end: 'backend-lost', ...at })).toThrow(/frontendBase/);
  });

  it('a device reset starts every ring afresh', () => {
    const at = { size: 1024, lastAvail: { idx: 5, wrap: true }, used: { idx: 3, wrap: true } };
    expect(expectedResumeIndex('qemu-7.2', 'packed', { end: 'device-reset', ...at })).toMatchObject({ base: 0x8000, exact: true });
    expect(expectedResumeIndex('qemu-7.2', 'split', { end: 'device-reset', ...at })).toMatchObject({ base: 0, avail: { idx: 0 } });
  });

  it('counts packed in-flight buffers across a wrap, and refuses positions more than a ring apart', () => {
    expect(inFlight('packed', 8, { idx: 2, wrap: false }, { idx: 6, wrap: true })).toBe(4);
    expect(() => inFlight('packed', 8, { idx: 7, wrap: false }, { idx: 2, wrap: true })).toThrow(RangeError);
  });
});

describe('allowedLoss', () => {
  it('split without inflight tracking: TX may be resent, RX buffers re-offered', () => {
    for (const p of ['qemu-7.2', 'virtio-user-22.11'] as const) {
      expect(allowedLoss(p, 'split', { tx: 3, rx: 5 })).toMatchObject({ duplicates: 3, lost: 5, bounded: true });
    }
  });
  it('packed with virtio-user: queues reset, in-flight dropped', () => {
    expect(allowedLoss('virtio-user-22.11', 'packed', { tx: 3, rx: 5 })).toMatchObject({ duplicates: 0, lost: 8, bounded: true });
  });
  it('packed with QEMU 7.2: no bound', () => {
    expect(allowedLoss('qemu-7.2', 'packed', { tx: 0, rx: 0 })).toMatchObject({ duplicates: null, lost: null, bounded: false });
  });
  it('with inflight tracking: nothing lost, nothing duplicated', () => {
    for (const ring of ['split', 'packed'] as const) {
      expect(allowedLoss('qemu-7.2', ring, { tx: 3, rx: 5 }, { inflightTracking: true })).toMatchObject({ duplicates: 0, lost: 0 });
    }
  });
  it('refuses negative counts', () => {
    expect(() => allowedLoss('qemu-7.2', 'split', { tx: -1, rx: 0 })).toThrow(RangeError);
  });
  it('agrees with expectedResumeIndex: what is replayed on a split TX ring is what may be duplicated', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 1024 }), fc.constantFrom<FrontendProfile>('qemu-7.2', 'virtio-user-22.11'), (used, pending, profile) => {
        const r = expectedResumeIndex(profile, 'split', { end: 'backend-lost', size: 1024, lastAvail: { idx: (used + pending) & 0xffff }, used: { idx: used } });
        expect(r.replayed).toBe(allowedLoss(profile, 'split', { tx: pending, rx: 0 }).duplicates);
        expect(r.avail.idx).toBe(used);
      }),
    );
  });
});

// ---- properties -------------------------------------------------------------------------------

const MODEL_REQUESTS: readonly ModelRequest[] = [...new Set(PHASES.flatMap((p) => [...ACCEPTS[p]]))];

const eventArb: fc.Arbitrary<SessionEvent> = fc.oneof(
  { weight: 1, arbitrary: fc.constant<SessionEvent>({ type: 'connect' }) },
  { weight: 1, arbitrary: fc.constant<SessionEvent>({ type: 'disconnect' }) },
  {
    weight: 20,
    arbitrary: fc
      .record({
        name: fc.constantFrom(...MODEL_REQUESTS),
        vring: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
        pick: fc.integer({ min: 0, max: 5 }),
        flip: fc.boolean(),
      })
      .map(({ name, vring, pick, flip }): SessionEvent => {
        let value: number | bigint | undefined;
        if (name === 'SET_FEATURES') value = [SPLIT_FEATURES, SPLIT_FEATURES | (1n << 34n), 1n << 32n, SPLIT_FEATURES | (1n << 22n), SPLIT_FEATURES | (1n << 26n), 1n << 33n][pick];
        else if (name === 'SET_PROTOCOL_FEATURES') value = [0x10cbfn, 0x10009n, 0x0cbfn, 0n, 1n << 12n, 0x10cbfn][pick];
        else if (name === 'SET_VRING_NUM') value = [256, 1024, 1000, 32768, 0, 65536][pick];
        else if (name === 'SET_VRING_BASE') value = [0, 7, 0x8000, 65535, 3, 0][pick];
        else if (name === 'SET_VRING_ENABLE') value = flip ? 1 : pick === 5 ? 2 : 0;
        else if (name === 'SET_STATUS') value = [0, 0x08, 0x0b, 0x0f, 0x04, 0x100][pick];
        return { type: 'request', name, ...(vring !== undefined ? { vring } : {}), ...(value !== undefined ? { value } : {}) };
      }),
  },
);

// Random single events mixed with whole front-end sequences, so that running and stopped
// sessions are common and then get perturbed.
const eventsArb: fc.Arbitrary<SessionEvent[]> = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: eventArb.map((e) => [e]) },
      {
        weight: 1,
        arbitrary: fc
          .record({
            profile: fc.constantFrom<FrontendProfile>('qemu-7.2', 'virtio-user-22.11'),
            kind: fc.constantFrom('connect' as const, 'start' as const, 'stop' as const, 'reconnect' as const),
            ring: fc.constantFrom('split' as const, 'packed' as const),
            queues: fc.integer({ min: 1, max: 2 }),
          })
          .map(({ profile, kind, ring, queues }) => frontendSequence(profile, kind, { ring, queues })),
      },
    ),
    { maxLength: 30 },
  )
  .map((chunks) => chunks.flat());

describe(`property: ${SESSION_INVARIANT}`, () => {
  it('every sequence of accepted events keeps the session well formed; refused ones change nothing', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(eventsArb, fc.boolean(), (events, startConnected) => {
        let s = startConnected ? connected() : initialSession(DPDK_22_11_SESSION);
        for (const e of events) {
          seen.add(phaseOf(s));
          const phase = phaseOf(s);
          const r = apply(s, e);
          if (!r.accepted) {
            expect(r.session).toBe(s);
            continue;
          }
          if (e.type === 'request') expect(ACCEPTS[phase].has(e.name)).toBe(true);
          s = r.session;
          expect(sessionViolations(s)).toEqual([]);
        }
      }),
      { numRuns: 500 },
    );
    // The generator reaches every phase, so the invariant was checked in each.
    expect([...seen].sort()).toEqual([...PHASES].sort());
  });

  it('from any reachable state a disconnect and a front-end’s reconnect sequence reach running', () => {
    fc.assert(
      fc.property(
        eventsArb,
        fc.constantFrom<FrontendProfile>('qemu-7.2', 'virtio-user-22.11'),
        fc.constantFrom('split' as const, 'packed' as const),
        (events, profile, ring) => {
          let s = connected();
          for (const e of events) s = apply(s, e).session;
          if (s.connected) s = apply(s, { type: 'disconnect' }).session;
          s = apply(s, { type: 'connect' }).session;
          const r = run(s, frontendSequence(profile, 'reconnect', { ring }));
          expect(r.refused).toBeUndefined();
          expect(phaseOf(r.session)).toBe('running');
        },
      ),
      { numRuns: 200 },
    );
  });
});
