/**
 * Every kind of structured `VHOST_CONFIG` log event and its fields, declared once for the two
 * places that handle them: the model back-end, which emits them with DPDK 22.11's text
 * (`VhostLogEvent`, log.ts), and the real-log parser, which reads them out of testpmd's output
 * (`VhostEvent`, src/adapters/dpdk/vhost-log.ts). Each union is `EventOf` of the maps below plus
 * its own envelope (level and continuation lines, or the input line number).
 *
 * `ConfigKinds<V>` holds the kinds both sides know. The view `V` loosens only what a printed
 * line cannot give the parser: a request number for an unknown name, details a cleaned log
 * dropped, values DPDK does not print.
 */

/** `model`: the values the model printed; `parsed`: what the parser can read back from the line. */
export type View = 'model' | 'parsed';

/** Always known to the model; the parser gets `undefined` when the line does not determine it. */
type Known<V extends View, T> = V extends 'model' ? T : T | undefined;
/** Always present in the model's event; the parser fills in what the continuation lines show. */
type Details<V extends View, T> = V extends 'model' ? T : Partial<T>;
/** Fields of one view only (`unknown` adds nothing to an intersection). */
type ModelOnly<V extends View, T> = V extends 'model' ? T : unknown;
type ParsedOnly<V extends View, T> = V extends 'parsed' ? T : unknown;

/** The kinds both the model emits and the parser recognises. */
export interface ConfigKinds<V extends View> {
  'socket-created': { role: 'client' | 'server'; fd: number };
  'bind-ok': {};
  'bind-failed': { error: string };
  'new-connection': { fd: number };
  'connect-failed': { error: string };
  reconnecting: {};
  connected: {};
  'reconnect-failed': { fd: number };
  'new-device': { vid: number };
  /** `read message VHOST_USER_X`: `name` is the short name (`SET_VRING_BASE`). */
  message: { name: string; request: Known<V, number> };
  /** Debug level: `processing X succeeded[ and needs reply].` / `processing X failed.` */
  processed: { name: string; request: Known<V, number>; ok: boolean; needsReply: boolean };
  'external-request': { request: number };
  features: { value: bigint };
  'protocol-features': { value: bigint };
  mergeable: { mrgRxbuf: boolean; virtio1: boolean };
  /** SET_VRING_BASE as DPDK applied it. */
  'set-vring-base': { index: number; lastUsedIdx: number; lastAvailIdx: number };
  /** GET_VRING_BASE: `num` is the value returned to the front-end. */
  'get-vring-base': { index: number; num: number };
  'vring-kick': { index: number; fd: number };
  'vring-call': { index: number; fd: number };
  /** SET_VRING_ENABLE: `index` is the vring index (DPDK prints it as "qp idx"). */
  enable: { index: number; enable: boolean };
  status: { value: number };
  /** `guest memory region size: …` and its tab-indented details (the model keeps no mmap align). */
  'memory-region': { size: bigint } & Details<V, { guestPhysAddr: bigint; guestVirtAddr: bigint; mmapSize: bigint; mmapOffset: bigint }> & ParsedOnly<V, { mmapAlign?: bigint }>;
  'memory-unchanged': {};
  /** Debug level. */
  'ring-mapped': { ring: 'desc' | 'avail' | 'used'; addr: bigint };
  /** Split ring: guest used->idx differs from the base; DPDK resyncs both indices to it. It does not print the vring index. */
  'used-idx-mismatch': ModelOnly<V, { index: number }> & { lastUsedIdx: number; usedIdx: number };
  ready: {};
  'peer-closed': {};
  /** The back-end closed the connection itself (driver unregistered, e.g. at `quit`). */
  'closed-locally': { fd: number };
  /** The model names the DPDK error line; the parser keeps any failure line's text. */
  error: V extends 'model' ? { code: ErrorCode } : { message: string };
}

/** Kinds only the model emits: library lines the parser does not classify, the PMD's lines, model notes. */
export interface ModelOnlyKinds {
  'ring-map-failed': { ring: 'desc' | 'avail' | 'used' | 'log' };
  'log-guest-addr': { addr: bigint };
  'not-implemented': { request: string };
  'log-base': { size: bigint; offset: bigint };
  inflight: { field: string; value: bigint | number };
  mac: { mac: string };
  // net_vhost PMD
  'device-created': { vid: number };
  'device-destroyed': { vid: number };
  'vring-state': { index: number; enable: boolean };
  // model only
  model: { what: ModelNote };
}

/** Kinds only the parser produces. */
export interface ParsedOnlyKinds {
  /** A VHOST_CONFIG line with no pattern. */
  other: {};
}

/** The union of `{ kind: K } & fields` over a kind map. */
export type EventOf<M> = { [K in keyof M & string]: { kind: K } & M[K] }[keyof M & string];

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
