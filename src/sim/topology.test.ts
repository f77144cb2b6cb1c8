import { describe, expect, it } from 'vitest';
import { TraceRecorder } from '../endpoint/trace-recorder.ts';
import { SocketNamespace } from '../transport/index.ts';
import { parseScenario, type ScenarioInput } from './scenario.ts';
import { Scheduler } from './scheduler.ts';
import { Topology, socketPath } from './topology.ts';

function build(o: Partial<ScenarioInput>, hooks = {}) {
  const s = parseScenario({ name: 't', ring: 'split', topology: 'pvp', vms: 1, queues: 1, queueSize: 256, frontend: 'qemu-7.2', backend: 'dpdk-22.11', guest: 'virtio-pmd', steps: [{ op: 'launch-backend' }], ...o });
  const sched = new Scheduler({ seed: 1 });
  const ns = new SocketNamespace({ scheduler: sched });
  const topo = new Topology(s, sched, ns, new TraceRecorder(sched), hooks);
  const until = (t: number) => {
    sched.run({ until: t });
    topo.syncHost();
    topo.syncGuests();
  };
  return { topo, sched, until };
}

describe('Topology', () => {
  it('PVP: vrings reach the data path once the back-end is ready and leave it on quit', () => {
    const { topo, until } = build({});
    topo.launchBackend();
    topo.launchVm(0);
    expect(topo.ready()).toBe(false);
    until(5);
    expect(topo.ready()).toBe(true);
    expect(topo.host!.ports[0]!.isAttached(0) && topo.host!.ports[0]!.isAttached(1)).toBe(true);
    expect(topo.obs.connections).toHaveLength(1);
    topo.stopBackend('quit');
    expect(topo.host).toBeUndefined();
    expect(topo.obs.detachReports.every((d) => d.graceful)).toBe(true);
    expect(topo.obs.ringEnds.map((e) => e.end)).toEqual(['backend-lost', 'backend-lost']);
    topo.launchBackend();
    until(7);
    expect(topo.ready()).toBe(true);
    expect(topo.reconnects).toBe(1);
    expect(topo.obs.resumes.filter((r) => r.after?.end === 'backend-lost')).toHaveLength(2);
  });

  it('a kill detaches as a crash', () => {
    const { topo, until } = build({});
    topo.launchBackend();
    topo.launchVm(0);
    until(5);
    topo.stopBackend('kill');
    expect(topo.obs.detachReports.length).toBe(2);
    expect(topo.obs.detachReports.every((d) => !d.graceful)).toBe(true);
  });

  it('a guest reboot is not ready until the front-end has reset and the driver restarted', () => {
    const { topo, until, sched } = build({ ring: 'packed' });
    topo.launchBackend();
    topo.launchVm(0);
    until(5);
    topo.rebootVm(0);
    topo.syncGuests();
    expect(topo.ready(0)).toBe(false);
    until(sched.now + 0.5);
    expect(topo.ready(0)).toBe(false);
    until(sched.now + 3);
    expect(topo.ready(0)).toBe(true);
    expect(topo.obs.resumes.at(-1)).toMatchObject({ avail: { idx: 0, wrap: true }, after: { end: 'device-reset' } });
  });

  it('VM2VM: two kernel guests, one socket each, a stream gets through the host io forwarding', () => {
    const { topo, until, sched } = build({ topology: 'vm2vm', vms: 2, guest: 'virtio-net' });
    expect(socketPath(1)).toBe('./vhost-net1');
    topo.launchBackend();
    topo.startHostForwarding('io');
    topo.launchVm(0);
    topo.launchVm(1);
    until(5);
    expect(topo.ready()).toBe(true);
    topo.startStream(1, 0, 100);
    until(sched.now + 2);
    const st = topo.streams[0]!;
    expect(st.sender.done).toBe(true);
    expect(st.receiver.report().delivered).toBe(100);
  });


  it('virtio-user-22.11 as the VM: connects like QEMU, and reboot-vm restarts its testpmd on the same socket', () => {
    const { topo, until, sched } = build({ frontend: 'virtio-user-22.11', ring: 'packed' });
    topo.launchBackend();
    topo.launchVm(0);
    until(5);
    expect(topo.ready()).toBe(true);
    const first = topo.vms[0]!.fe;
    expect(first.profile).toBe('virtio-user-22.11');
    topo.rebootVm(0);
    expect(topo.ready(0)).toBe(false);
    until(sched.now + 5);
    expect(topo.ready(0)).toBe(true);
    expect(topo.vms[0]!.fe).not.toBe(first);
    expect(topo.obs.connections).toHaveLength(2);
  });
});

describe('Topology with several queue pairs', () => {
  const allAttached = (topo: Topology, vm = 0): boolean[] => Array.from({ length: 2 * topo.s.queues }, (_, r) => topo.host!.ports[vm]!.isAttached(r));

  it('qemu-7.2, 4 pairs: pair 0 starts the device, the guest driver\'s MQ command enables the others; ready only with all 8 vrings on both sides', () => {
    const { topo, sched } = build({ queues: 4 });
    topo.launchBackend();
    topo.launchVm(0);
    // Step until the device runs: DPDK's readiness needs vrings 0 and 1 only.
    let sawPartial = false;
    sched.run({
      until: 5,
      stopWhen: () => {
        topo.syncHost();
        const h = topo.host!;
        if (h.ports[0]!.isAttached(0) && !h.ports[0]!.isAttached(6)) {
          sawPartial = true;
          expect(topo.ready()).toBe(false);
        }
        return false;
      },
    });
    topo.syncHost();
    topo.syncGuests();
    sched.run({ until: 6 });
    topo.syncHost();
    topo.syncGuests();
    expect(sawPartial).toBe(true);
    expect(topo.obs.mqCommands).toEqual([{ vm: 0, t: expect.any(Number), pairs: 4 }]);
    expect(topo.activePairs(0)).toBe(4);
    expect(allAttached(topo)).toEqual(new Array(8).fill(true));
    expect(topo.vms[0]!.pmd!.port.queuePairs.every((qp) => qp.attached)).toBe(true);
    expect(topo.ready()).toBe(true);
    expect(topo.host!.nic!.nbQueues).toBe(4);
  });

  it('virtio-user-22.11, 4 pairs: a back-end quit and relaunch brings all 8 vrings back (virtio_user_handle_mq on reconnect)', () => {
    const { topo, until, sched } = build({ queues: 4, frontend: 'virtio-user-22.11', ring: 'packed' });
    topo.launchBackend();
    topo.launchVm(0);
    until(5);
    expect(allAttached(topo)).toEqual(new Array(8).fill(true));
    topo.stopBackend('quit');
    expect(topo.obs.ringEnds.map((e) => e.vring)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    topo.launchBackend();
    until(sched.now + 3);
    expect(topo.ready()).toBe(true);
    expect(allAttached(topo)).toEqual(new Array(8).fill(true));
    // The MQ command is the application's, sent once; the reconnect re-enables by itself.
    expect(topo.obs.mqCommands).toHaveLength(1);
    expect(topo.obs.resumes.filter((r) => r.after?.end === 'backend-lost').map((r) => r.vring).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('a guest reboot (qemu-7.2) resets curr_queue_pairs: the new driver asks again and every pair comes back', () => {
    const { topo, until, sched } = build({ queues: 2, ring: 'packed' });
    topo.launchBackend();
    topo.launchVm(0);
    until(5);
    expect(topo.ready()).toBe(true);
    topo.rebootVm(0);
    expect(topo.ready(0)).toBe(false);
    until(sched.now + 5);
    expect(topo.ready(0)).toBe(true);
    expect(topo.obs.mqCommands.map((c) => c.pairs)).toEqual([2, 2]);
    expect(allAttached(topo)).toEqual([true, true, true, true]);
  });

  it('per-queue packet counts add up over back-end instances; the generator defaults to 16 flows a queue', () => {
    const { topo, until, sched } = build({ queues: 2, frontend: 'virtio-user-22.11' });
    topo.launchBackend();
    topo.startHostForwarding('mac');
    topo.launchVm(0);
    until(5);
    topo.startGuestForwarding(0, 'mac');
    topo.startTraffic({ seconds: 0.05 });
    until(sched.now + 0.06);
    const a = topo.queuePackets(0);
    expect(a.tx.every((n) => n > 0) && a.rx.every((n) => n > 0)).toBe(true);
    expect(topo.tg!.report().perFlow).toHaveLength(32);
    topo.stopBackend('quit');
    expect(topo.queuePackets(0)).toEqual(a);
    topo.launchBackend();
    topo.startHostForwarding('mac');
    until(sched.now + 3);
    topo.startTraffic({ seconds: 0.05 });
    until(sched.now + 0.06);
    const b = topo.queuePackets(0);
    for (let q = 0; q < 2; q++) {
      expect(b.tx[q]!).toBeGreaterThan(a.tx[q]!);
      expect(b.rx[q]!).toBeGreaterThan(a.rx[q]!);
    }
  });
});
