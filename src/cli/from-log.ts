/**
 * `vhostsim trace from-log testpmd.log [--out FILE]`: the message-level trace of a DPDK
 * vhost back-end's `VHOST_CONFIG` log (INFO or debug level). What the log cannot show is
 * marked rather than invented: see `src/adapters/dpdk/log-to-trace.ts`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { logToTrace } from '../adapters/dpdk/log-to-trace.ts';
import { formatTraceRecord } from '../sim/trace.ts';

export interface FromLogResult {
  /** JSONL text (written to `out` when given, else for stdout). */
  text: string;
  sessions: number;
  messages: number;
  partial: number;
}

export function traceFromLog(file: string, opts: { out?: string } = {}): FromLogResult {
  const lines = logToTrace(readFileSync(file, 'utf8'));
  const text = lines.map((l) => formatTraceRecord(l.record, l.extra) + '\n').join('');
  if (opts.out !== undefined) writeFileSync(opts.out, text);
  const messages = lines.filter((l) => 'dir' in l.record);
  return {
    text,
    sessions: lines.filter((l) => 'event' in l.record && l.record.event === 'session').length,
    messages: messages.length,
    partial: messages.filter((l) => l.extra.partial === true).length,
  };
}
