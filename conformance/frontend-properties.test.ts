/**
 * Properties of the front-end models (virtio-user-22.11; qemu-7.2 as chardev server and as
 * client with reconnect=1), split and packed, against the minimal scripted back-end of
 * src/endpoint/frontend/testing.ts, over the in-process socket with random chunking, delays,
 * back-ends vanishing at any message, and traffic in the rings. Virtual time only; every
 * failure replays from its seed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Scheduler } from '../src/sim/scheduler.ts';
import { SocketNamespace, type ChannelFaults, type Chunking } from '../src/transport/index.ts';
import { TraceRecorder } from '../src/endpoint/trace-recorder.ts';
import { SplitDevice } from '../src/ring/split/index.ts';
import { DescriptorChain } from '../src/ring/types.ts';
import type { PackedDriver } from '../src/ring/packed/index.ts';
import { VirtioFeature as F, featureMask, DeviceStatus as S } from '../src/virtio/index.ts';
import { QemuFrontend, VirtioUserFrontend, type AnyFrontend, type GuestDriverName } from '../src/endpoint/frontend/index.ts';
import { DPDK_TESTPMD_FEATURES, ScriptedBackend, runUntil, type ScriptedBackendOptions } from '../src/endpoint/frontend/testing.ts';

/** Multiplies every property's run count (VHOSTSIM_PROP_SCALE=10 for a longer search). */
const SCALE = Number(process.env.VHOSTSIM_PROP_SCALE ?? '1');
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });
const PATH = 'run/fe.sock';

type Variant = 'virtio-user' | 'qemu-server' | 'qemu-client';
type Ring = 'split' | 'packed';

interface Rig {
  sched: Scheduler;
  ns: SocketNamespace;
  fe: AnyFrontend;
  variant: Variant;
  recorder: TraceRecorder;
  /** Starts a back-end of the right role (client of a server front-end, or a server). */
  backend(o?: Partial<ScriptedBackendOptions>): ScriptedBackend;
}

function rig(variant: Variant, ring: Ring, seed: number, faults?: ChannelFaults, extra: { driver?: GuestDriverName; connectDelay?: number } = {}): Rig {
  const sched = new Scheduler({ seed });
  const ns = new SocketNamespace({
    scheduler: sched,
    ...(faults !== undefined ? { faults } : {}),
    ...(extra.connectDelay !== undefined ? { connectDelay: { min: 0, max: extra.connectDelay }, acceptDelay: { min: 0, max: extra.connectDelay } } : {}),
  });
  const recorder = new TraceRecorder(sched);
  const fe: AnyFrontend =
    variant === 'virtio-user'
      ? new VirtioUserFrontend({ ns, path: PATH, ramSize: 1 << 20, packedVq: ring === 'packed', recorder })
      : new QemuFrontend({
          ns,
          path: PATH,
          ramSize: 2 << 20,
          packed: ring === 'packed',
          guestDriver: extra.driver ?? (ring === 'packed' ? 'virtio-net' : 'ipxe'),
          chardev: variant === 'qemu-server' ? { mode: 'server' } : { mode: 'client', reconnect: 1 },
          recorder,
        });
  fe.start();
  const backend = (o: Partial<ScriptedBackendOptions> = {}) =>
    new ScriptedBackend({ ns, path: PATH, mode: variant === 'qemu-client' ? 'server' : 'client', retry: 1, ...o }).start();
  return { sched, ns, fe, variant, recorder, backend };
}

const running = (r: Rig) => r.fe.phase === 'running';

/** Request names and the values the profile decides, of one back-end connection. */
function transcript(be: ScriptedBackend, conn?: number): string[] {
  return be.received
    .filter((m) => conn === undefined || m.conn === conn)
    .map((m) => {
      const d = m.decoded;
      if (d === undefined) return m.name;
      switch (d.kind) {
        case 'features':
        case 'protocolFeatures':
          return `${m.name}(0x${d.features.toString(16)})`;
        case 'status':
          return `${m.name}(0x${d.status.toString(16)},${m.flags})`;
        case 'vringState':
          return `${m.name}(${d.index},${m.name === 'GET_VRING_BASE' ? '' : d.num})`;
        case 'vringFile':
          return `${m.name}(${d.index},${m.nfds})`;
        default:
          return m.name;
      }
    });
}

/** The fault-free run of each variant: the order every faulty run must reproduce. */
const canonical = new Map<string, string[]>();
function canonicalTranscript(variant: Variant, ring: Ring): string[] {
  const key = `${variant}/${ring}`;
  let t = canonical.get(key);
  if (t === undefined) {
    const r = rig(variant, ring, 1);
    const be = r.backend();
    runUntil(r.sched, () => be.isReady && running(r), 60);
    t = transcript(be);
    canonical.set(key, t);
  }
  return t;
}

const variantArb = fc.constantFrom<Variant>('virtio-user', 'qemu-server', 'qemu-client');
const ringArb = fc.constantFrom<Ring>('split', 'packed');
const chunkingArb: fc.Arbitrary<Chunking> = fc.oneof(
  fc.constant<Chunking>('whole'),
  fc.constant<Chunking>('bytes'),
  fc.constant<Chunking>('random'),
  fc.integer({ min: 1, max: 24 }).map((size): Chunking => ({ kind: 'fixed', size })),
);
const faultsArb: fc.Arbitrary<ChannelFaults> = fc.record({
  chunking: chunkingArb,
  delay: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.01, noNaN: true }).map((max) => ({ min: 0, max }))),
  chunkGap: fc.oneof(fc.constant(0), fc.constant({ min: 0, max: 0.001 })),
  coalesce: fc.boolean(),
});

const INIT_QEMU = ['GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'SET_SLAVE_REQ_FD', 'SET_OWNER', 'GET_FEATURES', 'SET_VRING_CALL', 'SET_VRING_ERR', 'SET_VRING_CALL', 'SET_VRING_ERR'];
const VU_STOP = ['SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'GET_VRING_BASE', 'GET_VRING_BASE'];
const VU_CORE = [
  'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_VRING_CALL', 'SET_VRING_CALL', 'SET_FEATURES', 'SET_STATUS', 'GET_STATUS',
  'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK',
  'SET_VRING_ENABLE', 'SET_VRING_ENABLE', 'SET_STATUS',
];
const QEMU_START_TAIL = ['SET_FEATURES', 'GET_STATUS', 'SET_STATUS', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL', 'GET_STATUS', 'SET_STATUS'];

/**
 * The session the model must run on a back-end that follows a vanished one. virtio-user:
 * the probe again if the first probe failed; otherwise the reconnect, which begins by
 * stopping the rings exactly when the first session got as far as handing them over
 * ('started', after which the status holds DRIVER_OK).
 */
function isValidFollowUp(variant: Variant, names: string[], canonicalNames: string[], first: { probeFailed: boolean; started: boolean }): boolean {
  if (variant === 'virtio-user') {
    if (first.probeFailed) return eq(names, canonicalNames);
    return eq(names, first.started ? [...VU_STOP, ...VU_CORE] : VU_CORE);
  }
  // QEMU: the full init, any number of queue-attach rounds (guest boot), then the start.
  if (!eq(names.slice(0, INIT_QEMU.length), INIT_QEMU) || !eq(names.slice(-QEMU_START_TAIL.length), QEMU_START_TAIL)) return false;
  const mid = names.slice(INIT_QEMU.length, names.length - QEMU_START_TAIL.length);
  return mid.length >= 2 && mid.length % 2 === 0 && mid.every((n) => n === 'SET_VRING_ENABLE');
}

function eq(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

describe('front-end properties', () => {
  it('handshake completes under any chunking and delays, in the fault-free order, for both profiles, split and packed', () => {
    fc.assert(
      fc.property(variantArb, ringArb, faultsArb, fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0.005), (variant, ring, faults, seed, cd) => {
        const want = canonicalTranscript(variant, ring);
        const r = rig(variant, ring, seed, faults, { connectDelay: cd });
        const be = r.backend();
        expect(runUntil(r.sched, () => be.isReady && running(r), 60)).toBe(true);
        expect(transcript(be)).toEqual(want);
        expect(be.status & S.DRIVER_OK).toBe(S.DRIVER_OK);
      }),
      runs(60),
    );
  });

  it('the same seed gives the same run, message for message', () => {
    fc.assert(
      fc.property(variantArb, ringArb, faultsArb, fc.integer({ min: 0, max: 2 ** 31 - 1 }), (variant, ring, faults, seed) => {
        const once = () => {
          const r = rig(variant, ring, seed, faults);
          const be = r.backend({ vanishAt: 9 });
          r.sched.run({ until: 3 });
          const be2 = r.backend();
          runUntil(r.sched, () => be2.isReady && running(r), 60);
          return { trace: r.recorder.records, events: r.fe.events.map((e) => `${e.type}@${e.t}`), n: be.received.length };
        };
        expect(once()).toEqual(once());
      }),
      runs(20),
    );
  });

  it('after the back-end vanishes at any message k (before, inside or after its reply), a new back-end gets a valid session and reaches DRIVER_OK within bounded virtual time', () => {
    fc.assert(
      fc.property(
        variantArb,
        ringArb,
        fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
        fc.constantFrom<'before-reply' | 'after-reply' | 'mid-reply'>('before-reply', 'after-reply', 'mid-reply'),
        faultsArb,
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (variant, ring, frac, mode, faults, seed) => {
          const want = canonicalTranscript(variant, ring);
          const k = 1 + Math.floor(frac * want.length);
          const r = rig(variant, ring, seed, faults);
          const be1 = r.backend({ vanishAt: k, vanishMode: mode });
          runUntil(r.sched, () => be1.received.length >= k && !be1.connected, 60);
          r.sched.run({ until: r.sched.now + 3 });
          const first = {
            probeFailed: r.fe.events.some((e) => e.detail === 'probe failed'),
            started: r.fe.eventsOf('started').length > 0,
          };
          const t0 = r.sched.now;
          const be2 = r.backend();
          expect(runUntil(r.sched, () => be2.isReady && running(r), 60)).toBe(true);
          expect(r.sched.now - t0).toBeLessThan(10);
          const names = be2.names();
          expect(isValidFollowUp(variant, names, want.map((n) => n.replace(/\(.*$/, '')), first)).toBe(true);
          // The last word is always DRIVER_OK, and every ring base is the profile's.
          const last = be2.received.at(-1)!;
          expect(last.name).toBe('SET_STATUS');
          expect(last.decoded?.kind === 'status' && (last.decoded.status & S.DRIVER_OK) !== 0).toBe(true);
          const bases = be2.messages('SET_VRING_BASE').map((m) => (m.decoded?.kind === 'vringState' ? m.decoded.num : -1));
          expect(bases).toEqual([0, 1].map(() => (ring === 'packed' ? (variant === 'virtio-user' ? 0x8000 : 0x80008000) : 0)));
        },
      ),
      runs(120),
    );
  });

  it('QEMU keeps the acked features across reconnects and refuses a back-end that offers fewer of them; others are taken with the same SET_FEATURES', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<GuestDriverName>('ipxe', 'virtio-net', 'virtio-pmd'),
        fc.constantFrom<Variant>('qemu-server', 'qemu-client'),
        fc.bigInt({ min: 0n, max: (1n << 36n) - 1n }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (driver, variant, dropMask, seed) => {
          const r = rig(variant, 'split', seed, undefined, { driver });
          const be1 = r.backend();
          runUntil(r.sched, () => be1.isReady && running(r), 60);
          const first = be1.features;
          be1.stop();
          runUntil(r.sched, () => r.fe.phase === 'link-down' && r.fe.idle, 60);
          const offer = DPDK_TESTPMD_FEATURES & ~dropMask;
          const be2 = r.backend({ features: offer, retry: 1000 });
          r.sched.run({ until: r.sched.now + 5 });
          const lacking = first & ~offer;
          if (lacking !== 0n) {
            expect(r.fe.eventsOf('refused').at(-1)?.error?.upstream).toBe(`vhost lacks feature mask 0x${lacking.toString(16)} for backend`);
            expect(be2.messages('SET_FEATURES')).toEqual([]);
            expect(be2.connected).toBe(false);
            be2.stop();
            const be3 = r.backend();
            expect(runUntil(r.sched, () => be3.isReady && running(r), 60)).toBe(true);
            expect(be3.features).toBe(first);
          } else {
            expect(runUntil(r.sched, () => be2.isReady && running(r), 60)).toBe(true);
            expect(be2.features).toBe(first);
          }
        },
      ),
      runs(60),
    );
  });

  it('QEMU split rings: after the back-end is lost, last_avail_idx is restored from used->idx and sent as the next base (indices wrap at 2^16)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ vring: fc.integer({ min: 0, max: 1 }), posted: fc.integer({ min: 1, max: 200 }), done: fc.double({ min: 0, max: 1, noNaN: true }) }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 70000 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (batches, start, seed) => {
          const r = rig('qemu-server', 'split', seed);
          const be1 = r.backend({ tamper: undefined });
          runUntil(r.sched, () => be1.isReady && running(r), 60);
          const fe = r.fe as QemuFrontend;
          const used = [0, 0];
          const devs = [0, 1].map((i) => {
            const l = fe.guest.vring(i).layout!;
            if (l.kind !== 'split') throw new Error('split');
            return new SplitDevice(fe.guest.memory, l, { indirect: false, eventIdx: false, inOrder: false });
          });
          // Move both rings to a random starting index first (the indices are free-running).
          for (const i of [0, 1]) {
            let left = start % 65536;
            while (left > 0) {
              const n = Math.min(left, 256);
              pump(fe, devs[i], i, n, n);
              used[i] += n;
              left -= n;
            }
          }
          for (const b of batches) {
            const inflight = fe.guest.vring(b.vring).driver!.inFlight;
            const posted = Math.min(b.posted, 256 - inflight);
            const done = Math.floor(b.done * posted);
            used[b.vring] += pump(fe, devs[b.vring], b.vring, posted, done);
          }
          be1.stop();
          runUntil(r.sched, () => fe.phase === 'link-down' && fe.idle, 60);
          const be2 = r.backend();
          runUntil(r.sched, () => be2.isReady && running(r), 60);
          const bases = be2.messages('SET_VRING_BASE').map((m) => (m.decoded?.kind === 'vringState' ? m.decoded.num : -1));
          expect(bases).toEqual(used.map((u) => u % 65536));
          expect(bases).toEqual([0, 1].map((i) => fe.guest.usedIdx(i)));
        },
      ),
      runs(40),
    );
  });

  it('virtio-user split rings survive a reconnect untouched (same driver, avail index kept, base 0 sent)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 256 }), fc.integer({ min: 0, max: 256 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (n0, n1, seed) => {
        const r = rig('virtio-user', 'split', seed);
        const be1 = r.backend();
        runUntil(r.sched, () => be1.isReady && running(r), 60);
        const drivers = [0, 1].map((i) => r.fe.guest.vring(i).driver);
        post(r.fe, 0, n0);
        post(r.fe, 1, n1);
        be1.stop();
        const be2 = r.backend();
        runUntil(r.sched, () => be2.isReady && running(r), 60);
        expect([0, 1].map((i) => r.fe.guest.vring(i).driver)).toEqual(drivers);
        expect([r.fe.guest.availIdx(0), r.fe.guest.availIdx(1)]).toEqual([n0, n1]);
        expect(r.fe.eventsOf('rings-reset')).toEqual([]);
        expect(be2.messages('SET_VRING_BASE').map((m) => (m.decoded?.kind === 'vringState' ? m.decoded.num : -1))).toEqual([0, 0]);
      }),
      runs(30),
    );
  });

  it('virtio-user packed rings are reset on every reconnect after DRIVER_OK: in-flight buffers dropped, positions back to 0 with wrap 1, base 1<<15', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 256 }), fc.integer({ min: 0, max: 256 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (n0, n1, rounds, seed) => {
        const r = rig('virtio-user', 'packed', seed);
        let be = r.backend();
        runUntil(r.sched, () => be.isReady && running(r), 60);
        for (let k = 0; k < rounds; k++) {
          post(r.fe, 0, n0);
          post(r.fe, 1, n1);
          const before = r.fe.eventsOf('rings-reset').length;
          be.stop();
          be = r.backend();
          runUntil(r.sched, () => be.isReady && running(r), 60);
          const resets = r.fe.eventsOf('rings-reset');
          expect(resets.length).toBe(before + 1);
          expect(resets.at(-1)!.dropped).toBe(n0 + n1);
          for (const i of [0, 1]) {
            expect((r.fe.guest.vring(i).driver as PackedDriver).positions()).toEqual({ nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true });
          }
          expect(be.messages('SET_VRING_BASE').map((m) => (m.decoded?.kind === 'vringState' ? m.decoded.num : -1))).toEqual([0x8000, 0x8000]);
        }
      }),
      runs(30),
    );
  });

  it('the features a reconnected virtio-user acks never grow, and equal the first session’s when the offer is the same', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 36n) - 1n }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (dropMask, seed) => {
        const r = rig('virtio-user', 'split', seed);
        const be1 = r.backend();
        runUntil(r.sched, () => be1.isReady && running(r), 60);
        const first = be1.features;
        be1.stop();
        // A back-end must keep VERSION_1 and bit 30 to be usable at all by this test's readiness rule.
        const offer = DPDK_TESTPMD_FEATURES & ~(dropMask & ~featureMask(F.VERSION_1, F.PROTOCOL_FEATURES));
        const be2 = r.backend({ features: offer });
        runUntil(r.sched, () => be2.isReady && running(r), 60);
        expect(be2.features & ~first).toBe(0n);
        expect(be2.features).toBe(first & (offer | featureMask(F.PROTOCOL_FEATURES)));
      }),
      runs(40),
    );
  });
});

function post(fe: AnyFrontend, i: number, n: number): void {
  const v = fe.guest.vring(i);
  const area = fe.guest.bufferArea();
  for (let k = 0; k < n; k++) v.driver!.add([{ addr: area.gpa + k * 64, len: 64, writable: i === 0 }], k);
  v.driver!.publish();
}

/** Posts `posted` buffers on vring `i`, completes `done` of the oldest ones with the device half, reclaims them; returns `done`. */
function pump(fe: QemuFrontend, dev: SplitDevice, i: number, posted: number, done: number): number {
  const v = fe.guest.vring(i);
  post(fe, i, posted);
  const chain = new DescriptorChain(256);
  for (let k = 0; k < done; k++) {
    if (!dev.pop(chain)) throw new Error('nothing to pop');
    dev.push(chain.id, 0);
  }
  dev.flush();
  const out = { token: undefined as unknown, len: 0, id: 0 };
  while (v.driver!.reclaim(out)) {
    /* the guest takes its completed buffers back */
  }
  return done;
}
