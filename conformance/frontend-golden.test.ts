/**
 * The front-end models against reality:
 * - the real capture of DPDK 22.11 virtio-user (server=1) with a DPDK vhost back-end that is
 *   killed and relaunched, replayed against the `virtio-user-22.11` model: both sessions, in
 *   the captured order, byte for byte where the profile decides the bytes;
 * - the DPDK 22.11 logs of the reference runs (`read message …` lines): QEMU 7.2 with iPXE as
 *   client and as server, the relaunched back-end after a SIGKILL, and virtio-user's two
 *   sessions, against the message order the models send.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { eventsOf, messageNames, parseVhostLog, type VhostSession } from '../src/adapters/dpdk/vhost-log.ts';
import { FrontendRequest as FR } from '../src/protocol/index.ts';
import { replayAsFrontend } from '../src/endpoint/replay-frontend.ts';
import { summarizeReplay, type ReplayStep } from '../src/endpoint/replay-report.ts';
import { isMessageRecord, readTraceFile } from '../src/sim/trace.ts';
import { Scheduler } from '../src/sim/scheduler.ts';
import { SocketNamespace } from '../src/transport/index.ts';
import { SplitDevice } from '../src/ring/split/index.ts';
import { DescriptorChain } from '../src/ring/types.ts';
import { QemuFrontend, VirtioUserFrontend } from '../src/endpoint/frontend/index.ts';
import { ScriptedBackend, runUntil } from '../src/endpoint/frontend/testing.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REF = resolve(repoRoot, '..', 'shared/reference');
const CAPTURE = resolve(REF, 'traces/dpdk22.11-virtio-user-vhost-split-reconnect.jsonl');
const records = readTraceFile(CAPTURE);
const report = replayAsFrontend(records);

function sessionsOf(log: string): VhostSession[] {
  return parseVhostLog(readFileSync(resolve(REF, 'logs', log), 'utf8')).sessions;
}

const stepAt = (req: number, nth = 0): ReplayStep => {
  const s = report.steps.filter((x) => x.expected?.request === req)[nth];
  if (s === undefined) throw new Error(`no step ${nth} for request ${req}`);
  return s;
};

describe('golden: virtio-user-22.11 replayed against the real capture', () => {
  it('every captured f2b message is produced, in the captured order, and nothing else: no differs, missing or extra', () => {
    const counts = summarizeReplay(report);
    const f2b = records.filter((r) => isMessageRecord(r) && r.dir === 'f2b').length;
    expect(counts.differs + counts.missing + counts.extra).toBe(0);
    expect(counts.match + counts['state-dependent']).toBe(f2b);
    expect(report.diverged).toBe(false);
    const indices = report.steps.map((s) => s.index);
    expect(indices).toEqual([...indices].sort((a, b) => a - b));
    expect(report.steps.map((s) => s.session)).toEqual(report.steps.map((s) => (s.index < 31 ? 1 : 2)));
  });

  it('state-dependent only where the bytes are the process state: memory table, ring addresses, the uninitialised GET_VRING_BASE num', () => {
    const sd = report.steps.filter((s) => s.verdict === 'state-dependent');
    expect(sd.map((s) => [s.session, s.expected!.request])).toEqual([
      [1, FR.SET_MEM_TABLE],
      [1, FR.SET_VRING_ADDR],
      [1, FR.SET_VRING_ADDR],
      [2, FR.GET_VRING_BASE],
      [2, FR.SET_MEM_TABLE],
      [2, FR.SET_VRING_ADDR],
      [2, FR.SET_VRING_ADDR],
    ]);
    for (const s of sd) expect(s.detail.length).toBeGreaterThan(20);
  });

  it('byte-identical: SET_PROTOCOL_FEATURES 0x10009 and SET_FEATURES 0x950008000 in both sessions', () => {
    for (const n of [0, 1]) {
      expect(stepAt(FR.SET_PROTOCOL_FEATURES, n).verdict).toBe('match');
      expect(stepAt(FR.SET_PROTOCOL_FEATURES, n).actual!.payload).toBe('0900010000000000');
      expect(stepAt(FR.SET_FEATURES, n).verdict).toBe('match');
      expect(stepAt(FR.SET_FEATURES, n).actual!.payload).toBe('0080005009000000');
    }
  });

  it('byte-identical: SET_STATUS 0x0b and 0x0f with NEED_REPLY (flags 0x9)', () => {
    const st = report.steps.filter((s) => s.expected?.request === FR.SET_STATUS);
    expect(st.map((s) => [s.verdict, s.actual!.flags, s.actual!.payload.slice(0, 2)])).toEqual([
      ['match', 9, '0b'],
      ['match', 9, '0f'],
      ['match', 9, '0b'],
      ['match', 9, '0f'],
    ]);
  });

  it('byte-identical: SET_VRING_NUM 256, SET_VRING_BASE 0, SET_VRING_KICK/CALL with one fd, every SET_VRING_ENABLE', () => {
    for (const req of [FR.SET_VRING_NUM, FR.SET_VRING_BASE, FR.SET_VRING_KICK, FR.SET_VRING_CALL, FR.SET_VRING_ENABLE]) {
      const steps = report.steps.filter((s) => s.expected?.request === req);
      expect(steps.length).toBeGreaterThan(3);
      for (const s of steps) expect([s.verdict, s.actual!.nfds]).toEqual(['match', s.expected!.nfds]);
    }
    expect(stepAt(FR.SET_VRING_NUM).actual!.payload).toBe('0000000000010000');
    expect(stepAt(FR.SET_VRING_BASE, 3).actual!.payload).toBe('0100000000000000');
  });

  it('the reconnect stops the rings on the new back-end: ENABLE(0)×2, GET_VRING_BASE×2 before GET_FEATURES, no SET_OWNER', () => {
    const s2 = report.steps.filter((s) => s.session === 2);
    expect(s2.slice(0, 5).map((s) => s.actual!.request)).toEqual([FR.SET_VRING_ENABLE, FR.SET_VRING_ENABLE, FR.GET_VRING_BASE, FR.GET_VRING_BASE, FR.GET_FEATURES]);
    expect(s2.slice(0, 2).map((s) => s.actual!.payload)).toEqual(['0000000000000000', '0100000000000000']);
    // vring 1's request repeats the num vring 0's reply carried.
    expect(s2[3].verdict).toBe('match');
    expect(s2.some((s) => s.actual!.request === FR.SET_OWNER)).toBe(false);
  });

  it('the final stop after quit matches byte for byte (ENABLE 0 ×2, GET_VRING_BASE ×2)', () => {
    const tail = report.steps.slice(-4);
    expect(tail.map((s) => s.verdict)).toEqual(['match', 'match', 'match', 'match']);
    expect(tail[0].detail).toMatch(/quit/);
  });
});

describe('golden: message order against the DPDK logs of the reference runs', () => {
  const INIT_ROUNDS_START = (log: string) => messageNames(sessionsOf(log)[0]);

  function qemuRun(mode: 'server' | 'client') {
    const sched = new Scheduler({ seed: 5 });
    const ns = new SocketNamespace({ scheduler: sched });
    const fe = new QemuFrontend({ ns, path: 'run/qs.sock', ramSize: 128 * 1024 * 1024, guestDriver: 'ipxe', chardev: mode === 'server' ? { mode } : { mode, reconnect: 1 } });
    // The back-end starts first; as DPDK client=1 (QEMU server) it retries every second until
    // QEMU listens, as in vc3.
    const be = new ScriptedBackend({ ns, path: 'run/qs.sock', mode: mode === 'server' ? 'client' : 'server', retry: 1 }).start();
    fe.start();
    runUntil(sched, () => fe.phase === 'running' && be.isReady);
    return { sched, ns, fe, be };
  }

  it('QEMU 7.2 + iPXE as chardev server (vc1): init, five ENABLE pairs, start', () => {
    const { be } = qemuRun('server');
    expect(be.names()).toEqual(INIT_ROUNDS_START('vc1.log'));
    const s = sessionsOf('vc1.log')[0];
    expect(be.features).toBe(s.features);
    expect(be.protocolFeatures).toBe(s.protocolFeatures);
  });

  it('QEMU 7.2 + iPXE as chardev client (vh2) and after a DPDK client retry (vc3): start, then iPXE exit (stop and one ENABLE pair)', () => {
    for (const [mode, log] of [
      ['client', 'vh2.log'],
      ['server', 'vc3.log'],
    ] as const) {
      const { fe, be, sched } = qemuRun(mode);
      fe.rebootGuest({ restart: false });
      sched.run({ until: sched.now + 5 });
      const s = sessionsOf(log).find((x) => x.messages.length > 0)!;
      expect(be.names()).toEqual(messageNames(s));
      expect(eventsOf(s, 'status').map((e) => e.value)).toEqual(be.messages('SET_STATUS').map((m) => (m.decoded?.kind === 'status' ? m.decoded.status : -1)));
    }
  });

  it('QEMU 7.2 after the back-end was killed mid-traffic (vc2): full init, one ENABLE pair, start with bases 7 from used->idx', () => {
    const sched = new Scheduler({ seed: 5 });
    const ns = new SocketNamespace({ scheduler: sched });
    const fe = new QemuFrontend({ ns, path: 'run/qs.sock', ramSize: 128 * 1024 * 1024, guestDriver: 'ipxe' });
    fe.start();
    const be1 = new ScriptedBackend({ ns, path: 'run/qs.sock', mode: 'client', retry: 1000 }).start();
    runUntil(sched, () => fe.phase === 'running' && be1.isReady);
    // iPXE's DHCP: 7 buffers completed on each ring before the SIGKILL.
    for (const i of [0, 1]) {
      const v = fe.guest.vring(i);
      const area = fe.guest.bufferArea();
      for (let k = 0; k < 7; k++) v.driver!.add([{ addr: area.gpa + (i * 8 + k) * 2048, len: 2048, writable: i === 0 }], k);
      v.driver!.publish();
      const l = v.layout!;
      if (l.kind !== 'split') throw new Error('split');
      const dev = new SplitDevice(fe.guest.memory, l, { indirect: false, eventIdx: false, inOrder: false });
      const chain = new DescriptorChain(256);
      while (dev.pop(chain)) dev.push(chain.id, 0);
      dev.flush();
    }
    be1.stop();
    runUntil(sched, () => fe.phase === 'link-down' && fe.idle);
    const be2 = new ScriptedBackend({ ns, path: 'run/qs.sock', mode: 'client', retry: 1000 }).start();
    runUntil(sched, () => fe.phase === 'running' && be2.isReady);
    fe.rebootGuest({ restart: false });
    sched.run({ until: sched.now + 5 });
    const s = sessionsOf('vc2.log')[0];
    expect(be2.names()).toEqual(messageNames(s));
    expect(be2.messages('SET_VRING_BASE').map((m) => (m.decoded?.kind === 'vringState' ? m.decoded.num : -1))).toEqual(
      eventsOf(s, 'set-vring-base').map((e) => e.lastAvailIdx),
    );
    expect(be2.features).toBe(s.features);
  });

  it("QEMU 7.2's stderr when its back-end dies (qemu4.log): the back-end channel's EOF, then SET_STATUS(0) and both GET_VRING_BASE fail and the rings are restored", () => {
    const { fe, be, sched } = qemuRun('server');
    be.stop();
    runUntil(sched, () => fe.phase === 'link-down' && fe.idle);
    const real = readFileSync(resolve(REF, 'logs/qemu4.log'), 'utf8')
      .split('\n')
      .map((l) => l.replace(/^qemu-system-x86_64: /, ''))
      .slice(1, 7);
    expect(fe.logs.filter((l) => l.level === 'error').map((l) => l.text)).toEqual(real);
  });

  it('virtio-user first back-end (vb2) and relaunched back-end then quit (vb3)', () => {
    const sched = new Scheduler({ seed: 5 });
    const ns = new SocketNamespace({ scheduler: sched });
    const fe = new VirtioUserFrontend({ ns, path: 'run/vu.sock', ramSize: 4 << 20 });
    fe.start();
    const be1 = new ScriptedBackend({ ns, path: 'run/vu.sock', mode: 'client', retry: 1000 }).start();
    runUntil(sched, () => fe.phase === 'running' && be1.isReady);
    expect(be1.names()).toEqual(messageNames(sessionsOf('vb2.log')[0]));
    be1.stop();
    const be2 = new ScriptedBackend({ ns, path: 'run/vu.sock', mode: 'client', retry: 1000 }).start();
    runUntil(sched, () => fe.phase === 'running' && be2.isReady);
    fe.quit();
    sched.run({ until: sched.now + 5 });
    expect(be2.names()).toEqual(messageNames(sessionsOf('vb3.log')[0]));
    expect(be2.protocolFeatures).toBe(sessionsOf('vb3.log')[0].protocolFeatures);
  });
});
