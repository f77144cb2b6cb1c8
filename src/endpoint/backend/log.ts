/**
 * Structured log events of the model back-end, one per line DPDK 22.11 would print, so a
 * model run can be set beside a real testpmd log.
 *
 * - `source: 'config'` events are the vhost library's `VHOST_CONFIG: (<path>) <text>` lines;
 *   `text` is exactly DPDK's text (printf arguments filled in with the model's values: fd
 *   numbers are the model's, host addresses are made up) and `more` holds the tab-indented
 *   continuation lines (device status bits, memory-region details). `kind` and the typed fields
 *   are declared once for this and the real-log parser (src/adapters/dpdk/vhost-log.ts) in
 *   log-kinds.ts, so `parseVhostLog(formatVhostLog(events))` reads a model run like a real one.
 * - `source: 'pmd'` events are the net_vhost PMD's lines ("Vhost device 0 created", "vring1 is
 *   enabled"); testpmd hides them by default (logtype pmd.net.vhost at NOTICE).
 * - `source: 'model'` events have no DPDK counterpart: places where the model refuses
 *   something DPDK would have turned into undefined behaviour, and data-path ring errors.
 */

import type { ConfigKinds, ErrorCode, EventOf, ModelNote, ModelOnlyKinds } from './log-kinds.ts';

// Callers import these from here.
export type { ErrorCode, ModelNote } from './log-kinds.ts';

export type LogLevel = 'ERR' | 'WARNING' | 'NOTICE' | 'INFO' | 'DEBUG';
export type LogSource = 'config' | 'pmd' | 'model';

interface Base {
  readonly level: LogLevel;
  readonly source: LogSource;
  /** The line's text after the `VHOST_CONFIG: (<path>) ` prefix. */
  readonly text: string;
  /** Continuation lines (each starts with a tab), printed after `text` with the same prefix. */
  readonly more?: readonly string[];
  /** Virtual time, stamped by the glue. */
  t?: number;
  /** Socket path, stamped by the glue. */
  path?: string;
}

/** Every kind the model emits and its fields: log-kinds.ts. */
export type VhostLogEvent = Base & EventOf<ConfigKinds<'model'> & ModelOnlyKinds>;

export type VhostLogKind = VhostLogEvent['kind'];

/** The PMD's ifname-free logtype prints no prefix; the library prefixes `VHOST_CONFIG: (<path>) `. */
export function formatVhostLogLines(ev: VhostLogEvent, path = ev.path ?? ''): string[] {
  const lines = [ev.text, ...(ev.more ?? [])];
  switch (ev.source) {
    case 'config':
      return lines.map((l) => `VHOST_CONFIG: (${path}) ${l}`);
    case 'pmd':
      return lines;
    case 'model':
      return lines.map((l) => `# model: ${l}`);
  }
}

const LEVELS: Record<LogLevel, number> = { ERR: 3, WARNING: 4, NOTICE: 5, INFO: 6, DEBUG: 7 };

export interface FormatLogOptions {
  /** Most verbose level of the library's lines (DPDK default INFO; `--log-level=lib.vhost.config:debug` for DEBUG). */
  configLevel?: LogLevel;
  /** PMD lines' level (default NOTICE: the INFO lines are hidden, as in testpmd). */
  pmdLevel?: LogLevel;
  /** Include model-only notes (default false). */
  model?: boolean;
}

/** The lines a testpmd run with these log levels would show, in order. */
export function formatVhostLog(events: readonly VhostLogEvent[], opts: FormatLogOptions = {}): string[] {
  const cfg = LEVELS[opts.configLevel ?? 'INFO'];
  const pmd = LEVELS[opts.pmdLevel ?? 'NOTICE'];
  const out: string[] = [];
  for (const ev of events) {
    if (ev.source === 'config' && LEVELS[ev.level] > cfg) continue;
    if (ev.source === 'pmd' && LEVELS[ev.level] > pmd) continue;
    if (ev.source === 'model' && !opts.model) continue;
    out.push(...formatVhostLogLines(ev));
  }
  return out;
}

// ---- builders ------------------------------------------------------------------------------

type Body = VhostLogEvent extends infer E ? (E extends VhostLogEvent ? Omit<E, keyof Base> : never) : never;

export function configEvent(level: LogLevel, text: string, body: Body, more?: readonly string[]): VhostLogEvent {
  return { level, source: 'config', text, ...(more ? { more } : {}), ...body } as VhostLogEvent;
}

export function errorEvent(code: ErrorCode, text: string, level: LogLevel = 'ERR'): VhostLogEvent {
  return configEvent(level, text, { kind: 'error', code });
}

export function pmdEvent(level: LogLevel, text: string, body: Body): VhostLogEvent {
  return { level, source: 'pmd', text, ...body } as VhostLogEvent;
}

export function modelEvent(what: ModelNote, text: string): VhostLogEvent {
  return { level: 'WARNING', source: 'model', text, kind: 'model', what };
}

/** `0x%PRIx64` */
export function hex64(v: bigint | number): string {
  return '0x' + BigInt(v).toString(16);
}

/** The seven tab-indented lines DPDK prints after "new device status(0x%08x):". */
export function statusLines(status: number): string[] {
  const b = (m: number) => ((status & m) !== 0 ? 1 : 0);
  return [
    `\t-RESET: ${status === 0 ? 1 : 0}`,
    `\t-ACKNOWLEDGE: ${b(1)}`,
    `\t-DRIVER: ${b(2)}`,
    `\t-FEATURES_OK: ${b(8)}`,
    `\t-DRIVER_OK: ${b(4)}`,
    `\t-DEVICE_NEED_RESET: ${b(64)}`,
    `\t-FAILED: ${b(128)}`,
  ];
}

/** Events of one kind, typed. */
export function eventsOfKind<K extends VhostLogKind>(events: readonly VhostLogEvent[], kind: K): Array<Extract<VhostLogEvent, { kind: K }>> {
  return events.filter((e): e is Extract<VhostLogEvent, { kind: K }> => e.kind === kind);
}
