/**
 * testpmd's forwarding loop over a set of ports, in virtual time: one forwarding lcore
 * (`--nb-cores=1`) that every `pollInterval` runs each stream once — receive a burst on
 * the stream's RX port/queue, apply the engine, send on its TX port/queue, free what
 * could not be sent (fwd_dropped).
 *
 * Facts from DPDK 22.11 app/test-pmd:
 * - streams: one per (forwarding port, RX queue); the TX port comes from the port
 *   topology (config.c fwd_topology_tx_port_get): paired 0↔1, 2↔3 … with an odd last
 *   port paired with itself; chained i → i+1 (mod n); loop i → i. The TX queue is the RX
 *   queue's number. peer_addr = TX port id.
 * - `mac` (macfwd.c): destination = peer_eth_addrs[tx port] (02:00:00:00:00:<port> unless
 *   set, testpmd.c init_config), source = the TX port's own address.
 * - `macswap` swaps them; `io` (iofwd.c) forwards untouched; `rxonly` frees what it gets;
 *   `txonly` sends fresh packets of `txPktLen` bytes (default 64) on every stream's TX port.
 * - default engine io, default burst 32 (DEF_PKT_BURST), no TX retry.
 */
import { PacketBuffer } from '../memory/index.ts';
import type { EventHandle, Scheduler } from '../sim/scheduler.ts';
import type { NetPacket } from './mbuf.ts';
import { FrameKind, MIN_FRAME_LEN, writeFrame, type FrameFields } from './packet.ts';
import { formatForwardStats, PortStatsDisplay, type EthPort, type ForwardPortStats, type PortCounters } from './port.ts';

export type FwdMode = 'io' | 'mac' | 'macswap' | 'rxonly' | 'txonly';
export type PortTopology = 'paired' | 'chained' | 'loop';

export const DEF_PKT_BURST = 32;

export interface TestpmdOptions {
  fwdMode?: FwdMode;
  topology?: PortTopology;
  /** Packets per burst (`--burst`, default 32). */
  burst?: number;
  /** Virtual seconds between two runs of the forwarding loop (default 10 µs). */
  pollInterval?: number;
  /** txonly packet length in bytes (default 64). */
  txPktLen?: number;
  /** `set eth-peer`: peer address by port id. */
  peerAddrs?: ReadonlyMap<number, number>;
  /** Label for scheduler events. */
  name?: string;
}

/** testpmd's `struct fwd_stream` counters. */
export interface FwdStream {
  readonly rxPortIndex: number;
  readonly rxQueue: number;
  readonly txPortIndex: number;
  readonly txQueue: number;
  /** Port ids. */
  readonly rxPort: number;
  readonly txPort: number;
  /** peer_eth_addrs[peer_addr]. */
  readonly peerMac: number;
  rxPackets: number;
  txPackets: number;
  fwdDropped: number;
  /** txonly: next sequence number. */
  seq: number;
}

/** fwd_topology_tx_port_get over forwarding-port indices. */
export function topologyTxPort(topology: PortTopology, rxp: number, nbPorts: number): number {
  switch (topology) {
    case 'paired':
      if ((rxp & 1) === 0) return rxp + 1 < nbPorts ? rxp + 1 : rxp;
      return rxp - 1;
    case 'chained':
      return (rxp + 1) % nbPorts;
    case 'loop':
      return rxp;
  }
}

/** testpmd's default peer address for a port: 02:00:00:00:00:<port id>. */
export function defaultPeerMac(portId: number): number {
  return 0x02_00_00_00_00_00 + (portId & 0xff);
}

export class Testpmd<P extends NetPacket = NetPacket> {
  readonly ports: readonly EthPort<P>[];
  streams: FwdStream[] = [];
  fwdMode: FwdMode;
  topology: PortTopology;
  readonly burst: number;
  readonly pollInterval: number;
  readonly txPktLen: number;
  readonly name: string;
  /** Runs of the forwarding loop. */
  polls = 0;
  private readonly peerAddrs: Map<number, number>;
  private readonly pkts: P[] = [];
  private timer: EventHandle | null = null;
  private readonly display = new PortStatsDisplay();
  private startCounters: PortCounters[] = [];
  private readonly scratch: PacketBuffer;
  private readonly txFields: FrameFields = { dst: 0, src: 0, kind: FrameKind.Data, flow: 0, seq: 0 };
  private readonly pollFn = () => this.poll();
  private readonly pollLabel: string;

  constructor(
    private readonly sched: Scheduler,
    ports: readonly EthPort<P>[],
    opts: TestpmdOptions = {},
  ) {
    if (ports.length === 0) throw new RangeError('testpmd needs at least one port');
    this.ports = ports;
    this.fwdMode = opts.fwdMode ?? 'io';
    this.topology = opts.topology ?? 'paired';
    this.burst = opts.burst ?? DEF_PKT_BURST;
    if (!Number.isInteger(this.burst) || this.burst < 1 || this.burst > 512) throw new RangeError(`burst ${this.burst} is outside 1..512`);
    this.pollInterval = opts.pollInterval ?? 1e-5;
    if (!(this.pollInterval > 0)) throw new RangeError(`pollInterval ${this.pollInterval} is not positive`);
    this.txPktLen = opts.txPktLen ?? 64;
    if (this.txPktLen < MIN_FRAME_LEN) throw new RangeError(`txonly packet length ${this.txPktLen} is below ${MIN_FRAME_LEN}`);
    this.peerAddrs = new Map(opts.peerAddrs ?? []);
    this.name = opts.name ?? 'testpmd';
    this.pollLabel = `${this.name} fwd`;
    this.scratch = new PacketBuffer(Math.ceil(this.txPktLen / 8) * 8);
    this.buildStreams();
  }

  get started(): boolean {
    return this.timer !== null;
  }

  /** `set fwd <mode>` (takes effect at once, as the next burst uses the new engine). */
  setFwd(mode: FwdMode): void {
    this.fwdMode = mode;
  }

  /** `set eth-peer <port> <mac>`. */
  setPeer(portId: number, mac: number): void {
    this.peerAddrs.set(portId, mac);
    this.buildStreams();
  }

  peerMac(portId: number): number {
    return this.peerAddrs.get(portId) ?? defaultPeerMac(portId);
  }

  private buildStreams(): void {
    const old = this.streams;
    const n = this.ports.length;
    this.streams = [];
    for (let i = 0; i < n; i++) {
      const tx = topologyTxPort(this.topology, i, n);
      for (let q = 0; q < this.ports[i].nbQueues; q++) {
        const prev = old.find((s) => s.rxPortIndex === i && s.rxQueue === q);
        this.streams.push({
          rxPortIndex: i,
          rxQueue: q,
          txPortIndex: tx,
          txQueue: q,
          rxPort: this.ports[i].id,
          txPort: this.ports[tx].id,
          peerMac: this.peerMac(this.ports[tx].id),
          rxPackets: prev?.rxPackets ?? 0,
          txPackets: prev?.txPackets ?? 0,
          fwdDropped: prev?.fwdDropped ?? 0,
          seq: prev?.seq ?? 0,
        });
      }
    }
  }

  /** `start`: zeroes the stream counters and remembers the port counters for `stop`'s report. */
  start(): void {
    if (this.timer !== null) return;
    this.buildStreams();
    for (const s of this.streams) s.rxPackets = s.txPackets = s.fwdDropped = 0;
    this.startCounters = this.ports.map((p) => p.stats().snapshot());
    this.timer = this.sched.after(this.pollInterval, this.pollFn, this.pollLabel);
  }

  /** `stop`: ends forwarding and returns the "Forward statistics" text testpmd prints. */
  stop(): string {
    if (this.timer === null) return '';
    this.timer.cancel();
    this.timer = null;
    return formatForwardStats(this.forwardStats());
  }

  /** Per-port numbers since `start` (what `stop` prints). */
  forwardStats(): ForwardPortStats[] {
    return this.ports.map((p, i) => {
      const now = p.stats();
      const base = this.startCounters[i];
      let txDropped = 0;
      for (const s of this.streams) if (s.txPortIndex === i) txDropped += s.fwdDropped;
      return {
        port: p.id,
        rxPackets: now.rxPackets - (base?.rxPackets ?? 0),
        rxMissed: now.rxMissed - (base?.rxMissed ?? 0),
        rxErrors: now.rxErrors - (base?.rxErrors ?? 0),
        rxNombuf: now.rxNombuf - (base?.rxNombuf ?? 0),
        txPackets: now.txPackets - (base?.txPackets ?? 0),
        txErrors: now.txErrors - (base?.txErrors ?? 0),
        txDropped,
      };
    });
  }

  /** `show port stats all`, with rates over virtual time since the previous show. */
  showPortStats(): string {
    return this.display.show(this.ports, this.sched.now);
  }

  /** `clear port stats all`. */
  clearPortStats(): void {
    for (const p of this.ports) p.resetStats();
  }

  private poll(): void {
    this.timer = this.sched.after(this.pollInterval, this.pollFn, this.pollLabel);
    this.runOnce();
  }

  /** One run of the forwarding loop over every stream (tests call it directly). */
  runOnce(): void {
    this.polls++;
    for (const s of this.streams) {
      if (this.fwdMode === 'txonly') this.txonly(s);
      else this.forward(s);
    }
  }

  private forward(s: FwdStream): void {
    const pkts = this.pkts;
    const rxPort = this.ports[s.rxPortIndex];
    const nb = rxPort.rxBurst(s.rxQueue, pkts, this.burst);
    if (nb === 0) return;
    s.rxPackets += nb;
    const mode = this.fwdMode;
    if (mode === 'rxonly') {
      for (let i = 0; i < nb; i++) pkts[i].free();
      return;
    }
    const txPort = this.ports[s.txPortIndex];
    if (mode === 'mac') {
      for (let i = 0; i < nb; i++) {
        pkts[i].writeMac(0, s.peerMac);
        pkts[i].writeMac(6, txPort.mac);
      }
    } else if (mode === 'macswap') {
      for (let i = 0; i < nb; i++) {
        const d = pkts[i].readMac(0);
        pkts[i].writeMac(0, pkts[i].readMac(6));
        pkts[i].writeMac(6, d);
      }
    }
    this.send(s, txPort, nb);
  }

  private send(s: FwdStream, txPort: EthPort<P>, nb: number): void {
    const pkts = this.pkts;
    const sent = txPort.txBurst(s.txQueue, pkts, nb);
    s.txPackets += sent;
    if (sent < nb) {
      s.fwdDropped += nb - sent;
      for (let i = sent; i < nb; i++) pkts[i].free();
    }
  }

  private txonly(s: FwdStream): void {
    const txPort = this.ports[s.txPortIndex];
    const f = this.txFields;
    f.dst = s.peerMac;
    f.src = txPort.mac;
    f.flow = this.streams.indexOf(s);
    let nb = 0;
    for (; nb < this.burst; nb++) {
      f.seq = s.seq;
      writeFrame(this.scratch.bytes, f, this.txPktLen);
      const m = txPort.pool.allocFrame(this.scratch, this.txPktLen);
      if (m === null) break;
      m.port = txPort.id;
      this.pkts[nb] = m;
      s.seq++;
    }
    if (nb > 0) this.send(s, txPort, nb);
  }
}
