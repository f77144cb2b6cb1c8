import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { formatForwardStats, formatPortStats, PortCounters, PortStatsDisplay } from './port.ts';

const fixture = readFileSync(fileURLToPath(new URL('../adapters/dpdk/fixtures/real-port-stats.txt', import.meta.url)), 'utf8');

function counters(v: Partial<PortCounters>): PortCounters {
  return Object.assign(new PortCounters(), v);
}

describe('formatPortStats', () => {
  it('reproduces a real `show port stats all` block byte for byte', () => {
    const s = counters({ rxPackets: 1801472, rxMissed: 0, rxBytes: 108088320, rxErrors: 0, rxNombuf: 0, txPackets: 1800832, txErrors: 0, txBytes: 108049920 });
    expect(formatPortStats(0, s)).toBe(fixture);
  });

  it('pads as printf does: %-2d port, %-10 counters, %12 rates', () => {
    const out = formatPortStats(12, counters({ rxPackets: 12345678901, rxMissed: 7, rxBytes: 5, rxErrors: 3, rxNombuf: 2, txPackets: 1, txErrors: 0, txBytes: 64 }), { rxPps: 14880952, rxBps: 7142856960, txPps: 1, txBps: 123456789012345 });
    const lines = out.split('\n');
    expect(lines[1]).toBe('  ######################## NIC statistics for port 12 ########################');
    // a counter wider than 10 pushes the rest right, as %-10 does
    expect(lines[2]).toBe('  RX-packets: 12345678901 RX-missed: 7          RX-bytes:  5');
    expect(lines[3]).toBe('  RX-errors: 3');
    expect(lines[4]).toBe('  RX-nombuf:  2         ');
    expect(lines[8]).toBe('  Rx-pps:     14880952          Rx-bps:   7142856960');
    expect(lines[9]).toBe('  Tx-pps:            1          Tx-bps: 123456789012345');
  });
});

describe('PortStatsDisplay', () => {
  it('first show of a port has zero rates, later ones the virtual-time rate since the previous show', () => {
    const d = new PortStatsDisplay();
    const c = counters({ rxPackets: 1000, rxBytes: 60000, txPackets: 10, txBytes: 600 });
    expect(d.showPort(0, c, 1.0)).toContain('Rx-pps:            0          Rx-bps:            0');
    c.rxPackets += 500; // over 0.25 s → 2000 pps
    c.rxBytes += 30001; // 120004 B/s → 960032 bps
    const out = d.showPort(0, c, 1.25);
    expect(out).toContain('  Rx-pps:         2000          Rx-bps:       960032\n');
    expect(out).toContain('  Tx-pps:            0          Tx-bps:            0\n');
  });

  it('a counter that went down (cleared stats) gives rate 0, as the unsigned diff guard does', () => {
    const d = new PortStatsDisplay();
    const c = counters({ rxPackets: 1000 });
    d.showPort(3, c, 0);
    c.rxPackets = 10;
    expect(d.showPort(3, c, 1)).toContain('Rx-pps:            0');
  });
});

describe('formatForwardStats', () => {
  it('prints testpmd stop blocks with dropped and totals', () => {
    const out = formatForwardStats([
      { port: 0, rxPackets: 100, rxMissed: 2, rxErrors: 0, rxNombuf: 0, txPackets: 90, txErrors: 1, txDropped: 10 },
      { port: 1, rxPackets: 90, rxMissed: 0, rxErrors: 0, rxNombuf: 3, txPackets: 100, txErrors: 0, txDropped: 0 },
    ]);
    const expected = [
      '',
      '  ---------------------- Forward statistics for port 0  ----------------------',
      '  RX-packets: 100            RX-dropped: 2             RX-total: 102',
      '  TX-packets: 90             TX-dropped: 10            TX-total: 100',
      '  ----------------------------------------------------------------------------',
      '',
      '  ---------------------- Forward statistics for port 1  ----------------------',
      '  RX-packets: 90             RX-dropped: 0             RX-total: 90',
      '  RX-error: 0',
      '  RX-nombufs: 3             ',
      '  TX-packets: 100            TX-dropped: 0             TX-total: 100',
      '  ----------------------------------------------------------------------------',
      '',
      '  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++',
      '  RX-packets: 190            RX-dropped: 2             RX-total: 192',
      '  TX-packets: 190            TX-dropped: 11            TX-total: 201',
      '  RX-nombufs: 3             ',
      '  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++',
      '',
    ].join('\n');
    expect(out).toBe(expected);
  });
});
