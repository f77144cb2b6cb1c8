/**
 * Ports as testpmd sees them (an ethdev: rx/tx burst per queue, a MAC address, the
 * `struct rte_eth_stats` counters) and the text testpmd prints for them.
 */
import type { NetPacket, PacketSource } from './mbuf.ts';

/** The `struct rte_eth_stats` fields testpmd prints. */
export class PortCounters {
  /** ipackets */
  rxPackets = 0;
  /** ibytes */
  rxBytes = 0;
  /** imissed: dropped by the hardware for lack of RX descriptors. */
  rxMissed = 0;
  /** ierrors */
  rxErrors = 0;
  /** rx_nombuf: RX mbuf allocation failures. */
  rxNombuf = 0;
  /** opackets */
  txPackets = 0;
  /** obytes */
  txBytes = 0;
  /** oerrors */
  txErrors = 0;

  reset(): void {
    this.rxPackets = this.rxBytes = this.rxMissed = this.rxErrors = this.rxNombuf = 0;
    this.txPackets = this.txBytes = this.txErrors = 0;
  }

  snapshot(): PortCounters {
    const c = new PortCounters();
    Object.assign(c, this);
    return c;
  }
}

/**
 * An ethdev port. `txBurst` takes ownership of the first `returned` packets (the PMD frees
 * them once sent); the caller keeps the rest, as with rte_eth_tx_burst.
 */
export interface EthPort<P extends NetPacket = NetPacket> {
  readonly id: number;
  readonly name: string;
  /** The port's own MAC address (ports[pid].eth_addr). */
  readonly mac: number;
  readonly nbQueues: number;
  /** Mbufs for engines that build packets (txonly). */
  readonly pool: PacketSource<P>;
  rxBurst(queue: number, out: P[], max: number): number;
  txBurst(queue: number, pkts: P[], n: number): number;
  /** The counters `rte_eth_stats_get` reports. */
  stats(): PortCounters;
  resetStats(): void;
}

function padRight(v: number | string, w: number): string {
  return String(v).padEnd(w, ' ');
}
function padLeft(v: number | string, w: number): string {
  return String(v).padStart(w, ' ');
}

/** "Throughput (since last show)" rates, per second (testpmd prints bytes × 8 as bps). */
export interface PortRates {
  rxPps: number;
  rxBps: number;
  txPps: number;
  txBps: number;
}

export const ZERO_RATES: Readonly<PortRates> = Object.freeze({ rxPps: 0, rxBps: 0, txPps: 0, txBps: 0 });

const NIC_BORDER = '########################';

/**
 * One port's block of `show port stats`, byte for byte as testpmd 22.11 prints it
 * (app/test-pmd/config.c nic_stats_display): a leading blank line, the `%-2d` port
 * number, `%-10` left-aligned counters, `%12` right-aligned rates.
 */
export function formatPortStats(portId: number, s: PortCounters, rates: PortRates = ZERO_RATES): string {
  let out = `\n  ${NIC_BORDER} NIC statistics for port ${padRight(portId, 2)} ${NIC_BORDER}\n`;
  out += `  RX-packets: ${padRight(s.rxPackets, 10)} RX-missed: ${padRight(s.rxMissed, 10)} RX-bytes:  ${s.rxBytes}\n`;
  out += `  RX-errors: ${s.rxErrors}\n`;
  out += `  RX-nombuf:  ${padRight(s.rxNombuf, 10)}\n`;
  out += `  TX-packets: ${padRight(s.txPackets, 10)} TX-errors: ${padRight(s.txErrors, 10)} TX-bytes:  ${s.txBytes}\n`;
  out += '\n  Throughput (since last show)\n';
  out += `  Rx-pps: ${padLeft(rates.rxPps, 12)}          Rx-bps: ${padLeft(rates.rxBps, 12)}\n`;
  out += `  Tx-pps: ${padLeft(rates.txPps, 12)}          Tx-bps: ${padLeft(rates.txBps, 12)}\n`;
  out += `  ${NIC_BORDER}############################${NIC_BORDER}\n`;
  return out;
}

/**
 * `show port stats all` with testpmd's memory of the previous show per port: the first
 * show of a port prints zero rates (its prev_ns is 0), later ones the growth since the
 * previous show divided by the virtual time between them, truncated to integers as the
 * C code's double → uint64 conversion does; bps is the truncated byte rate times 8.
 */
export class PortStatsDisplay {
  private readonly prev = new Map<number, { t: number; rxP: number; txP: number; rxB: number; txB: number }>();

  show(ports: readonly EthPort[], now: number): string {
    let out = '';
    for (const p of ports) out += this.showPort(p.id, p.stats(), now);
    return out;
  }

  showPort(portId: number, s: PortCounters, now: number): string {
    const prev = this.prev.get(portId);
    let rates: PortRates = ZERO_RATES;
    if (prev !== undefined && now > prev.t) {
      const dt = now - prev.t;
      const rate = (cur: number, old: number) => (cur > old ? Math.floor((cur - old) / dt) : 0);
      rates = {
        rxPps: rate(s.rxPackets, prev.rxP),
        txPps: rate(s.txPackets, prev.txP),
        rxBps: rate(s.rxBytes, prev.rxB) * 8,
        txBps: rate(s.txBytes, prev.txB) * 8,
      };
    }
    this.prev.set(portId, { t: now, rxP: s.rxPackets, txP: s.txPackets, rxB: s.rxBytes, txB: s.txBytes });
    return formatPortStats(portId, s, rates);
  }
}

/** One port's numbers for the "Forward statistics" block that `stop` prints. */
export interface ForwardPortStats {
  port: number;
  /** Port counters grown since `start`. */
  rxPackets: number;
  rxMissed: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  /** Packets the engine could not send on this port (fwd_dropped of the streams that TX on it). */
  txDropped: number;
}

const FWD_BORDER = '----------------------';
const ACC_BORDER = '+++++++++++++++';

/**
 * The blocks testpmd's `stop` prints (app/test-pmd/testpmd.c fwd_stats_display) for one
 * stream per port: per-port RX/TX with dropped and total, then the accumulated block.
 * TX-dropped counts the engine's drops plus the port's oerrors; RX-dropped is imissed.
 */
export function formatForwardStats(ports: readonly ForwardPortStats[]): string {
  let out = '';
  let rx = 0;
  let tx = 0;
  let rxDropped = 0;
  let txDropped = 0;
  let nombuf = 0;
  for (const p of ports) {
    rx += p.rxPackets;
    tx += p.txPackets;
    rxDropped += p.rxMissed;
    txDropped += p.txDropped + p.txErrors;
    nombuf += p.rxNombuf;
    out += `\n  ${FWD_BORDER} Forward statistics for port ${padRight(p.port, 2)} ${FWD_BORDER}\n`;
    out += `  RX-packets: ${padRight(p.rxPackets, 14)} RX-dropped: ${padRight(p.rxMissed, 14)}RX-total: ${p.rxPackets + p.rxMissed}\n`;
    if (p.rxErrors + p.rxNombuf > 0) {
      out += `  RX-error: ${p.rxErrors}\n`;
      out += `  RX-nombufs: ${padRight(p.rxNombuf, 14)}\n`;
    }
    out += `  TX-packets: ${padRight(p.txPackets, 14)} TX-dropped: ${padRight(p.txDropped, 14)}TX-total: ${p.txPackets + p.txDropped}\n`;
    out += `  ${FWD_BORDER}--------------------------------${FWD_BORDER}\n`;
  }
  out += `\n  ${ACC_BORDER} Accumulated forward statistics for all ports${ACC_BORDER}\n`;
  out += `  RX-packets: ${padRight(rx, 14)} RX-dropped: ${padRight(rxDropped, 14)}RX-total: ${rx + rxDropped}\n`;
  out += `  TX-packets: ${padRight(tx, 14)} TX-dropped: ${padRight(txDropped, 14)}TX-total: ${tx + txDropped}\n`;
  if (nombuf > 0) out += `  RX-nombufs: ${padRight(nombuf, 14)}\n`;
  out += `  ${ACC_BORDER}++++++++++++++++++++++++++++++++++++++++++++++${ACC_BORDER}\n`;
  return out;
}
