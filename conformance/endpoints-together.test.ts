import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Scheduler } from '../src/sim/scheduler.ts';
import { SocketNamespace, type ChannelFaults, type FaultPolicy } from '../src/transport/index.ts';
import { DpdkBackend } from '../src/endpoint/backend/index.ts';
import { createFrontend, type AnyFrontend } from '../src/endpoint/frontend/index.ts';
import { TraceRecorder } from '../src/endpoint/trace-recorder.ts';
import { isMessageRecord } from '../src/sim/trace.ts';

// The model front-ends and the model back-end talk only through the wire protocol over
// the in-process socket: these tests hold the two halves to each other, under any
// chunking and delay, and under a connection cut after any message of the handshake.

type Profile = 'virtio-user-22.11' | 'qemu-7.2';
type Ring = 'split' | 'packed';
const PATH = 'run/vhost-net.sock';
const RUNS = Number(process.env.VHOSTSIM_PROP_SCALE ?? 1);

interface Rig {
  sched: Scheduler;
  backend: DpdkBackend;
  frontend: AnyFrontend;
  recorder: TraceRecorder;
}

function rig(profile: Profile, ring: Ring, seed: number, faults?: FaultPolicy): Rig {
  const sched = new Scheduler({ seed });
  const ns = new SocketNamespace({ scheduler: sched, faults });
  const recorder = new TraceRecorder(sched);
  const frontend =
    profile === 'virtio-user-22.11'
      ? createFrontend(profile, { ns, path: PATH, packedVq: ring === 'packed', ramSize: 4 << 20, recorder })
      : createFrontend(profile, { ns, path: PATH, packed: ring === 'packed', guestDriver: 'virtio-pmd', ramSize: 4 << 20, recorder });
  // the front-end listens (virtio-user server=1, QEMU chardev server); DPDK is the client
  frontend.start();
  const backend = new DpdkBackend({ ns, path: PATH, profile: { client: true } });
  backend.start();
  return { sched, backend, frontend, recorder };
}

function readyCount(b: DpdkBackend): number {
  return b.events.filter((e) => e.kind === 'ready').length;
}

/** Runs until both sides are up (back-end ready, front-end running) or the time runs out. */
function runUntilUp(r: Rig, readyWanted: number, until: number): void {
  r.sched.run({ until, stopWhen: () => readyCount(r.backend) >= readyWanted && r.frontend.phase === 'running' });
}

const CASES: [Profile, Ring][] = [
  ['virtio-user-22.11', 'split'],
  ['virtio-user-22.11', 'packed'],
  ['qemu-7.2', 'split'],
  ['qemu-7.2', 'packed'],
];

describe.each(CASES)('%s front-end with the dpdk-22.11 back-end, %s ring', (profile, ring) => {
  it('reaches ready on both sides with the features the capture shows negotiated', () => {
    const r = rig(profile, ring, 1);
    runUntilUp(r, 1, 60);
    expect(readyCount(r.backend)).toBe(1);
    expect(r.frontend.phase).toBe('running');
    const setFeatures = r.recorder.records.filter((x) => isMessageRecord(x) && x.request === 2);
    expect(setFeatures.length).toBeGreaterThan(0);
    // RING_PACKED (bit 34) is negotiated exactly when the ring is packed
    const features = BigInt('0x' + (setFeatures[0] as { payload: string }).payload.match(/../g)!.reverse().join(''));
    expect(((features >> 34n) & 1n) === 1n).toBe(ring === 'packed');
  });

  it('handshake completes under any chunking and any delays', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.constantFrom<ChannelFaults['chunking']>('whole', 'bytes', 'random'),
        fc.double({ min: 0, max: 0.01, noNaN: true }),
        (seed, chunking, maxDelay) => {
          const r = rig(profile, ring, seed, { chunking, delay: { min: 0, max: maxDelay } });
          runUntilUp(r, 1, 120);
          expect(readyCount(r.backend)).toBe(1);
          expect(r.frontend.phase).toBe('running');
        },
      ),
      { numRuns: 25 * RUNS },
    );
  });

  it('a connection cut after any message of the handshake is followed by a reconnect that reaches ready', () => {
    // how many messages the first connection carries when nothing goes wrong
    const clean = rig(profile, ring, 2);
    runUntilUp(clean, 1, 60);
    const handshake = clean.recorder.records.filter(isMessageRecord).length;
    expect(handshake).toBeGreaterThan(10);
    for (let k = 1; k <= handshake; k++) {
      const r = rig(profile, ring, 100 + k, (info) => (info.pathIndex === 1 ? { cuts: [{ from: 'any', message: k }] } : undefined));
      runUntilUp(r, 1, 120);
      expect({ k, ready: readyCount(r.backend), phase: r.frontend.phase }).toEqual({ k, ready: 1, phase: 'running' });
    }
  });

  it('a back-end killed while running is replaced by its reconnect, and the new one reaches ready', () => {
    const r = rig(profile, ring, 3);
    runUntilUp(r, 1, 60);
    r.backend.kill();
    const ns = (r.backend as unknown as { ns: SocketNamespace }).ns;
    const again = new DpdkBackend({ ns, path: PATH, profile: { client: true } });
    again.start();
    r.sched.run({ until: r.sched.now + 60, stopWhen: () => readyCount(again) >= 1 && r.frontend.phase === 'running' });
    expect(readyCount(again)).toBe(1);
    expect(r.frontend.phase).toBe('running');
  });
});
