/**
 * Test rigs for the data path: a guest with its memory, rings and mempool, and the PVP
 * loop wired without a control plane (device halves handed straight to the vhost port).
 * Used by the tests beside the modules; small enough to copy into a topology builder.
 */
import { GuestMemory } from '../memory/index.ts';
import type { RingDriver, RingKind } from '../ring/factory.ts';
import { NO_FEATURES, type RingFeatures } from '../ring/types.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { featureMask, VirtioFeature as F } from '../virtio/index.ts';
import { Testpmd, type FwdMode, type PortTopology } from './forwarding.ts';
import { GuestMbufPool, type GuestMbuf } from './guest-mbuf.ts';
import { GuestVirtioPmd } from './guest-virtio-pmd.ts';
import { MbufPool } from './mbuf.ts';
import { Nic } from './nic.ts';
import { parseMac } from './packet.ts';
import { layoutNetRings, makeBackendDevice, makeGuestDrivers, type DeviceResume, type NetRings } from './ring-setup.ts';
import { TrafficGenerator } from './traffic-generator.ts';
import { VhostPort } from './vhost-port.ts';

/** VERSION_1 + MRG_RXBUF (+ RING_PACKED for packed rings): what QEMU negotiates with mrg_rxbuf=on. */
export function netFeatures(kind: RingKind, opts: { mergeable?: boolean } = {}): bigint {
  let f = featureMask(F.VERSION_1);
  if (opts.mergeable ?? true) f |= featureMask(F.NET_MRG_RXBUF);
  if (kind === 'packed') f |= featureMask(F.RING_PACKED);
  return f;
}

export interface GuestRigOptions {
  kind: RingKind;
  queueSize?: number;
  features?: bigint;
  ringFeatures?: RingFeatures;
  /** Mempool slots (default 4 × queue size). */
  poolCount?: number;
  dataRoom?: number;
  queuePairs?: number;
}

export interface GuestRig {
  kind: RingKind;
  mem: GuestMemory;
  rings: NetRings;
  pool: GuestMbufPool;
  /** A free 4 KiB page of guest memory. */
  scratch: number;
  features: bigint;
  ringFeatures: RingFeatures;
  drivers: RingDriver<GuestMbuf>[];
}

export function makeGuestRig(o: GuestRigOptions): GuestRig {
  const queueSize = o.queueSize ?? 256;
  const ringFeatures = o.ringFeatures ?? NO_FEATURES;
  const poolCount = o.poolCount ?? 4 * queueSize;
  const poolBytes = GuestMbufPool.footprint({ count: poolCount, dataRoom: o.dataRoom });
  const qp = o.queuePairs ?? 1;
  const ringBytes = 2 * qp * (Math.ceil((16 * queueSize + 8 * queueSize + 2 * queueSize + 64) / 4096) + 1) * 4096;
  const mem = GuestMemory.create(Math.ceil((ringBytes + poolBytes + 3 * 4096) / 4096) * 4096);
  const rings = layoutNetRings(mem, { kind: o.kind, queueSize, queuePairs: qp, base: 0 });
  // one spare page between the rings and the pool, for hand-built buffers in tests
  const scratch = rings.end;
  const pool = new GuestMbufPool(mem, scratch + 4096, { count: poolCount, dataRoom: o.dataRoom });
  const drivers = makeGuestDrivers<GuestMbuf>(mem, rings, ringFeatures);
  return { kind: o.kind, mem, rings, pool, scratch, features: o.features ?? netFeatures(o.kind), ringFeatures, drivers };
}

export interface PvpOptions {
  kind: RingKind;
  seed?: number | string;
  queueSize?: number;
  ringFeatures?: RingFeatures;
  mergeable?: boolean;
  /** Back-end completion delay (see VhostQueueOptions). */
  completionDelay?: number;
  hostPoll?: number;
  guestPoll?: number;
  hostFwd?: FwdMode;
  guestFwd?: FwdMode;
  /** Start the guest driver (post RX buffers) at construction (default true). */
  guestDriverStarted?: boolean;
}

export const TG_MAC = parseMac('00:00:00:00:aa:01');
export const NIC_MAC = parseMac('3c:fd:fe:00:00:00');

/** TG → NIC → host testpmd (port 0 NIC, port 1 vhost) → guest virtio-pmd → back. */
export class PvpRig {
  readonly sched: Scheduler;
  readonly hostPool = new MbufPool('mb_pool_0');
  readonly nic: Nic;
  readonly vhost: VhostPort;
  readonly host: Testpmd;
  readonly guestRig: GuestRig;
  readonly guest: GuestVirtioPmd;
  readonly tg: TrafficGenerator;
  /** Used-buffer notifications the guest got, per vring. */
  readonly calls = [0, 0];
  private readonly o: PvpOptions;

  constructor(o: PvpOptions) {
    this.o = o;
    this.sched = new Scheduler({ seed: o.seed ?? 1 });
    this.nic = new Nic({ id: 0, mac: NIC_MAC, pool: this.hostPool, rxRingSize: 4096 });
    this.vhost = new VhostPort({ id: 1, pool: this.hostPool });
    this.host = new Testpmd(this.sched, [this.nic, this.vhost], { fwdMode: o.hostFwd ?? 'mac', pollInterval: o.hostPoll ?? 1e-5, name: 'host' });
    this.guestRig = makeGuestRig({ kind: o.kind, queueSize: o.queueSize, ringFeatures: o.ringFeatures, features: netFeatures(o.kind, { mergeable: o.mergeable }) });
    this.guest = new GuestVirtioPmd(this.sched, {
      pool: this.guestRig.pool,
      features: this.guestRig.features,
      onKick: (v) => this.vhost.kick(v),
      fwdMode: o.guestFwd ?? 'mac',
      pollInterval: o.guestPoll ?? 1e-5,
    });
    if (o.guestDriverStarted ?? true) this.guest.attach(this.guestRig.drivers[0], this.guestRig.drivers[1]);
    this.attachBackend('fresh');
    this.tg = new TrafficGenerator(this.sched, this.hostPool);
    this.tg.connect(this.nic);
  }

  /** A back-end session begins: new device halves for vrings 0 and 1. */
  attachBackend(resume: DeviceResume | [DeviceResume, DeviceResume]): void {
    const g = this.guestRig;
    for (const v of [0, 1]) {
      const r = Array.isArray(resume) ? resume[v] : resume;
      const dev = makeBackendDevice(g.mem, g.rings, v, g.ringFeatures, r);
      this.vhost.attachQueue(v, dev, g.mem, {
        features: g.features,
        notify: () => this.calls[v]++,
        completionDelay: this.o.completionDelay,
        scheduler: this.sched,
      });
    }
  }

  start(): void {
    this.host.start();
    this.guest.start();
  }

  /**
   * Guest reboot with the socket kept: QEMU stops the rings (the back-end stops them
   * gracefully), the device is reset, the guest driver rebuilds its rings from scratch and
   * starts again, and the back-end gets device halves for the new rings.
   */
  rebootGuest(): void {
    const g = this.guestRig;
    this.vhost.detachAll('graceful');
    this.guest.port.reset();
    g.rings = layoutNetRings(g.mem, { kind: g.kind, queueSize: g.rings.queueSize, base: 0 });
    g.drivers = makeGuestDrivers<GuestMbuf>(g.mem, g.rings, g.ringFeatures);
    this.guest.attach(g.drivers[0], g.drivers[1]);
    this.attachBackend('fresh');
  }
}
