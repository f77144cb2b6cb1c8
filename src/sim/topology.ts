/**
 * The topologies a scenario runs on, built from the real model parts and wired by a small
 * control-plane glue:
 *
 * - `pvp`: TG → NIC → host testpmd (one DpdkBackend + VhostPort per VM, `chained` for 2 VMs)
 *   → vhost → VM (qemu-7.2 front-end, guest virtio-pmd testpmd) → back the same way.
 * - `vm2vm`: two VMs with the kernel virtio-net driver and an iperf-like stream, through the
 *   host testpmd in `io` forwarding.
 * - `loopback`: one virtio-user port (testpmd `txonly` while a traffic step runs) and the host
 *   testpmd on the vhost port (rxonly or io), no NIC and no generator.
 *
 * A "VM" is either QEMU 7.2 with a guest (`frontend: qemu-7.2`) or, on machines without VMs, a
 * DPDK 22.11 virtio-user testpmd (`server=1`) driving the same guest driver model over its own
 * memory (`frontend: virtio-user-22.11`). virtio-user has no guest OS to reboot: `reboot-vm`
 * restarts its testpmd (close resets the device, a new process probes again).
 *
 * The glue follows what DPDK's net_vhost and the guest drivers do: a vring is handed to the
 * data path when the back-end says it is ready (`DpdkBackend.vring(i)` defined), taken away
 * ('graceful') when it stops or the device is destroyed, or ('crash') when the back-end process
 * is killed; the guest's driver halves are attached whenever the front-end's guest rebuilds
 * its rings (a new `generation`). The glue re-synchronises after every control-plane event
 * (front-end event, back-end log event, lifecycle) rather than polling, which keeps runs cheap.
 *
 * Several queue pairs (`queues` 1..N): every port gets N queues (testpmd `--rxq=N --txq=N`,
 * streams RX queue q → TX queue q of the peer port), the NIC spreads generator flows over its RX
 * queues by RSS, the guest testpmd polls every pair, the kernel guest picks a TX queue per flow.
 * DPDK runs the device once pair 0 is ready; each further vring reaches the data path when the
 * guest driver's MQ command (sent once per driver start, `syncGuests`) has the front-end enable
 * it. `ready()` wants every pair the guest negotiated on both sides.
 *
 * Everything observable for the checks (reconnects, ring positions at each end and each
 * resume, features, detach reports, ring errors, per-queue packet counts) is recorded in
 * `observations` and `queuePackets`.
 */
import { DpdkBackend, type VringView, type VhostUserDevice } from '../endpoint/backend/index.ts';
import { QemuFrontend, VirtioUserFrontend, ringFeaturesOf, type AnyFrontend } from '../endpoint/frontend/index.ts';
import type { TraceRecorder } from '../endpoint/trace-recorder.ts';
import { GuestMemoryError } from '../memory/index.ts';
import { GuestMbufPool, type GuestMbuf } from '../net/guest-mbuf.ts';
import { GuestVirtioNet } from '../net/guest-virtio-net.ts';
import { GuestVirtioPmd } from '../net/guest-virtio-pmd.ts';
import { MbufPool, type Mbuf } from '../net/mbuf.ts';
import { Nic, type WireEnd } from '../net/nic.ts';
import { parseMac } from '../net/packet.ts';
import { isMergeable, vhostHeaderLength } from '../net/net-header.ts';
import { Testpmd, type FwdMode } from '../net/forwarding.ts';
import { TrafficGenerator } from '../net/traffic-generator.ts';
import { VhostPort } from '../net/vhost-port.ts';
import type { DetachReport } from '../net/vhost-queues.ts';
import type { StreamReceiver, StreamSender } from '../net/stream.ts';
import type { RingDevice, RingDriver } from '../ring/factory.ts';
import { RingError } from '../ring/errors.ts';
import { SplitDevice } from '../ring/split/index.ts';
import type { SocketNamespace } from '../transport/index.ts';
import { VirtioFeature as F, hasFeature } from '../virtio/index.ts';
import type { Scenario } from './scenario.ts';
import type { Scheduler } from './scheduler.ts';
import { hookBackendProfile, hookFrontendOptions, type ProfileHooks } from './profile-hooks.ts';

export type { ProfileHooks } from './profile-hooks.ts';

/** Tunables of the data path; the defaults keep a plan run well under a second of wall time per case. */
export interface DataPathTuning {
  /** Host testpmd forwarding-loop period (virtual seconds). */
  hostPoll: number;
  /** Guest testpmd / NAPI poll period. */
  guestPoll: number;
  /** Generator rate (packets per virtual second) when a traffic step gives none. */
  defaultRate: number;
  /** Generator send period. */
  tgTick: number;
  /** VM2VM: segments per flow per traffic step (iperf sends for `seconds`; the model sends this much and then idles). */
  streamSegments: number;
  /** Guest RAM per VM. */
  guestRam: number;
  /**
   * Virtual seconds between the vhost port taking guest buffers and marking them used (0: DPDK's
   * sync path, used in the same burst). Above 0 a crash can find buffers popped but not used.
   */
  completionDelay: number;
}

export const DEFAULT_TUNING: DataPathTuning = {
  hostPoll: 5e-4,
  guestPoll: 5e-4,
  defaultRate: 10_000,
  tgTick: 1e-3,
  streamSegments: 2000,
  guestRam: 32 * 1024 * 1024,
  completionDelay: 0,
};

export type RingPosition = { idx: number; wrap?: boolean };

/** A vring's position when a back-end connection ended (for the resume check). */
export interface RingEnd {
  vm: number;
  vring: number;
  t: number;
  /** The old back-end's next avail position. */
  lastAvail: RingPosition;
  /** Split: used->idx in guest memory; packed: the old back-end's next used position. */
  used: RingPosition;
  /** Packed under QEMU: the base QEMU holds (what it will send again). */
  frontendBase?: RingPosition;
  end: 'backend-lost' | 'device-reset';
}

/** A vring's position when a new back-end device started (new_device). */
export interface RingResume {
  vm: number;
  vring: number;
  t: number;
  connection: number;
  avail: RingPosition;
  used: RingPosition;
  /** The end this resume follows (undefined for the first connection of a VM process). */
  after?: RingEnd;
}

export interface ConnectionStart {
  vm: number;
  t: number;
  /** Back-end connection number for this VM's socket (1-based over the run). */
  connection: number;
  /** Features the back-end device negotiated (hex). */
  features: bigint;
  /** Was this VM process's first connection (a fresh VM), or a reconnect. */
  firstOfVm: boolean;
}

export interface RingErrorNote {
  t: number;
  vm: number;
  vring: number;
  message: string;
}

export interface Observations {
  connections: ConnectionStart[];
  ringEnds: RingEnd[];
  resumes: RingResume[];
  detachReports: (DetachReport & { vm: number; t: number })[];
  ringErrors: RingErrorNote[];
  /** Errors thrown by model code inside the glue (a model invariant breaks). */
  escaped: { t: number; where: string; error: unknown }[];
  /** Packets the TG sent while no host testpmd ran. */
  backendDownDrops: number;
  /** Packets in the host process's mbufs (NIC RX ring, bursts in testpmd) when it was killed. */
  hostHeldAtCrash: number;
  /**
   * Packets a guest held when it was reset or its VM stopped: gone with it. Exact when the runner
   * gives `guestHeldCounter` (unread on RX rings, in its testpmd, posted on TX rings and not
   * taken); otherwise an upper bound from the mempool (TX buffers sent but not reclaimed count too).
   */
  guestHeldAtReset: number;
  /** virtio-user packed reconnects: buffers each rebuilt ring dropped (driver in-flight at the reset). */
  ringResets: { vm: number; vring: number; t: number; dropped: number }[];
  /** Multi-queue: each guest driver's VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (pairs asked for). */
  mqCommands: { vm: number; t: number; pairs: number }[];
}

interface HostInstance {
  backends: DpdkBackend[];
  ports: VhostPort[];
  nic?: Nic;
  testpmd: Testpmd<Mbuf>;
  /** The device half attached per VM and vring (guarded), and the back-end half it came from. */
  attached: (RingDevice | undefined)[][];
  source: (RingDevice | undefined)[][];
  /** The device half the data path really drives (differs from the source under a broken-profile hook). */
  inner: (RingDevice | undefined)[][];
  attachedOf: (VhostUserDevice | undefined)[];
  fwd: FwdMode;
  forwarding: boolean;
  /** Per VM port: testpmd fwd_dropped of earlier start/stop periods (`start` zeroes the stream counters). */
  fwdDroppedBefore: number[];
}

interface VmInstance {
  index: number;
  fe: AnyFrontend;
  pool: GuestMbufPool;
  pmd?: GuestVirtioPmd;
  net?: GuestVirtioNet;
  attachedGeneration: number;
  /** Guest testpmd asked to run (start-forwarding guest). */
  forwarding: boolean;
  /** This VM process has had a connection already. */
  connected: boolean;
  /** A guest reset was asked for and the front-end has not done it yet (its sequences are asynchronous). */
  resetPending: boolean;
  /** The guest driver has sent its MQ command since it (re)started. */
  mqSent: boolean;
}

const TG_MAC = parseMac('00:00:00:00:aa:01');
/** Generator flows per queue pair when a multi-queue traffic step names none. */
export const MQ_DEFAULT_FLOWS_PER_QUEUE = 16;
const NIC_MAC = parseMac('3c:fd:fe:00:00:00');
const vmMac = (i: number): number => parseMac('52:54:00:00:00:01') + i;

export function socketPath(vm: number): string {
  return vm === 0 ? './vhost-net' : `./vhost-net${vm}`;
}

/** A generator's cable end while no host testpmd runs: frames fall on the floor and are counted. */
class DeadEnd implements WireEnd {
  constructor(private readonly count: (n: number) => void) {}
  receiveFromWire(m: Mbuf): void {
    m.free();
    this.count(1);
  }
}

/** Wraps a back-end device half so a malformed chain stops the queue instead of crashing the run (as DPDK's burst). */
class GuardedDevice implements RingDevice {
  private broken = false;
  constructor(
    private readonly dev: RingDevice,
    private readonly onError: (msg: string) => void,
  ) {}
  get size(): number {
    return this.dev.size;
  }
  pop(chain: Parameters<RingDevice['pop']>[0]): boolean {
    if (this.broken) return false;
    try {
      return this.dev.pop(chain);
    } catch (e) {
      if (!(e instanceof RingError) && !(e instanceof GuestMemoryError)) throw e;
      this.broken = true;
      this.onError(e.message);
      return false;
    }
  }
  push(id: number, len: number): void {
    this.dev.push(id, len);
  }
  flush(): boolean {
    return this.dev.flush();
  }
  enableKicks(): void {
    this.dev.enableKicks();
  }
  disableKicks(): void {
    this.dev.disableKicks();
  }
}

export class Topology {
  readonly s: Scenario;
  readonly tuning: DataPathTuning;
  readonly hostPool = new MbufPool('mb_pool_0');
  readonly tg?: TrafficGenerator;
  readonly obs: Observations = { connections: [], ringEnds: [], resumes: [], detachReports: [], ringErrors: [], escaped: [], backendDownDrops: 0, hostHeldAtCrash: 0, guestHeldAtReset: 0, ringResets: [], mqCommands: [] };
  host: HostInstance | undefined;
  readonly vms: (VmInstance | undefined)[];
  /** Finished host instances' port counters are kept for the results. */
  lastHost: HostInstance | undefined;
  private readonly dead: DeadEnd;
  private readonly connCount: number[];
  private readonly lastEnd: (RingEnd | undefined)[][];
  /** Per VM: the sender/receiver of the current VM2VM stream. */
  streams: { sender: StreamSender; receiver: StreamReceiver; from: number; to: number; flow: number }[] = [];
  private nextFlow = 1;
  /** virtio-user VMs between a `reboot-vm`'s close and the new testpmd's start. */
  private readonly relaunching = new Set<number>();
  /** Every back-end instance launched, per VM socket (their `connections` count socket connections). */
  readonly backendsOf: DpdkBackend[][];
  /** Per VM, per queue: packets the vhost ports of back-ends that have exited moved (dequeued, enqueued). */
  private readonly retiredQueues: { rx: Float64Array; tx: Float64Array }[];
  /** Per VM: `notRunningDrops` of back-ends that have exited. */
  private readonly retiredNotRunning: Float64Array;
  /** Host mbufs in use when the running back-end was launched: held by killed instances for good (the pool is shared). */
  private hostPoolBase = 0;
  /**
   * Exact count of the packets VM `vm`'s guest holds right now (the runner's ring monitors know
   * it): in its testpmd, and per vring those unread on an RX ring or posted and not taken on a TX ring.
   */
  guestHeldCounter?: (vm: number) => { inTestpmd: number; perVring: number[] };
  /** Off while the runner counts a VM killed during traffic itself. */
  countHeldAtStop = true;
  /**
   * Control-plane generation: bumped by everything that can change what `syncHost`/`syncGuests`
   * do or what `ready()` says, so a readiness wait can skip re-checking while it has not moved.
   */
  private cpGen = 0;
  /**
   * `cpGen` plus every running guest's ring generations (guests rebuild rings on their own
   * schedule, not always with a front-end event); never decreases, since a stopped VM's
   * generations are folded into `cpGen`.
   */
  get controlPlaneGeneration(): number {
    let n = this.cpGen;
    for (const v of this.vms) if (v) n += this.ringGenerations(v);
    return n;
  }
  private ringGenerations(v: VmInstance): number {
    let n = 0;
    for (const r of v.fe.guest.vrings) n += r.generation;
    return n;
  }
  /**
   * Rings of a reset or stopped guest that a back-end still polls until it stops them (QEMU's reset
   * and stop sequences are asynchronous): settled when the vring is detached.
   */
  private readonly heldOnRing: { vm: number; vring: number; port: VhostPort; held: number; mark: number }[] = [];

  constructor(
    scenario: Scenario,
    readonly sched: Scheduler,
    readonly ns: SocketNamespace,
    readonly recorder: TraceRecorder,
    readonly hooks: ProfileHooks = {},
    tuning: Partial<DataPathTuning> = {},
  ) {
    this.s = scenario;
    // VM2VM streams run for a minute of virtual time per step: poll less often there.
    const vm2vm: Partial<DataPathTuning> = scenario.topology === 'vm2vm' ? { hostPoll: 2e-3, guestPoll: 2e-3 } : {};
    this.tuning = { ...DEFAULT_TUNING, ...vm2vm, ...tuning };
    this.vms = Array.from({ length: scenario.vms }, () => undefined);
    this.retiredQueues = Array.from({ length: scenario.vms }, () => ({ rx: new Float64Array(scenario.queues), tx: new Float64Array(scenario.queues) }));
    this.backendsOf = Array.from({ length: scenario.vms }, () => []);
    this.retiredNotRunning = new Float64Array(scenario.vms);
    this.connCount = Array.from({ length: scenario.vms }, () => 0);
    this.lastEnd = Array.from({ length: scenario.vms }, () => []);
    this.dead = new DeadEnd((n) => (this.obs.backendDownDrops += n));
    if (scenario.topology === 'pvp') {
      this.tg = new TrafficGenerator(sched, this.hostPool);
      this.tg.connectTo(this.dead);
    }
  }

  // ---- host -----------------------------------------------------------------------------------

  launchBackend(): void {
    this.cpGen++;
    const s = this.s;
    this.hostPoolBase = this.hostPool.inUse;
    const ports: VhostPort[] = [];
    const pvp = s.topology === 'pvp';
    const firstVhostId = pvp ? 1 : 0;
    for (let i = 0; i < s.vms; i++) ports.push(new VhostPort({ id: firstVhostId + i, pool: this.hostPool, queues: s.queues }));
    let nic: Nic | undefined;
    if (pvp) {
      // testpmd --rxq=N --txq=N: every port gets N queues, the NIC spreads flows over them (RSS).
      nic = new Nic({ id: 0, mac: NIC_MAC, pool: this.hostPool, rxRingSize: 4096, queues: s.queues });
      nic.connect(this.tg!);
      this.tg!.connectTo(nic);
    }
    const allPorts = [...(nic ? [nic] : []), ...ports];
    const testpmd = new Testpmd<Mbuf>(this.sched, allPorts, {
      fwdMode: pvp ? 'mac' : 'io',
      topology: s.hostPortTopology,
      pollInterval: this.tuning.hostPoll,
      name: 'host',
    });
    const host: HostInstance = {
      backends: [],
      ports,
      ...(nic ? { nic } : {}),
      testpmd,
      attached: ports.map(() => new Array<RingDevice | undefined>(2 * s.queues).fill(undefined)),
      source: ports.map(() => new Array<RingDevice | undefined>(2 * s.queues).fill(undefined)),
      inner: ports.map(() => new Array<RingDevice | undefined>(2 * s.queues).fill(undefined)),
      attachedOf: ports.map(() => undefined),
      fwd: pvp ? 'mac' : 'io',
      forwarding: false,
      fwdDroppedBefore: ports.map(() => 0),
    };
    this.host = host;
    const bo = s.options?.backend ?? {};
    for (let i = 0; i < s.vms; i++) {
      const be = new DpdkBackend({
        ns: this.ns,
        path: socketPath(i),
        profile: hookBackendProfile({ ...bo, client: bo.client ?? true, queues: s.queues }, this.hooks),
        recorder: this.recorder,
        onEvent: () => {
          this.cpGen++;
          this.syncHostLater();
        },
        onLifecycle: (kind, dev) => {
          this.cpGen++;
          this.onLifecycle(i, kind, dev);
        },
      });
      host.backends.push(be);
      this.backendsOf[i]!.push(be);
    }
    for (const be of host.backends) be.start();
  }

  /** testpmd `quit` (graceful) or a crash. */
  stopBackend(mode: 'quit' | 'kill'): void {
    const host = this.host;
    if (!host) return;
    this.cpGen++;
    host.testpmd.stop();
    host.forwarding = false;
    for (let i = 0; i < this.s.vms; i++) this.retiredNotRunning[i]! += this.instanceNotRunning(host, i);
    // A graceful stop writes the lagging used entries before it lets go (as its detach does):
    // the ring ends where the guest's used->idx then is.
    if (mode === 'quit')
      for (const p of host.ports)
        for (let q = 0; q < this.s.queues; q++) {
          p.enqueues[q]!.completePending();
          p.dequeues[q]!.completePending();
        }
    for (let i = 0; i < this.s.vms; i++) this.recordEnd(i, 'backend-lost');
    if (mode === 'kill') {
      // The process is gone before anything could complete: in-flight buffers stay taken, and
      // the packets in its own mbufs are gone with it.
      for (let i = 0; i < this.s.vms; i++) this.detachVm(host, i, 'crash');
      // Only this instance's: what an earlier killed instance held was counted at its crash.
      this.obs.hostHeldAtCrash += this.hostPool.inUse - this.hostPoolBase;
      for (const be of host.backends) be.kill();
    } else {
      for (let i = 0; i < this.s.vms; i++) this.detachVm(host, i, 'graceful');
      for (const be of host.backends) be.quit();
    }
    if (this.tg) this.tg.connectTo(this.dead);
    for (let i = 0; i < this.s.vms; i++) {
      const p = host.ports[i]!;
      const acc = this.retiredQueues[i]!;
      for (let q = 0; q < this.s.queues; q++) {
        acc.rx[q]! += p.rxQueuePackets[q]!;
        acc.tx[q]! += p.txQueuePackets[q]!;
      }
    }
    this.lastHost = host;
    this.host = undefined;
  }

  /**
   * Packets each of VM `vm`'s queues moved on the host side over the whole run (every back-end
   * instance): `rx[q]` dequeued from the guest's TX vring 2q+1, `tx[q]` enqueued into its RX
   * vring 2q. The per-queue view of "traffic resumes on every queue".
   */
  queuePackets(vm: number): { rx: number[]; tx: number[] } {
    const acc = this.retiredQueues[vm]!;
    const p = this.host?.ports[vm];
    const rx = Array.from(acc.rx, (n, q) => n + (p?.rxQueuePackets[q] ?? 0));
    const tx = Array.from(acc.tx, (n, q) => n + (p?.txQueuePackets[q] ?? 0));
    return { rx, tx };
  }

  /**
   * Packets the host testpmd dropped towards VM `vm`'s vhost port while the VM's device was not
   * running (guest rebooting, VM down, not yet reconnected), over the whole run. eth_vhost_tx
   * returns 0 without counting while allow_queuing is 0, so testpmd frees the burst and counts it
   * in fwd_dropped only; fwd_dropped beyond the port's missed_pkts (a running device with no room)
   * is exactly these.
   */
  notRunningDrops(vm: number): number {
    return this.retiredNotRunning[vm]! + (this.host ? this.instanceNotRunning(this.host, vm) : 0);
  }

  private instanceNotRunning(h: HostInstance, vm: number): number {
    const port = h.ports[vm]!;
    const now = h.testpmd.forwardStats().find((x) => x.port === port.id)?.txDropped ?? 0;
    return Math.max(0, h.fwdDroppedBefore[vm]! + now - port.missedPkts);
  }

  /** testpmd `start`, keeping the fwd_dropped it is about to zero. */
  private startHostTestpmd(h: HostInstance): void {
    if (!h.testpmd.started) {
      const fs = h.testpmd.forwardStats();
      h.ports.forEach((p, i) => (h.fwdDroppedBefore[i]! += fs.find((x) => x.port === p.id)?.txDropped ?? 0));
    }
    h.testpmd.start();
  }

  /** Queue pairs VM `vm`'s guest driver uses: all with MQ negotiated, else one. */
  activePairs(vm: number): number {
    return this.negotiatedPairs(vm);
  }

  /** Queue pairs VM `vm`'s device offers its guest (MQ negotiated: all): what liveness judges per queue. */
  negotiatedPairs(vm: number): number {
    const v = this.vms[vm];
    if (!v || this.s.queues === 1) return 1;
    return hasFeature(v.fe.guest.features, F.NET_MQ) ? this.s.queues : 1;
  }

  startHostForwarding(fwd?: FwdMode): void {
    const h = this.host;
    if (!h) return;
    if (fwd) {
      h.fwd = fwd;
      h.testpmd.setFwd(fwd);
    }
    h.forwarding = true;
    this.startHostTestpmd(h);
  }

  stopHostForwarding(): void {
    const h = this.host;
    if (!h) return;
    h.forwarding = false;
    h.testpmd.stop();
  }

  private onLifecycle(vm: number, kind: 'new-device' | 'destroy-device', dev: VhostUserDevice): void {
    if (kind === 'new-device') {
      this.connCount[vm]!++;
      const v = this.vms[vm];
      const firstOfVm = v !== undefined && !v.connected;
      if (v) v.connected = true;
      this.obs.connections.push({ vm, t: this.sched.now, connection: this.connCount[vm]!, features: dev.features, firstOfVm });
    }
    this.syncHost();
  }

  /** The positions a vring is at when its back-end connection ends (before anything is torn down). */
  private recordEnd(vm: number, end: 'backend-lost' | 'device-reset'): void {
    const h = this.host;
    const v = this.vms[vm];
    if (!h || !v) return;
    for (let r = 0; r < 2 * this.s.queues; r++) {
      const inner = h.inner[vm]![r];
      if (h.attached[vm]![r] === undefined || !inner) continue;
      const st = (inner as unknown as { saveState(): { lastAvailIdx: number; lastUsedIdx: number; availWrap?: boolean; usedWrap?: boolean } }).saveState();
      const packed = this.s.ring === 'packed';
      let used: RingPosition;
      let frontendBase: RingPosition | undefined;
      if (packed) {
        used = { idx: st.lastUsedIdx, wrap: st.usedWrap ?? true };
        // Only QEMU keeps a base across a lost back-end; virtio-user resets packed rings instead.
        if (v.fe instanceof QemuFrontend) {
          const b = v.fe.vringBase(r);
          frontendBase = { idx: b & 0x7fff, wrap: (b & 0x8000) !== 0 };
        }
      } else {
        used = { idx: v.fe.guest.usedIdx(r) };
      }
      const e: RingEnd = {
        vm,
        vring: r,
        t: this.sched.now,
        lastAvail: packed ? { idx: st.lastAvailIdx, wrap: st.availWrap ?? true } : { idx: st.lastAvailIdx },
        used,
        ...(frontendBase ? { frontendBase } : {}),
        end,
      };
      this.obs.ringEnds.push(e);
      this.lastEnd[vm]![r] = e;
    }
  }

  private syncPending = false;
  /** Log events arrive mid-handling; the data path is re-synchronised once the handler is done. */
  private syncHostLater(): void {
    if (this.syncPending) return;
    this.syncPending = true;
    this.sched.after(0, () => {
      this.syncPending = false;
      this.syncHost();
      this.syncGuests();
    }, 'control-plane sync');
  }

  /** Packets the host moved on `vring` so far: enqueued into it (RX) or dequeued from it (TX). */
  private ringMoved(port: VhostPort, r: number): number {
    return r % 2 === 0 ? port.txQueuePackets[r >> 1]! : port.rxQueuePackets[r >> 1]!;
  }

  /**
   * A vring of a reset or stopped guest is detached: what the guest left on it is lost, less what
   * the back-end took from a TX ring meanwhile, plus what it put on an RX ring meanwhile (less what
   * a crash detach reports in flight: counted there).
   */
  private settleHeld(port: VhostPort, vm: number, r: number, rep: DetachReport): void {
    for (let k = this.heldOnRing.length - 1; k >= 0; k--) {
      const e = this.heldOnRing[k]!;
      if (e.vm !== vm || e.vring !== r || e.port !== port) continue;
      const moved = this.ringMoved(port, r) - e.mark;
      const lost = r % 2 === 0 ? e.held + moved - (rep.graceful ? 0 : rep.packetsInFlight) : Math.max(0, e.held - moved);
      this.obs.guestHeldAtReset += Math.max(0, lost);
      this.heldOnRing.splice(k, 1);
    }
  }

  private detachVm(h: HostInstance, vm: number, mode: 'graceful' | 'crash'): void {
    const port = h.ports[vm]!;
    for (let r = 0; r < 2 * this.s.queues; r++) {
      if (h.attached[vm]![r] === undefined) continue;
      const rep = port.detachQueue(r, mode);
      this.settleHeld(port, vm, r, rep);
      this.obs.detachReports.push({ ...rep, vm, t: this.sched.now });
      h.attached[vm]![r] = undefined;
      h.source[vm]![r] = undefined;
    }
    h.attachedOf[vm] = undefined;
  }

  /** Hands ready vrings to the vhost ports and takes away those that stopped. */
  syncHost(): void {
    const h = this.host;
    if (!h) return;
    for (let vm = 0; vm < this.s.vms; vm++) {
      const be = h.backends[vm]!;
      const dev = be.device;
      const port = h.ports[vm]!;
      for (let r = 0; r < 2 * this.s.queues; r++) {
        const view = be.vring(r);
        const cur = h.attached[vm]![r];
        const want = view?.device;
        if (cur !== undefined && (want === undefined || h.attachedOf[vm] !== dev || h.source[vm]![r] !== want)) {
          const rep = port.detachQueue(r, 'graceful');
          this.settleHeld(port, vm, r, rep);
          this.obs.detachReports.push({ ...rep, vm, t: this.sched.now });
          h.attached[vm]![r] = undefined;
          h.source[vm]![r] = undefined;
        }
        if (view && dev && h.attached[vm]![r] === undefined) {
          const mem = dev.memory;
          if (!mem) continue;
          const inner = this.deviceFor(vm, r, view);
          const g = this.guard(vm, r, inner);
          port.attachQueue(r, g, mem, {
            features: dev.features,
            notify: () => {
              try {
                view.call?.write(1n);
              } catch {
                // a closed call fd: nothing to interrupt
              }
            },
            scheduler: this.sched,
            ...(this.tuning.completionDelay > 0 ? { completionDelay: this.tuning.completionDelay } : {}),
          });
          h.attached[vm]![r] = g;
          h.source[vm]![r] = view.device;
          h.inner[vm]![r] = inner;
          this.recordResume(vm, r, inner);
          h.attachedOf[vm] = dev;
        }
        if (view && h.attached[vm]![r] !== undefined) port.setEnabled(r, view.enabled);
      }
    }
  }

  /** Where the data path starts this vring on a new back-end device, against where the last one ended. */
  private recordResume(vm: number, r: number, dev: RingDevice): void {
    const st = (dev as unknown as { saveState(): { lastAvailIdx: number; lastUsedIdx: number; availWrap?: boolean; usedWrap?: boolean } }).saveState();
    const packed = this.s.ring === 'packed';
    const after = this.lastEnd[vm]![r];
    this.obs.resumes.push({
      vm,
      vring: r,
      t: this.sched.now,
      connection: this.connCount[vm]!,
      avail: packed ? { idx: st.lastAvailIdx, wrap: st.availWrap ?? true } : { idx: st.lastAvailIdx },
      used: packed ? { idx: st.lastUsedIdx, wrap: st.usedWrap ?? true } : { idx: st.lastUsedIdx },
      ...(after ? { after } : {}),
    });
    // Kept (not consumed): a connection may hand the same vring over more than once, and each
    // hand-over resumes from the same end. A new VM process starts with no end.
  }

  private guard(vm: number, vring: number, inner: RingDevice): RingDevice {
    return new GuardedDevice(inner, (message) => this.obs.ringErrors.push({ t: this.sched.now, vm, vring, message }));
  }

  private deviceFor(vm: number, r: number, view: VringView): RingDevice {
    if (this.hooks.backendForgetsSplitRebase && this.s.ring === 'split') {
      const v = this.vms[vm];
      const l = v?.fe.guest.vring(r).layout;
      const mem = this.host?.backends[vm]?.device?.memory;
      if (l && l.kind === 'split' && mem) {
        const { kind: _k, ...layout } = l;
        return new SplitDevice(mem, layout, ringFeaturesOf(v!.fe.guest.features), undefined, { lastAvailIdx: 0, lastUsedIdx: 0 });
      }
    }
    return view.device;
  }

  // ---- VMs -------------------------------------------------------------------------------------

  private newFrontend(i: number): AnyFrontend {
    const s = this.s;
    if (s.frontend === 'virtio-user-22.11') {
      const fo = s.options?.frontend ?? {};
      // DPDK's virtio-user binds without unlinking ("remove it and try again"): after a kill the
      // socket file stays, and the operator removes it before starting testpmd again.
      this.ns.unlink(socketPath(i));
      const fe = new VirtioUserFrontend(hookFrontendOptions('virtio-user-22.11', {
        ns: this.ns,
        path: socketPath(i),
        server: fo.server ?? true,
        queues: s.queues,
        queueSize: s.queueSize,
        packedVq: s.ring === 'packed',
        mrgRxbuf: s.mrgRxbuf,
        ...(fo.inOrder !== undefined ? { inOrder: fo.inOrder } : {}),
        ...(fo.cq !== undefined ? { cq: fo.cq } : {}),
        ramSize: this.tuning.guestRam,
        name: `vm${i}`,
      }, this.hooks));
      // Count what each packed reconnect drops per ring (the event only gives the total): TX
      // buffers dropped there are packets lost, which the bounded-loss check must allow for.
      const g = fe.guest;
      const reset = g.resetRing.bind(g);
      g.resetRing = (r: number): number => {
        const dropped = reset(r);
        this.obs.ringResets.push({ vm: i, vring: r, t: this.sched.now, dropped });
        return dropped;
      };
      return fe;
    }
    return new QemuFrontend(hookFrontendOptions('qemu-7.2', {
      ns: this.ns,
      path: socketPath(i),
      chardev: { mode: 'server' },
      queuePairs: s.queues,
      queueSize: s.queueSize,
      packed: s.ring === 'packed',
      guestDriver: s.guest === 'virtio-pmd' ? 'virtio-pmd' : 'virtio-net',
      ramSize: this.tuning.guestRam,
      name: `vm${i}`,
    }, this.hooks));
  }

  launchVm(i: number): void {
    const s = this.s;
    const fe = this.newFrontend(i);
    const area = fe.guest.bufferArea(s.ring);
    let count = Math.min(4 * s.queueSize, 4096);
    if (s.queues > 1) {
      // Every RX ring is kept full: the mempool grows with the queues, as far as guest RAM allows.
      count = Math.min(4 * s.queueSize * s.queues, 16384);
      while (count > 256 && GuestMbufPool.footprint({ count }) > area.size) count = Math.floor(count * 0.9);
    }
    const pool = new GuestMbufPool(fe.guest.memory, area.gpa, { count });
    const v: VmInstance = { index: i, fe, pool, attachedGeneration: -1, forwarding: false, connected: false, resetPending: false, mqSent: false };
    const kick = (r: number): void => {
      const h = this.host;
      if (h && h.attached[i]![r] !== undefined) h.ports[i]!.kick(r);
    };
    if (s.guest === 'virtio-pmd') {
      v.pmd = new GuestVirtioPmd(this.sched, {
        pool,
        features: 0n,
        queues: s.queues,
        mac: vmMac(i),
        onKick: kick,
        fwdMode: 'mac',
        topology: s.options?.testpmd?.guest?.portTopology ?? 'paired',
        pollInterval: this.tuning.guestPoll,
        name: `vm${i} virtio0`,
      });
    } else {
      v.net = new GuestVirtioNet(this.sched, { name: `vm${i}`, mac: vmMac(i), pool, features: 0n, pollInterval: this.tuning.guestPoll, onKick: kick, queues: s.queues });
    }
    fe.on((e) => {
      this.cpGen++;
      if (e.type === 'guest-reset') v.resetPending = false;
      if (e.type === 'guest-reset' || e.type === 'started' || e.type === 'rings-reset' || e.type === 'stopped' || e.type === 'reconnected') this.syncHostLater();
    });
    this.vms[i] = v;
    this.lastEnd[i] = [];
    this.cpGen++;
    fe.start();
  }

  /** QEMU quits (graceful) or is killed: the guest and its drivers vanish with it. */
  stopVm(i: number, mode: 'quit' | 'kill'): void {
    const v = this.vms[i];
    if (!v) return;
    this.cpGen++;
    this.countGuestHeld(v);
    this.detachGuest(v);
    v.pmd?.stop();
    v.net?.stop();
    this.streams = this.streams.filter((st) => st.from !== i && st.to !== i);
    if (mode === 'quit') v.fe.quit();
    else v.fe.kill();
    // Let QEMU's stop sequence run before the guest RAM goes away.
    const fe = v.fe;
    this.sched.after(1, () => {
      this.cpGen++;
      fe.dispose();
    }, `vm${i} exit`);
    this.cpGen += this.ringGenerations(v);
    this.vms[i] = undefined;
  }

  rebootVm(i: number): void {
    const v = this.vms[i];
    if (!v) return;
    this.cpGen++;
    if (v.fe instanceof VirtioUserFrontend) {
      // No guest OS: the device reset virtio-user can do is its testpmd closing the port
      // (ENABLE 0, GET_VRING_BASE per vring) and a new process probing again on the same socket.
      const old = v.fe;
      this.stopVm(i, 'quit');
      this.relaunching.add(i);
      const relaunch = (): void => {
        this.cpGen++;
        if (!this.relaunching.delete(i)) return;
        if (this.vms[i] === undefined) this.launchVm(i);
      };
      if (old.phase === 'closed') relaunch();
      else old.on((e) => {
        if (e.type === 'quit') relaunch();
      });
      return;
    }
    // The guest's testpmd dies with the guest OS; the new boot starts without it.
    this.countGuestHeld(v);
    v.pmd?.stop();
    v.forwarding = false;
    this.detachGuest(v);
    this.recordEnd(i, 'device-reset');
    v.resetPending = true;
    // virtio_net_reset puts curr_queue_pairs back to 1: the booting driver asks again.
    v.mqSent = false;
    v.fe.rebootGuest();
  }

  /**
   * Packets the guest holds, lost with its reset or exit. Its testpmd's are lost at once; those on a
   * ring the back-end still polls are settled when the back-end stops it (`settleHeld`).
   */
  private countGuestHeld(v: VmInstance): void {
    if (v.attachedGeneration < 0 || !this.countHeldAtStop) return;
    if (this.guestHeldCounter) {
      const g = this.guestHeldCounter(v.index);
      this.obs.guestHeldAtReset += g.inTestpmd;
      const h = this.host;
      g.perVring.forEach((held, r) => {
        const port = h?.ports[v.index];
        if (h && port && h.attached[v.index]![r] !== undefined) this.heldOnRing.push({ vm: v.index, vring: r, port, held, mark: this.ringMoved(port, r) });
        else this.obs.guestHeldAtReset += held;
      });
      return;
    }
    // Without ring monitors: guest mbufs in use that are not RX buffers posted on the ring.
    let rx = 0;
    for (let r = 0; r < 2 * this.s.queues; r += 2) rx += v.fe.guest.vring(r).driver?.inFlight ?? 0;
    this.obs.guestHeldAtReset += Math.max(0, v.pool.inUse - rx);
  }

  startGuestForwarding(i: number, fwd?: FwdMode): void {
    const v = this.vms[i];
    if (!v?.pmd) return;
    if (fwd) v.pmd.testpmd.setFwd(fwd);
    v.forwarding = true;
    this.syncGuests();
    v.pmd.start();
  }

  stopGuestForwarding(i: number): void {
    const v = this.vms[i];
    if (!v?.pmd) return;
    v.forwarding = false;
    v.pmd.stop();
  }

  private detachGuest(v: VmInstance): void {
    if (v.attachedGeneration < 0) return;
    if (v.pmd) v.pmd.port.reset();
    if (v.net) v.net.reset();
    v.attachedGeneration = -1;
  }

  /**
   * Gives each guest driver the rings its front-end's guest set up last (every ring of a device
   * is rebuilt together, so vring 0's generation stands for all), each queue pair the
   * driver uses. With MQ negotiated the driver then asks for all its pairs on the control queue
   * (Linux virtio_net after DRIVER_OK; DPDK's virtio PMD in virtio_dev_start with --rxq/--txq),
   * once per driver start: QEMU and virtio-user turn that into SET_VRING_ENABLE(1) per pair.
   */
  syncGuests(): void {
    for (const v of this.vms) {
      if (!v || v.resetPending) continue;
      const g = v.fe.guest;
      const rx0 = g.vring(0);
      if (v.attachedGeneration === rx0.generation && rx0.driver) continue;
      if (v.attachedGeneration >= 0 && v.attachedGeneration !== rx0.generation) this.detachGuest(v);
      const pairs = this.activePairs(v.index);
      let complete = true;
      for (let r = 0; r < 2 * pairs; r++) if (!g.vring(r).driver) complete = false;
      if (!complete) continue;
      const f = g.features;
      for (let q = 0; q < pairs; q++) {
        const drx = g.vring(2 * q).driver as unknown as RingDriver<GuestMbuf>;
        const dtx = g.vring(2 * q + 1).driver as unknown as RingDriver<GuestMbuf>;
        if (v.pmd) v.pmd.port.attachQueuePair(q, drx, dtx, f);
        if (v.net) v.net.queuePairs[q]!.attach(drx, dtx, { hdrLen: vhostHeaderLength(f), mergeable: isMergeable(f) });
      }
      if (v.net) v.net.start();
      v.attachedGeneration = rx0.generation;
      if (pairs > 1 && !v.mqSent) {
        v.mqSent = true;
        this.obs.mqCommands.push({ vm: v.index, t: this.sched.now, pairs });
        v.fe.guestSetQueuePairs(pairs);
      }
    }
  }

  /** vhost-user socket connections after the first one on each VM's socket. */
  get reconnects(): number {
    let n = 0;
    for (const list of this.backendsOf) {
      const c = list.reduce((k, be) => k + be.connections, 0);
      if (c > 0) n += c - 1;
    }
    return n;
  }

  // ---- readiness -------------------------------------------------------------------------------

  /** Every running VM is connected to a running back-end whose vrings the data path polls, and its guest driver is attached. */
  ready(vm?: number): boolean {
    const h = this.host;
    if (!h) return false;
    for (let i = 0; i < this.s.vms; i++) {
      if (vm !== undefined && vm !== i) continue;
      const v = this.vms[i];
      if (!v && this.relaunching.has(i)) return false;
      if (!v) continue;
      if (v.resetPending) return false;
      for (let r = 0; r < 2 * this.activePairs(i); r++) if (h.attached[i]![r] === undefined) return false;
      if (v.attachedGeneration !== v.fe.guest.vring(0).generation || !v.fe.guest.vring(0).driver) return false;
    }
    return true;
  }

  // ---- traffic ---------------------------------------------------------------------------------

  startTraffic(o: { rate?: number; size?: number; flows?: number; seconds: number }): void {
    if (!this.tg) return;
    // One flow would sit on one RSS queue: with several pairs the default offers enough flows to reach each.
    const flows = o.flows ?? (this.s.queues > 1 ? MQ_DEFAULT_FLOWS_PER_QUEUE * this.s.queues : 1);
    this.tg.start({ ratePps: o.rate ?? this.tuning.defaultRate, frameSize: o.size ?? 64, flows, tick: this.tuning.tgTick, dstMac: NIC_MAC, srcMac: TG_MAC, count: this.tg.sent + Math.round((o.rate ?? this.tuning.defaultRate) * o.seconds) });
  }

  stopTraffic(): void {
    this.tg?.stop();
  }

  /**
   * Stops every poller while nothing can move (VM2VM after a stream completed: iperf idles for
   * the rest of its seconds). Polling an empty ring changes no state, so skipping it only saves
   * wall time; host testpmd's forward-stream counters restart as after `stop`/`start`.
   */
  pauseDataPath(): void {
    const h = this.host;
    if (h?.forwarding) h.testpmd.stop();
    for (const v of this.vms) v?.net?.stop();
  }

  resumeDataPath(): void {
    const h = this.host;
    if (h?.forwarding) this.startHostTestpmd(h);
    for (const v of this.vms) if (v?.net && v.attachedGeneration >= 0) v.net.start();
  }

  /** VM2VM: an iperf-like stream from VM `from` to VM `to`. */
  startStream(from: number, to: number, segments: number): void {
    const a = this.vms[from];
    const b = this.vms[to];
    if (!a?.net || !b?.net) return;
    const flow = this.nextFlow++;
    const receiver = b.net.openReceiver({ flow, dst: a.net.mac });
    const sender = a.net.openSender({ flow, segments, dst: b.net.mac });
    this.streams.push({ sender, receiver, from, to, flow });
  }
}

export type { VmInstance, HostInstance };
