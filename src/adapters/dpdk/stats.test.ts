import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseForwardStats, parsePortStats, statsDelta } from './stats.ts';

const fixture = (name: string): string => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

// Two ports as testpmd prints them (multi-VM back-end), with a log line and a prompt mixed in.
const TWO_PORTS = `testpmd> show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 52127680   RX-missed: 3          RX-bytes:  3336171520
  RX-errors: 1
  RX-nombuf:  7         
  TX-packets: 256        TX-errors: 2          TX-bytes:  16384

  Throughput (since last show)
  Rx-pps:      6633388          Rx-bps:   3396294888
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
VHOST_CONFIG: (/tmp/s1) read message VHOST_USER_GET_STATUS

  ######################## NIC statistics for port 1  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 206941792  TX-errors: 0          TX-bytes:  13244274688

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:      6633388          Tx-bps:   3396294888
  ############################################################################
testpmd> `;

describe('parsePortStats', () => {
  it('parses a real single-port block', () => {
    const [p, ...rest] = parsePortStats(fixture('real-port-stats.txt'));
    expect(rest).toEqual([]);
    expect(p!.port).toBe(0);
    expect(p!.rxPackets).toBeGreaterThan(0);
    expect(p!.txPackets).toBeGreaterThan(0);
    // flowgen's 64-byte frames, counted without the 4-byte CRC.
    expect(p!.rxBytes).toBe(p!.rxPackets * 60);
  });

  it('parses every field of every port and ignores interleaved lines', () => {
    expect(parsePortStats(TWO_PORTS)).toEqual([
      {
        port: 0, rxPackets: 52127680, rxMissed: 3, rxBytes: 3336171520, rxErrors: 1, rxNombuf: 7,
        txPackets: 256, txErrors: 2, txBytes: 16384, rxPps: 6633388, rxBps: 3396294888, txPps: 0, txBps: 0,
      },
      {
        port: 1, rxPackets: 0, rxMissed: 0, rxBytes: 0, rxErrors: 0, rxNombuf: 0,
        txPackets: 206941792, txErrors: 0, txBytes: 13244274688, rxPps: 0, rxBps: 0, txPps: 6633388, txBps: 3396294888,
      },
    ]);
  });

  it('accepts lines as an array and returns nothing for unrelated text', () => {
    expect(parsePortStats(TWO_PORTS.split('\n')).map((p) => p.port)).toEqual([0, 1]);
    expect(parsePortStats('Port 0: link state change event\nDone')).toEqual([]);
  });

  it('statsDelta subtracts counters port by port', () => {
    const [a, b] = parsePortStats(TWO_PORTS);
    const later = [{ ...a!, rxPackets: a!.rxPackets + 10, txBytes: a!.txBytes + 640 }, b!];
    const d = statsDelta([a!, b!], later);
    expect(d[0]).toMatchObject({ rxPackets: 10, txBytes: 640, txPackets: 0, rxPps: a!.rxPps });
    expect(d[1]!.txPackets).toBe(0);
  });
});

describe('parseForwardStats', () => {
  it('parses the per-port and accumulated blocks printed at stop/quit', () => {
    const text = fixture('real-split-vhost0.log');
    const fs = parseForwardStats(text);
    expect(fs.map((f) => f.port)).toEqual([0, 'all']);
    const [p0, all] = fs;
    expect(p0!.rxPackets).toBeGreaterThan(0);
    expect(p0!.rxTotal).toBe(p0!.rxPackets + p0!.rxDropped);
    expect(p0!.txTotal).toBe(p0!.txPackets + p0!.txDropped);
    expect(all).toEqual({ ...p0!, port: 'all' });
  });

  it('reads the zero blocks of the reference logs', () => {
    const fs = parseForwardStats(readFileSync(new URL('./fixtures/ref-vb3.log', import.meta.url), 'utf8'));
    expect(fs).toEqual([
      { port: 0, rxPackets: 0, rxDropped: 0, rxTotal: 0, txPackets: 0, txDropped: 0, txTotal: 0 },
      { port: 'all', rxPackets: 0, rxDropped: 0, rxTotal: 0, txPackets: 0, txDropped: 0, txTotal: 0 },
    ]);
  });
});
