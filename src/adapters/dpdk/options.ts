/**
 * Typed testpmd options → argv, for the two roles vhostsim runs real DPDK in:
 * the vhost back-end (`net_vhost`, usually `client=1`) and the VM stand-in (`net_virtio_user`,
 * usually `server=1`). EAL options come first, testpmd's own options after `--`.
 */

/** EAL lcores for one testpmd: `-l LIST --main-lcore M`. */
export interface LcorePlacement {
  lcores: number[];
  mainLcore: number;
}

/**
 * Puts the forwarding lcore on `forwardLcore` and the main (interactive) lcore on another
 * one of `lcores`. On a 2-core machine two testpmds must forward on different cores:
 * two busy-polling lcores sharing a core fall to a few tens of kpps.
 */
export function placeForwarding(forwardLcore: number, lcores: number[] = [0, 1]): LcorePlacement {
  if (!lcores.includes(forwardLcore)) throw new Error(`forwarding lcore ${forwardLcore} is not in ${lcores.join(',')}`);
  const main = lcores.find((c) => c !== forwardLcore);
  if (main === undefined) throw new Error('need at least two lcores: one main, one forwarding');
  return { lcores: [...lcores].sort((a, b) => a - b), mainLcore: main };
}

type DevargValue = string | number | boolean;

/** `net_vhost<id>`: the DPDK vhost PMD, the back-end. */
export interface VhostVdev {
  kind: 'vhost';
  /** Device index in the name `net_vhost<id>`; 0 by default. */
  id?: number;
  /** Unix socket path. */
  iface: string;
  /** Connect to the socket (and retry every second) instead of listening on it. */
  client?: boolean;
  /** Queue pairs. */
  queues?: number;
  /** Further devargs (`iommu-support`, `postcopy-support`, `tso`, `linear-buffer`, …). */
  extra?: Record<string, DevargValue>;
}

/** `net_virtio_user<id>`: DPDK's virtio-user PMD, a front-end standing in for a VM. */
export interface VirtioUserVdev {
  kind: 'virtio-user';
  id?: number;
  /** Unix socket path. */
  path: string;
  /** Listen on the socket (the back-end connects), as QEMU's `server=on` does. */
  server?: boolean;
  queues?: number;
  /** Ring size; DPDK's default is 256. */
  queueSize?: number;
  /** Packed ring (`packed_vq=1`); split otherwise. */
  packedVq?: boolean;
  /** Mergeable RX buffers; DPDK's default is on. */
  mrgRxbuf?: boolean;
  /** VIRTIO_F_IN_ORDER; DPDK's default is on. */
  inOrder?: boolean;
  mac?: string;
  /** Control virtqueue. */
  cq?: boolean;
  vectorized?: boolean;
  extra?: Record<string, DevargValue>;
}

/** Any other vdev, passed through as written (`net_pcap0,iface=veth0`). */
export interface RawVdev {
  kind: 'raw';
  spec: string;
}

export type Vdev = VhostVdev | VirtioUserVdev | RawVdev;

/**
 * Where the back-end's physical-side port comes from. A lab has a real PCI port; here a
 * software port (`net_pcap`, `net_af_packet`, `net_tap`, e.g. on a veth pair) stands in.
 * `PvpRig` (pvp.ts) runs af_packet on a veth pair; a lab passes its PCI address instead.
 */
export type NicDescription =
  | { kind: 'pci'; address: string }
  | { kind: 'pcap'; id?: number; iface?: string; rxPcap?: string; txPcap?: string }
  | { kind: 'af_packet'; id?: number; iface: string; qpairs?: number }
  | { kind: 'tap'; id?: number; iface: string };

export interface EalOptions {
  /** Per-process runtime-directory name; two concurrent testpmds must differ. */
  filePrefix: string;
  lcores?: number[];
  mainLcore?: number;
  /** `--no-huge`; on by default (no hugepages here). */
  noHuge?: boolean;
  /** `-m` in MiB; 1024 by default. */
  memoryMb?: number;
  /** `--no-pci`; on by default unless a PCI NIC is given. */
  noPci?: boolean;
  /**
   * `--single-file-segments`: memory in one file per memseg list, so virtio-user's
   * SET_MEM_TABLE fits in the 8 fds a vhost-user message may carry. With hugepages it is
   * required; with `--no-huge` (one anonymous memfd already) DPDK 22.11 works without it.
   */
  singleFileSegments?: boolean;
  inMemory?: boolean;
  /** Each becomes `--log-level=…`, e.g. `lib.vhost.config:debug`. */
  logLevels?: string[];
  vdevs?: Vdev[];
  /** PCI devices to use (`-a`). */
  allow?: string[];
  /** Driver shared objects to load (`-d`), for a PMD not in EAL's plugin directory. */
  drivers?: string[];
  extra?: string[];
}

export type ForwardMode =
  | 'io'
  | 'mac'
  | 'macswap'
  | 'rxonly'
  | 'txonly'
  | 'flowgen'
  | 'csum'
  | 'icmpecho'
  | 'noisy'
  | '5tswap';

export type PortTopology = 'paired' | 'chained' | 'loop';

/** testpmd's own options (after `--`). */
export interface TestpmdAppOptions {
  /** `-i`: the `testpmd> ` prompt on stdin; on by default (the driver needs it). */
  interactive?: boolean;
  /** `-a` (after `--`): start forwarding at launch. */
  autoStart?: boolean;
  nbCores?: number;
  txd?: number;
  rxd?: number;
  rxq?: number;
  txq?: number;
  /** `--total-num-mbufs`; the default pool is too small for several ports × 1024 descriptors. */
  totalNumMbufs?: number;
  portTopology?: PortTopology;
  forwardMode?: ForwardMode;
  /** `--tx-first`: send a burst when forwarding starts (only without `-i`). */
  txFirst?: boolean;
  burst?: number;
  /** `--txpkts`: TX packet segment lengths for txonly. */
  txPkts?: number[];
  extra?: string[];
}

export interface TestpmdOptions {
  eal: EalOptions;
  app?: TestpmdAppOptions;
}

function devargs(name: string, pairs: Array<[string, DevargValue | undefined]>, extra?: Record<string, DevargValue>): string {
  const parts = [name];
  const all: Array<[string, DevargValue | undefined]> = [...pairs, ...Object.entries(extra ?? {})];
  for (const [k, v] of all) {
    if (v === undefined) continue;
    const s = typeof v === 'boolean' ? (v ? '1' : '0') : String(v);
    // devargs are comma-separated key=value; a comma or '=' in a value cannot be expressed.
    if (/[,=]/.test(s) || /[,=]/.test(k)) throw new Error(`devarg ${k}=${s} contains ',' or '='`);
    parts.push(`${k}=${s}`);
  }
  return parts.join(',');
}

/** The `--vdev` argument for one vdev. */
export function vdevSpec(v: Vdev): string {
  switch (v.kind) {
    case 'vhost':
      return devargs(
        `net_vhost${v.id ?? 0}`,
        [
          ['iface', v.iface],
          ['client', v.client],
          ['queues', v.queues],
        ],
        v.extra,
      );
    case 'virtio-user':
      return devargs(
        `net_virtio_user${v.id ?? 0}`,
        [
          ['path', v.path],
          ['server', v.server],
          ['queues', v.queues],
          ['queue_size', v.queueSize],
          ['packed_vq', v.packedVq],
          ['mrg_rxbuf', v.mrgRxbuf],
          ['in_order', v.inOrder],
          ['mac', v.mac],
          ['cq', v.cq],
          ['vectorized', v.vectorized],
        ],
        v.extra,
      );
    case 'raw':
      return v.spec;
  }
}

/** The EAL part of a NIC description: a PCI allow entry or a software-port vdev. */
export function nicEal(nic: NicDescription): { allow?: string[]; vdev?: Vdev } {
  switch (nic.kind) {
    case 'pci':
      return { allow: [nic.address] };
    case 'pcap': {
      const pairs: Array<[string, DevargValue | undefined]> = nic.iface
        ? [['iface', nic.iface]]
        : [
            ['rx_pcap', nic.rxPcap],
            ['tx_pcap', nic.txPcap],
          ];
      return { vdev: { kind: 'raw', spec: devargs(`net_pcap${nic.id ?? 0}`, pairs) } };
    }
    case 'af_packet':
      return {
        vdev: {
          kind: 'raw',
          spec: devargs(`net_af_packet${nic.id ?? 0}`, [
            ['iface', nic.iface],
            ['qpairs', nic.qpairs],
          ]),
        },
      };
    case 'tap':
      return { vdev: { kind: 'raw', spec: devargs(`net_tap${nic.id ?? 0}`, [['iface', nic.iface]]) } };
  }
}

function num(flag: string, v: number | undefined): string[] {
  if (v === undefined) return [];
  if (!Number.isInteger(v) || v < 0) throw new Error(`${flag} wants a non-negative integer, got ${v}`);
  return [`${flag}=${v}`];
}

/** EAL argv. */
export function ealArgs(e: EalOptions): string[] {
  if (!/^[A-Za-z0-9._-]+$/.test(e.filePrefix)) throw new Error(`file prefix ${JSON.stringify(e.filePrefix)} must be [A-Za-z0-9._-]+`);
  const out: string[] = [];
  if (e.noHuge ?? true) out.push('--no-huge');
  out.push('-m', String(e.memoryMb ?? 1024));
  const allow = e.allow ?? [];
  if (e.noPci ?? allow.length === 0) out.push('--no-pci');
  for (const a of allow) out.push('-a', a);
  out.push(`--file-prefix=${e.filePrefix}`);
  if (e.lcores) out.push('-l', e.lcores.join(','));
  if (e.mainLcore !== undefined) out.push('--main-lcore', String(e.mainLcore));
  if (e.singleFileSegments) out.push('--single-file-segments');
  if (e.inMemory) out.push('--in-memory');
  for (const l of e.logLevels ?? []) out.push(`--log-level=${l}`);
  for (const d of e.drivers ?? []) out.push('-d', d);
  for (const v of e.vdevs ?? []) out.push('--vdev', vdevSpec(v));
  out.push(...(e.extra ?? []));
  return out;
}

/** testpmd argv (after `--`). */
export function appArgs(a: TestpmdAppOptions = {}): string[] {
  const out: string[] = [];
  if (a.interactive ?? true) out.push('-i');
  if (a.autoStart) out.push('-a');
  out.push(...num('--nb-cores', a.nbCores));
  out.push(...num('--txd', a.txd));
  out.push(...num('--rxd', a.rxd));
  out.push(...num('--rxq', a.rxq));
  out.push(...num('--txq', a.txq));
  out.push(...num('--total-num-mbufs', a.totalNumMbufs));
  out.push(...num('--burst', a.burst));
  if (a.portTopology) out.push(`--port-topology=${a.portTopology}`);
  if (a.forwardMode) out.push(`--forward-mode=${a.forwardMode}`);
  if (a.txPkts) out.push(`--txpkts=${a.txPkts.join(',')}`);
  if (a.txFirst) out.push('--tx-first');
  out.push(...(a.extra ?? []));
  return out;
}

/** The full argv: EAL options, `--`, testpmd options. */
export function testpmdArgs(o: TestpmdOptions): string[] {
  return [...ealArgs(o.eal), '--', ...appArgs(o.app)];
}

/** Defaults shared by both roles: one forwarding core, a pool big enough for 1024-entry rings. */
const APP_DEFAULTS: TestpmdAppOptions = { interactive: true, nbCores: 1, totalNumMbufs: 16384 };

interface RoleCommon {
  filePrefix: string;
  /** Queue pairs per device; 1 by default. testpmd polls as many with `--rxq/--txq`. */
  queues?: number;
  placement?: LcorePlacement;
  memoryMb?: number;
  logLevels?: string[];
  /** `-d` driver objects (e.g. the af_packet PMD when EAL does not load it by itself). */
  drivers?: string[];
  /** Run on hugepages (no `--no-huge`): a lab's PCI NIC needs DMA-able memory. */
  hugepages?: boolean;
  app?: TestpmdAppOptions;
}

export interface BackendOptions extends RoleCommon {
  /** One socket per `net_vhost<i>` (several for multi-VM topologies). */
  sockets: string | string[];
  /** `client=1` (the reconnect set-up); true by default. */
  client?: boolean;
  /** `--log-level=lib.vhost.config:debug`: adds `processing … succeeded` and ring-mapping lines. */
  debugLog?: boolean;
  /** A physical-side port in front of the vhost ports. */
  nic?: NicDescription;
  vhostExtra?: Record<string, DevargValue>;
}

/** The vhost back-end: `--vdev net_vhostI,iface=SOCK,client=1,queues=N` per socket. */
export function backendOptions(o: BackendOptions): TestpmdOptions {
  const queues = o.queues ?? 1;
  const sockets = typeof o.sockets === 'string' ? [o.sockets] : o.sockets;
  const vdevs: Vdev[] = [];
  const allow: string[] = [];
  if (o.nic) {
    const n = nicEal(o.nic);
    if (n.allow) allow.push(...n.allow);
    if (n.vdev) vdevs.push(n.vdev);
  }
  sockets.forEach((iface, id) => vdevs.push({ kind: 'vhost', id, iface, client: o.client ?? true, queues, extra: o.vhostExtra }));
  const logLevels = [...(o.logLevels ?? [])];
  if (o.debugLog) logLevels.push('lib.vhost.config:debug');
  return {
    eal: {
      filePrefix: o.filePrefix,
      memoryMb: o.memoryMb,
      lcores: o.placement?.lcores,
      mainLcore: o.placement?.mainLcore,
      allow,
      logLevels,
      vdevs,
      drivers: o.drivers,
      noHuge: o.hugepages ? false : undefined,
    },
    app: { ...APP_DEFAULTS, ...(queues > 1 ? { rxq: queues, txq: queues } : {}), ...o.app },
  };
}

export interface VirtioUserOptions extends RoleCommon {
  socket: string;
  /** `server=1`: virtio-user listens and waits for the back-end; true by default. */
  server?: boolean;
  packed?: boolean;
  mrgRxbuf?: boolean;
  inOrder?: boolean;
  queueSize?: number;
  mac?: string;
  /**
   * Control virtqueue (`cq=1`). virtio-user enables only queue pair 0 by itself; the others
   * are enabled through the MQ control command, so it is on by default when queues > 1.
   */
  cq?: boolean;
  /** On by default: see `EalOptions.singleFileSegments`. */
  singleFileSegments?: boolean;
  virtioExtra?: Record<string, DevargValue>;
}

/** The VM stand-in: `--vdev net_virtio_user0,path=SOCK,server=1,queues=N[,packed_vq=1]…`. */
export function virtioUserOptions(o: VirtioUserOptions): TestpmdOptions {
  const queues = o.queues ?? 1;
  return {
    eal: {
      filePrefix: o.filePrefix,
      memoryMb: o.memoryMb,
      lcores: o.placement?.lcores,
      mainLcore: o.placement?.mainLcore,
      singleFileSegments: o.singleFileSegments ?? true,
      logLevels: o.logLevels,
      drivers: o.drivers,
      noHuge: o.hugepages ? false : undefined,
      vdevs: [
        {
          kind: 'virtio-user',
          path: o.socket,
          server: o.server ?? true,
          queues,
          packedVq: o.packed ? true : undefined,
          mrgRxbuf: o.mrgRxbuf,
          inOrder: o.inOrder,
          queueSize: o.queueSize,
          mac: o.mac,
          cq: o.cq ?? (queues > 1 ? true : undefined),
          extra: o.virtioExtra,
        },
      ],
    },
    app: { ...APP_DEFAULTS, ...(queues > 1 ? { rxq: queues, txq: queues } : {}), ...o.app },
  };
}

/** A command line for people (logs, reports): POSIX-shell quoted where needed. */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
