/**
 * Parsers for testpmd's port counters: `show port stats all` and the "Forward statistics"
 * blocks printed by `stop` and `quit`. Pure functions over text; lines that belong to
 * neither (log lines interleaved by other threads, the prompt) are skipped.
 */

/** One port's block of `show port stats all`. */
export interface PortStats {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  /** "Throughput (since last show)": rates since the previous `show port stats`. */
  rxPps: number;
  rxBps: number;
  txPps: number;
  txBps: number;
}

/** One port's "Forward statistics" block (counted by the forwarding engine, not the PMD). */
export interface ForwardStats {
  /** The port number, or `'all'` for the accumulated block. */
  port: number | 'all';
  rxPackets: number;
  rxDropped: number;
  rxTotal: number;
  txPackets: number;
  txDropped: number;
  txTotal: number;
}

const PROMPT = /^(?:testpmd> )+/;

function lines(text: string | readonly string[]): string[] {
  const all = typeof text === 'string' ? text.split(/\r?\n/) : [...text];
  return all.map((l) => l.replace(PROMPT, ''));
}

/** All `Key: value` pairs on a line; keys as printed (`RX-packets`, `Rx-pps`). */
function pairs(line: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const hit of line.matchAll(/([A-Za-z][A-Za-z-]*):\s*(\d+)/g)) m.set(hit[1]!, Number(hit[2]));
  return m;
}

const NIC_HEADER = /#+\s*NIC statistics for port (\d+)\s*#+/;
const FWD_HEADER = /-+\s*Forward statistics for port (\d+)\s*-+/;
const ACC_HEADER = /\++\s*Accumulated forward statistics for all ports\s*\++/;

/** Parse `show port stats all` (or `show port stats N`) output; one entry per port block. */
export function parsePortStats(text: string | readonly string[]): PortStats[] {
  const out: PortStats[] = [];
  let cur: PortStats | undefined;
  for (const line of lines(text)) {
    const h = NIC_HEADER.exec(line);
    if (h) {
      cur = {
        port: Number(h[1]),
        rxPackets: 0, rxMissed: 0, rxBytes: 0, rxErrors: 0, rxNombuf: 0,
        txPackets: 0, txErrors: 0, txBytes: 0,
        rxPps: 0, rxBps: 0, txPps: 0, txBps: 0,
      };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    // The closing line is only '#'.
    if (/^\s*#{10,}\s*$/.test(line)) {
      cur = undefined;
      continue;
    }
    const p = pairs(line);
    const set = (key: string, field: keyof Omit<PortStats, 'port'>): void => {
      const v = p.get(key);
      if (v !== undefined) cur![field] = v;
    };
    set('RX-packets', 'rxPackets');
    set('RX-missed', 'rxMissed');
    set('RX-bytes', 'rxBytes');
    set('RX-errors', 'rxErrors');
    set('RX-nombuf', 'rxNombuf');
    set('TX-packets', 'txPackets');
    set('TX-errors', 'txErrors');
    set('TX-bytes', 'txBytes');
    set('Rx-pps', 'rxPps');
    set('Rx-bps', 'rxBps');
    set('Tx-pps', 'txPps');
    set('Tx-bps', 'txBps');
  }
  return out;
}

/** Parse the per-port and accumulated "Forward statistics" blocks printed by `stop`/`quit`. */
export function parseForwardStats(text: string | readonly string[]): ForwardStats[] {
  const out: ForwardStats[] = [];
  let cur: ForwardStats | undefined;
  for (const line of lines(text)) {
    const f = FWD_HEADER.exec(line);
    const a = f ? null : ACC_HEADER.exec(line);
    if (f || a) {
      cur = { port: f ? Number(f[1]) : 'all', rxPackets: 0, rxDropped: 0, rxTotal: 0, txPackets: 0, txDropped: 0, txTotal: 0 };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    if (/^\s*[-+]{10,}\s*$/.test(line)) {
      cur = undefined;
      continue;
    }
    const p = pairs(line);
    if (p.has('RX-packets')) {
      cur.rxPackets = p.get('RX-packets')!;
      cur.rxDropped = p.get('RX-dropped') ?? 0;
      cur.rxTotal = p.get('RX-total') ?? 0;
    }
    if (p.has('TX-packets')) {
      cur.txPackets = p.get('TX-packets')!;
      cur.txDropped = p.get('TX-dropped') ?? 0;
      cur.txTotal = p.get('TX-total') ?? 0;
    }
  }
  return out;
}

/** Counter growth between two snapshots of the same ports (rates are taken from `after`). */
export function statsDelta(before: readonly PortStats[], after: readonly PortStats[]): PortStats[] {
  return after.map((a) => {
    const b = before.find((x) => x.port === a.port);
    if (!b) return { ...a };
    return {
      ...a,
      rxPackets: a.rxPackets - b.rxPackets,
      rxMissed: a.rxMissed - b.rxMissed,
      rxBytes: a.rxBytes - b.rxBytes,
      rxErrors: a.rxErrors - b.rxErrors,
      rxNombuf: a.rxNombuf - b.rxNombuf,
      txPackets: a.txPackets - b.txPackets,
      txErrors: a.txErrors - b.txErrors,
      txBytes: a.txBytes - b.txBytes,
    };
  });
}
