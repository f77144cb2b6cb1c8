/**
 * Properties of the dpdk-22.11 back-end model under fast-check: a scripted DPDK virtio-user
 * front-end (the handshake of reference/traces) over the in-process socket, with random
 * chunking, delays, cuts, crashes, garbage and hostile guest memory. Everything runs in
 * virtual time on the seeded scheduler; a failure replays from its seed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encode, FrontendRequest as R, type Message, type Payload } from '../src/protocol/index.ts';
import { closeAfter, closeMidMessage, type AnyFd, type Chunking, type ChannelFaults } from '../src/transport/index.ts';
import { DescriptorChain } from '../src/ring/types.ts';
import { Rng } from '../src/sim/rng.ts';
import { DpdkBackend } from '../src/endpoint/backend/backend.ts';
import type { VhostLogEvent } from '../src/endpoint/backend/log.ts';
import { encodeBackendMessage } from '../src/endpoint/backend/vhost-device.ts';
import { DeviceHarness, Guest, ScriptedFrontend, simHost, virtioUserHandshake, type ScriptStep } from '../src/endpoint/backend/testing.ts';

const PATH = '/tmp/vhost-prop.sock';
/** Multiplies every property's run count (VHOSTSIM_PROP_SCALE=10 for a longer search). */
const SCALE = Number(process.env.VHOSTSIM_PROP_SCALE ?? '1');
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });
const readyCount = (evs: readonly VhostLogEvent[]) => evs.filter((e) => e.kind === 'ready').length;

/** A virtio-user front-end (server=1) and a DPDK back-end (client=1) on one simulated host. */
function setup(seed: number, faults?: ChannelFaults | ((n: number) => ChannelFaults | undefined), opts: { packed?: boolean } = {}) {
  const policy = typeof faults === 'function' ? (info: { pathIndex: number }) => faults(info.pathIndex) : faults;
  const { sched, ns } = simHost(seed, policy as never);
  const guest = new Guest(ns, { packed: opts.packed ?? false, queueSize: 256 });
  const fe = new ScriptedFrontend({ ns, path: PATH, guest });
  fe.start();
  const be = new DpdkBackend({ ns, path: PATH, profile: { client: true } });
  return { sched, ns, guest, fe, be };
}

/** The replies virtio-user gets in session 1 of the capture. */
const SESSION1_REPLIES = [
  { kind: 'features', features: 0xd7c66e7cbn },
  { kind: 'protocolFeatures', features: 0x10cbfn },
  { kind: 'ack', value: 0n },
  { kind: 'status', status: 0xb },
  { kind: 'status', status: 0xb },
  { kind: 'ack', value: 0n },
  { kind: 'ack', value: 0n },
];

const arbChunking: fc.Arbitrary<Chunking> = fc.constantFrom<Chunking>('whole', 'bytes', 'random', { kind: 'random', maxChunks: 3 }, { kind: 'fixed', size: 5 });
const arbDelay = fc.double({ min: 0, max: 0.05, noNaN: true });

describe('handshake over the in-process socket', () => {
  it('property: with any chunking and delays, the capture handshake reaches ready exactly once and gets the capture answers', () => {
    fc.assert(
      fc.property(fc.integer(), arbChunking, fc.boolean(), arbDelay, arbDelay, fc.boolean(), (seed, chunking, coalesce, delay, gap, packed) => {
        const { sched, fe, be } = setup(seed, { chunking, coalesce, delay: { min: 0, max: delay }, chunkGap: { min: 0, max: gap } }, { packed });
        be.start();
        sched.run({ until: 60 });
        expect(be.device?.running).toBe(true);
        expect(readyCount(be.events)).toBe(1);
        expect(fe.current!.done).toBe(true);
        expect(fe.current!.replies.map((m) => m.decoded)).toEqual(SESSION1_REPLIES);
        expect(fe.current!.replies.every((m) => m.header.flags === 0x5)).toBe(true);
        expect(be.device!.internalErrors).toEqual([]);
      }),
      runs(60),
    );
  });
});

describe('reconnect (fact sheet §5.1)', () => {
  // Session 1 carries 22 front-end and 7 back-end messages.
  const TOTAL = 29;

  it('property: a connection cut after any message k of the handshake (whole or mid-message) is followed by a reconnect that reaches ready', () => {
    fc.assert(
      fc.property(fc.integer(), fc.boolean(), fc.integer({ min: 0, max: 11 }), arbChunking, (seed, mid, cutBytes, chunking) => {
        for (let k = 1; k <= TOTAL; k++) {
          const cut = mid ? closeMidMessage('any', k, cutBytes) : closeAfter('any', k);
          const { sched, fe, be } = setup(seed, (n) => (n === 1 ? { chunking, cuts: [cut] } : { chunking }));
          be.start();
          sched.run({ until: 30 });
          expect(be.connections).toBe(2);
          expect(be.device?.running).toBe(true);
          expect(fe.sessions).toHaveLength(2);
          expect(fe.sessions[1]!.done).toBe(true);
          // Ready at most once on the cut connection, exactly once on the next.
          const r = readyCount(be.events);
          expect(r === 1 || r === 2).toBe(true);
          const lastDevice = be.events.map((e) => e.kind).lastIndexOf('new-device');
          expect(readyCount(be.events.slice(lastDevice))).toBe(1);
          expect(be.device!.internalErrors).toEqual([]);
        }
      }),
      runs(12),
    );
  });

  it('property: a back-end killed or quit after front-end message k is relaunched, and the new back-end reaches ready on the next connection', () => {
    fc.assert(
      fc.property(fc.integer(), fc.boolean(), fc.double({ min: 0, max: 3, noNaN: true }), (seed, graceful, relaunchAfter) => {
        for (let k = 1; k <= 22; k++) {
          const { sched, ns, fe, be } = setup(seed);
          let seen = 0;
          let second: DpdkBackend | undefined;
          const first = new DpdkBackend({
            ns,
            path: PATH,
            profile: { client: true },
            onEvent: (e) => {
              if (e.kind !== 'message' || ++seen !== k) return;
              sched.after(0, () => (graceful ? first.quit() : first.kill()));
              sched.after(relaunchAfter, () => {
                second = new DpdkBackend({ ns, path: PATH, profile: { client: true } });
                second.start();
              });
            },
          });
          void be;
          first.start();
          sched.run({ until: 30 });
          expect(first.state).toBe('stopped');
          expect(second?.device?.running).toBe(true);
          expect(readyCount(second!.events)).toBe(1);
          expect(fe.current!.done).toBe(true);
          // Nothing survives: the fresh back-end answered the reconnect's GET_VRING_BASE with 0.
          const bases = fe.current!.replies.filter((m) => m.header.request === R.GET_VRING_BASE).map((m) => m.decoded);
          expect(bases).toEqual([
            { kind: 'vringState', index: 0, num: 0 },
            { kind: 'vringState', index: 1, num: 0 },
          ]);
        }
      }),
      runs(8),
    );
  });

  it('property: while the front-end is away, the client retries every second, forever, and connects within a second of its return', () => {
    fc.assert(
      fc.property(fc.integer(), fc.double({ min: 0.1, max: 5, noNaN: true }), fc.double({ min: 0.01, max: 40, noNaN: true }), (seed, upAt, away) => {
        const { sched, ns, guest, fe, be } = setup(seed);
        be.start();
        sched.at(upAt, () => fe.stop()); // virtio-user quits
        const back = upAt + away;
        sched.at(back, () => new ScriptedFrontend({ ns, path: PATH, guest }).start());
        sched.run({ until: back + 5 });
        const failed = be.events.filter((e) => e.kind === 'connect-failed').map((e) => e.t!);
        const connected = be.events.filter((e) => e.kind === 'connected').map((e) => e.t!);
        expect(failed.length).toBeGreaterThanOrEqual(1);
        const tf = failed[failed.length - 1]!;
        const tc = connected[connected.length - 1]!;
        expect(tc).toBeGreaterThanOrEqual(back);
        expect(tc - back).toBeLessThanOrEqual(1 + 1e-9);
        expect(Math.abs(tc - tf - Math.round(tc - tf))).toBeLessThan(1e-6); // on the 1 s grid of the retry thread
        expect(be.device?.running).toBe(true);
      }),
      runs(40),
    );
  });
});

// ---- fuzzing -------------------------------------------------------------------------------

const OWN_REPLY = new Set([R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.GET_QUEUE_NUM, R.GET_VRING_BASE, R.SET_LOG_BASE, R.GET_STATUS, R.POSTCOPY_END, R.GET_INFLIGHT_FD]);

const arbU64Payload = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((v) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
});
const arbStatePayload = fc.tuple(fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 300 }), fc.nat()), fc.oneof(fc.constantFrom(0, 1, 256, 0x8000, 32768, 32769), fc.nat())).map(([i, n]) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, i >>> 0, true);
  new DataView(b.buffer).setUint32(4, n >>> 0, true);
  return b;
});
const arbAddrPayload = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.nat(3), fc.array(fc.integer({ min: -0x2000, max: 0x102000 }), { minLength: 4, maxLength: 4 })).map(([i, f, a]) => {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, i, true);
  dv.setUint32(4, f, true);
  a.forEach((x, j) => dv.setBigUint64(8 + 8 * j, BigInt(Math.max(0, 0x100c3e000 + x)), true));
  return b;
});
const arbTablePayload = fc.array(fc.tuple(fc.nat(0x200000), fc.oneof(fc.constant(0x100000), fc.nat(0x300000)), fc.nat(0x200000), fc.constantFrom(0, 8, 3, 4096)), { maxLength: 3 }).map((rs) => {
  const b = new Uint8Array(8 + 32 * rs.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, rs.length, true);
  rs.forEach(([g, s, u, o], i) => {
    dv.setBigUint64(8 + 32 * i, BigInt(g), true);
    dv.setBigUint64(16 + 32 * i, BigInt(s), true);
    dv.setBigUint64(24 + 32 * i, BigInt(0x100c3e000 + u), true);
    dv.setBigUint64(32 + 32 * i, BigInt(o), true);
  });
  return b;
});
const arbPayload = fc.oneof(fc.uint8Array({ maxLength: 48 }), arbU64Payload, arbStatePayload, arbAddrPayload, arbTablePayload, fc.uint8Array({ minLength: 24, maxLength: 24 }));
const arbFuzzMessage = fc.record({
  request: fc.oneof(fc.integer({ min: 0, max: 45 }), fc.constantFrom(R.SET_MEM_TABLE, R.SET_VRING_ADDR, R.SET_VRING_KICK, R.GET_VRING_BASE, R.SET_STATUS), fc.nat()),
  flags: fc.oneof(fc.constantFrom(0x1, 0x9, 0x0, 0x5, 0xd, 0x2), fc.nat()),
  payload: arbPayload,
  fds: fc.array(fc.constantFrom('eventfd', 'memfd', 'socket'), { maxLength: 10 }),
});
type FuzzMessage = typeof arbFuzzMessage extends fc.Arbitrary<infer T> ? T : never;

describe('robustness', () => {
  it('property: fuzzed messages never throw; a failure gets ack 1 with NEED_REPLY and a closed connection without; every fd is closed or kept; the next connection still reaches ready', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 30 }), fc.array(arbFuzzMessage, { maxLength: 30 }), fc.boolean(), (prefix, msgs, inflight) => {
        const h = new DeviceHarness({ inflight, postcopySupport: true });
        const guest = new Guest(h.ns);
        const steps = virtioUserHandshake(guest, { newEventfd: () => h.eventfd() }).slice(0, prefix);
        h.play(steps);
        const given: AnyFd[] = [];
        const mk = (k: string): AnyFd => {
          const fd = k === 'eventfd' ? h.eventfd() : k === 'memfd' ? h.memfd(0x2000) : h.ns.socketpair()[1];
          given.push(fd);
          return fd;
        };
        for (const m of msgs as FuzzMessage[]) {
          if (h.device.isDestroyed) h.newDevice();
          const fds = m.fds.map(mk);
          const postcopy = h.device.awaitingPostcopyAck;
          const bytes = encode({ request: m.request >>> 0, flags: m.flags >>> 0, payload: m.payload } as Message<AnyFd>, { validate: false }).bytes;
          const r = h.sendRaw(bytes, fds);
          expect(h.device.internalErrors).toEqual([]);
          // Every reply is a well-formed vhost-user reply.
          for (const rep of r.replies) {
            expect(rep.flags & 0x7).toBe(0x5);
            expect(() => encodeBackendMessage(rep)).not.toThrow();
          }
          if (postcopy) {
            expect(r.close).toBe(true);
          } else {
            const codes = r.events.flatMap((e) => (e.kind === 'error' ? [e.code] : []));
            const fatal = codes.includes('alloc-queue-failed') || codes.includes('read-failed');
            const failed = codes.includes('processing-failed') || codes.includes('not-handled');
            const needReply = (m.flags & 0x8) !== 0;
            const acks = r.replies.filter((x) => (x.payload as Payload | undefined)?.kind === 'ack' && x.request === (m.request >>> 0));
            if (fatal) {
              expect(r.close).toBe(true);
              expect(r.replies).toEqual([]);
            } else if (failed) {
              if (needReply) {
                expect(r.close).toBe(false);
                expect(acks.map((a) => (a.payload as { value: bigint }).value)).toEqual([1n]);
              } else {
                expect(r.close).toBe(true);
                expect(acks).toEqual([]);
              }
            } else if (!h.device.awaitingPostcopyAck) {
              expect(r.close).toBe(false);
              if (needReply || OWN_REPLY.has(m.request)) expect(r.replies).toHaveLength(1);
              if (needReply && !OWN_REPLY.has(m.request)) expect(acks.map((a) => (a.payload as { value: bigint }).value)).toEqual([0n]);
              if (!needReply && !OWN_REPLY.has(m.request)) expect(r.replies).toEqual([]);
            }
          }
          // fds the device did not keep are closed at once.
          if (r.close) h.device.destroy();
        }
        h.device.destroy();
        // No leak: every fd handed to the back-end is closed once its device is gone.
        expect(given.filter((f) => !f.closed).map((f) => f.kind)).toEqual([]);
        // And the next connection still works.
        h.newDevice();
        h.handshake();
        expect(h.device.running).toBe(true);
      }),
      runs(300),
    );
  });

  it('property: garbage and truncated messages on the socket never throw out of the scheduler, and the next connection reaches ready', () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.integer({ min: 0, max: 25 }),
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 700 }), { maxLength: 4 }),
        fc.option(fc.integer({ min: 1, max: 50 })),
        arbChunking,
        (seed, prefix, garbage, truncateAt, chunking) => {
          const { sched, ns } = simHost(seed, { chunking });
          const guest = new Guest(ns);
          const fe = new ScriptedFrontend({
            ns,
            path: PATH,
            guest,
            script: (s, ne) => {
              const hs = virtioUserHandshake(guest, { session: s, newEventfd: ne });
              if (s > 1) return hs;
              const steps: ScriptStep[] = hs.slice(0, prefix).filter((x) => !x.expectReply);
              for (const g of garbage) steps.push({ label: 'garbage', msg: hs[0]!.msg, raw: { bytes: g }, expectReply: false });
              if (truncateAt !== null) {
                const whole = encode(hs[hs.length - 1]!.msg).bytes;
                steps.push({ label: 'truncated', msg: hs[0]!.msg, raw: { bytes: whole.subarray(0, Math.min(truncateAt, whole.length - 1)) }, expectReply: false });
              }
              steps.push({ label: 'crash', msg: hs[0]!.msg, close: true, expectReply: false });
              return steps;
            },
          });
          fe.start();
          const be = new DpdkBackend({ ns, path: PATH, profile: { client: true } });
          be.start();
          expect(() => sched.run({ until: 30 })).not.toThrow();
          expect(be.device?.running).toBe(true);
          expect(fe.current!.done).toBe(true);
          expect(be.devices.every((d) => d.internalErrors.length === 0)).toBe(true);
        },
      ),
      runs(150),
    );
  });
});

// ---- memory safety ------------------------------------------------------------------------

const GUARD = 4096;
const GUARD_BYTE = 0xa5;

let popped = 0;

describe('memory safety', () => {
  it('property: hostile memory tables, ring addresses, indices and ring contents never make the back-end write outside the regions it was given', () => {
    // Sane values often (so rings come up and the data path runs), hostile ones the rest of the time.
    const mostly = <T,>(sane: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>) => fc.oneof({ weight: 6, arbitrary: sane }, { weight: 1, arbitrary: hostile });
    const arbRegion = fc.record({
      gpa: mostly(fc.constant(0x100000), fc.oneof(fc.constant(0), fc.nat(0x400000))),
      size: mostly(fc.constant(0x20000), fc.integer({ min: 0, max: 0x30000 })),
      uaddr: mostly(fc.constant(0x7f0000000000), fc.nat(0x400000).map((x) => 0x7f0000000000 + x)),
      // Inside the file, misaligned, or past the end of the memfd.
      offset: mostly(fc.constant(GUARD), fc.constantFrom(GUARD + 8, GUARD + 3, 0, 0x30000)),
    });
    const arbVring = fc.record({
      index: fc.integer({ min: 0, max: 2 }),
      num: mostly(fc.constantFrom(256, 64, 8), fc.oneof(fc.constantFrom(1, 2, 100, 0), fc.nat(40000))),
      base: mostly(fc.constantFrom(0, 0x8000, 7), fc.nat()),
      desc: mostly(fc.constant(0x1000), fc.integer({ min: -0x100, max: 0x40000 })),
      avail: mostly(fc.constant(0x2000), fc.integer({ min: -0x100, max: 0x40000 })),
      used: mostly(fc.constant(0x3000), fc.integer({ min: -0x100, max: 0x40000 })),
      flags: fc.constantFrom(0, 0, 1),
      enable: mostly(fc.constant(true), fc.boolean()),
    });
    fc.assert(
      fc.property(
        fc.array(arbRegion, { minLength: 1, maxLength: 3 }),
        fc.tuple(arbVring, arbVring, fc.array(arbVring, { maxLength: 3 })).map(([a, b, rest]) => [{ ...a, index: 0 }, { ...b, index: 1 }, ...rest]),
        fc.subarray([28, 29, 34, 35, 26]),
        fc.integer(),
        fc.array(fc.nat(70), { maxLength: 12 }),
        (regions, vrings, bits, seed, steps) => {
          const h = new DeviceHarness({});
          const rng = new Rng(seed);
          // Each region gets its own memfd; every byte outside the window the table declares is a guard byte.
          const FILE = GUARD + 0x20000 + GUARD;
          const windowOf = (i: number): [number, number] => {
            const r = regions[i]!;
            return [Math.min(r.offset, FILE), Math.min(r.offset + r.size, FILE)];
          };
          const files = regions.map((_, i) => {
            const fd = h.memfd(FILE);
            const b = new Uint8Array(fd.buffer);
            b.fill(GUARD_BYTE);
            // Hostile ring contents: random bytes everywhere the front-end says guest memory is.
            const [lo, hi] = windowOf(i);
            for (let j = lo; j < hi; j++) b[j] = rng.int(0, 255);
            return fd;
          });
          const guardsIntact = () =>
            files.every((fd, i) => {
              const b = new Uint8Array(fd.buffer);
              const [lo, hi] = windowOf(i);
              for (let j = 0; j < b.length; j++) if ((j < lo || j >= hi) && b[j] !== GUARD_BYTE) return false;
              return true;
            });
          let features = 0x950008000n & ~(1n << 35n);
          for (const b of bits) features |= 1n << BigInt(b);
          features &= h.profile.features;
          h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10009n });
          h.send(R.SET_FEATURES, { kind: 'features', features });
          h.send(
            R.SET_MEM_TABLE,
            {
              kind: 'memoryTable',
              regions: regions.map((r) => ({ guestPhysAddr: BigInt(r.gpa), memorySize: BigInt(r.size), userspaceAddr: BigInt(r.uaddr), mmapOffset: BigInt(r.offset) })),
            },
            { fds: files.map((f) => f.dup()) },
          );
          const ua = (x: number) => BigInt(Math.max(0, regions[0]!.uaddr + x));
          for (const v of vrings) {
            h.send(R.SET_VRING_NUM, { kind: 'vringState', index: v.index, num: v.num >>> 0 });
            h.send(R.SET_VRING_BASE, { kind: 'vringState', index: v.index, num: v.base >>> 0 });
            const o = v.index * 0x4000;
            h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: v.index, flags: v.flags, desc: ua(v.desc + o), avail: ua(v.avail + o), used: ua(v.used + o), log: ua(v.used + o) });
            h.send(R.SET_VRING_CALL, { kind: 'vringFile', index: v.index, noFd: false }, { fds: [h.eventfd()] });
            h.send(R.SET_VRING_KICK, { kind: 'vringFile', index: v.index, noFd: false }, { fds: [h.eventfd()] });
            h.send(R.SET_VRING_ENABLE, { kind: 'vringState', index: v.index, num: v.enable ? 1 : 0 });
            if (h.device.isDestroyed) h.newDevice();
          }
          h.send(R.SET_STATUS, { kind: 'status', status: 0xf });
          // A hostile driver: descriptors with addresses in and out of guest memory, random
          // lengths, flags and links, and an avail index anywhere; rewritten before every poll.
          const scribbleRings = () => {
            const mem = h.device.memory;
            for (let i = 0; i < 2 && mem !== undefined; i++) {
              const vq = h.device.vringState(i);
              if (vq?.device === undefined || vq.mapped.desc === undefined || vq.mapped.avail === undefined) continue;
              const g0 = mem.regions[0]!.gpa;
              const q = vq.size;
              const packed = (h.device.features & (1n << 34n)) !== 0n;
              const state = vq.device.saveState();
              for (let e = 0; e < Math.min(q, 16); e++) {
                const d = packed ? (state.lastAvailIdx + e) % q : rng.int(0, q - 1);
                const at = vq.mapped.desc + 16 * d;
                const addr = rng.chance(0.9) ? g0 + rng.int(0, 0x1f000) : rng.int(0, 0x7fffffff) * 4096;
                const len = rng.chance(0.9) ? rng.int(0, 0x800) : rng.nextU32();
                const flags = rng.chance(0.7) ? (rng.chance(0.5) ? 2 : 0) : rng.int(0, 7);
                mem.writeU64(at, BigInt(addr));
                mem.writeU32(at + 8, len);
                if (packed) {
                  const wrap = ('availWrap' in state ? state.availWrap : true) !== (state.lastAvailIdx + e >= q);
                  const avail = rng.chance(0.9) ? (wrap ? 0x80 : 0x8000) : rng.int(0, 0xffff) & 0x8080;
                  mem.writeU16(at + 12, rng.chance(0.9) ? rng.int(0, q - 1) : rng.int(0, 0xffff));
                  mem.writeU16(at + 14, (flags & 7) | avail);
                } else {
                  mem.writeU16(at + 12, flags);
                  mem.writeU16(at + 14, rng.int(0, q + 2));
                  mem.writeU16(vq.mapped.avail + 4 + 2 * ((state.lastAvailIdx + e) % q), rng.chance(0.9) ? d : rng.int(0, 0xffff));
                }
              }
              if (!packed && q > 0) mem.writeU16(vq.mapped.avail + 2, rng.chance(0.9) ? (state.lastAvailIdx + rng.int(0, Math.min(q, 16))) & 0xffff : rng.int(0, 0xffff));
            }
          };
          // Drive the data path on whatever became ready, with the driver scribbling on guest memory between polls.
          const chain = new DescriptorChain(512);
          for (const s of steps) {
            scribbleRings();
            const d = h.device;
            for (let i = 0; i < 2; i++) {
              const v = d.vring(i);
              if (!v) continue;
              for (let n = 0; n < 8 && v.pop(chain); n++) {
                popped++;
                for (let sgi = 0; sgi < chain.count; sgi++) {
                  if (chain.writable[sgi] === 1) d.memory!.write(chain.addr[sgi]!, new Uint8Array(Math.min(chain.len[sgi]!, 64)).fill(s));
                }
                v.device.push(chain.id, Math.min(chain.writableBytes, s));
              }
              v.notify();
            }
            // The driver scribbles inside guest memory between polls.
            const k = s % files.length;
            const [lo, hi] = windowOf(k);
            if (hi - lo >= 4) new DataView(files[k]!.buffer).setUint32(lo + (rng.int(0, hi - lo - 4) & ~3), rng.nextU32(), true);
          }
          h.send(R.GET_VRING_BASE, { kind: 'vringState', index: 0, num: 0 });
          expect(h.device.internalErrors).toEqual([]);
          expect(guardsIntact()).toBe(true);
          h.device.destroy();
        },
      ),
      runs(200),
    );
    // The search did reach the data path.
    expect(popped).toBeGreaterThan(0);
  });
});
