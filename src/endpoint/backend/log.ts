/**
 * Structured log events of the model back-end, one per line DPDK 22.11 would print, so a
 * model run can be set beside a real testpmd log.
 *
 * - `source: 'config'` events are the vhost library's `VHOST_CONFIG: (<path>) <text>` lines;
 *   `text` is exactly DPDK's text (printf arguments filled in with the model's values: fd
 *   numbers are the model's, host addresses are made up) and `more` holds the tab-indented
 *   continuation lines (device status bits, memory-region details). `kind` and the typed fields
 *   use the names of the real-log parser (src/adapters/dpdk/vhost-log.ts), so
 *   `parseVhostLog(formatVhostLog(events))` reads a model run like a real one.
 * - `source: 'pmd'` events are the net_vhost PMD's lines ("Vhost device 0 created", "vring1 is
 *   enabled"); testpmd hides them by default (logtype pmd.net.vhost at NOTICE).
 * - `source: 'model'` events have no DPDK counterpart: places where the model refuses
 *   something DPDK would have turned into undefined behaviour, and data-path ring errors.
 */

export type LogLevel = 'ERR' | 'WARNING' | 'NOTICE' | 'INFO' | 'DEBUG';
export type LogSource = 'config' | 'pmd' | 'model';

/** Why a request or the connection failed; one code per DPDK error line (plus model-only ones). */
export type ErrorCode =
  | 'read-failed' // vhost read message [for X ]failed
  | 'unexpected-header-size'
  | 'invalid-msg-size'
  | 'read-control-failed'
  | 'truncated-msg' // 22.11.0: more fds than the control buffer holds
  | 'truncated-control-data' // ≥22.11.2: logged, extra fds dropped
  | 'expect-fds'
  | 'processing-failed'
  | 'not-handled'
  | 'handling-failed'
  | 'alloc-queue-failed' // vring index ≥ 256
  | 'invalid-vring-index'
  | 'invalid-features'
  | 'features-changed'
  | 'invalid-protocol-features'
  | 'invalid-vring-size'
  | 'too-many-regions'
  | 'mmap-failed'
  | 'mmap-overflow'
  | 'invalid-mmap-size'
  | 'invalid-log-size'
  | 'log-overflow'
  | 'log-mmap-failed'
  | 'invalid-status'
  | 'features-ok-failed'
  | 'invalid-mtu'
  | 'not-vdpa'
  | 'config-too-large'
  | 'invalid-iotlb-type'
  | 'userfaultfd'
  | 'postcopy-listen-regions'
  | 'postcopy-ack'
  | 'invalid-inflight-size'
  | 'inflight-alloc-failed'
  | 'inflight-mmap-failed'
  | 'iotlb-miss-send-failed'
  | 'send-failed' // sendmsg error on fd %d (%s)
  | 'bind-failed';

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

export type VhostLogEvent = Base &
  (
    | { kind: 'socket-created'; role: 'client' | 'server'; fd: number }
    | { kind: 'bind-ok' }
    | { kind: 'bind-failed'; error: string }
    | { kind: 'new-connection'; fd: number }
    | { kind: 'connect-failed'; error: string }
    | { kind: 'reconnecting' }
    | { kind: 'connected' }
    | { kind: 'reconnect-failed'; fd: number }
    | { kind: 'new-device'; vid: number }
    | { kind: 'message'; name: string; request: number }
    | { kind: 'processed'; name: string; request: number; ok: boolean; needsReply: boolean }
    | { kind: 'external-request'; request: number }
    | { kind: 'features'; value: bigint }
    | { kind: 'protocol-features'; value: bigint }
    | { kind: 'mergeable'; mrgRxbuf: boolean; virtio1: boolean }
    | { kind: 'set-vring-base'; index: number; lastUsedIdx: number; lastAvailIdx: number }
    | { kind: 'get-vring-base'; index: number; num: number }
    | { kind: 'vring-kick'; index: number; fd: number }
    | { kind: 'vring-call'; index: number; fd: number }
    | { kind: 'enable'; index: number; enable: boolean }
    | { kind: 'status'; value: number }
    | { kind: 'memory-region'; size: bigint; guestPhysAddr: bigint; guestVirtAddr: bigint; mmapSize: bigint; mmapOffset: bigint }
    | { kind: 'memory-unchanged' }
    | { kind: 'ring-mapped'; ring: 'desc' | 'avail' | 'used'; addr: bigint }
    | { kind: 'ring-map-failed'; ring: 'desc' | 'avail' | 'used' | 'log' }
    | { kind: 'log-guest-addr'; addr: bigint }
    | { kind: 'used-idx-mismatch'; index: number; lastUsedIdx: number; usedIdx: number }
    | { kind: 'not-implemented'; request: string }
    | { kind: 'log-base'; size: bigint; offset: bigint }
    | { kind: 'inflight'; field: string; value: bigint | number }
    | { kind: 'mac'; mac: string }
    | { kind: 'ready' }
    | { kind: 'peer-closed' }
    | { kind: 'closed-locally'; fd: number }
    | { kind: 'error'; code: ErrorCode }
    // net_vhost PMD
    | { kind: 'device-created'; vid: number }
    | { kind: 'device-destroyed'; vid: number }
    | { kind: 'vring-state'; index: number; enable: boolean }
    // model only
    | { kind: 'model'; what: ModelNote }
  );

export type VhostLogKind = VhostLogEvent['kind'];

/**
 * Model-only notes: where DPDK 22.11 would read uninitialised stack memory, map past the end
 * of a file (SIGBUS on first access), follow a dangling pointer or index outside a ring, the
 * model refuses instead, and says so.
 */
export type ModelNote =
  | 'short-payload' // payload shorter than the handler reads: DPDK reads stale stack bytes
  | 'mapping-beyond-file' // DPDK maps it and faults on first access
  | 'not-a-memfd' // an fd that cannot be mapped (eventfd, socket)
  | 'unsupported-memory-table' // regions GuestMemory cannot represent (overlap, alignment, ≥ 2^53)
  | 'ring-device-unavailable' // the ring is mapped but its device half cannot be built
  | 'ring-error' // the data path met a malformed chain: that queue stops
  | 'inflight-region-outside-mapping'
  | 'inflight-too-large'
  | 'iotlb-miss';

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
