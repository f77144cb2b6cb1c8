import type { RingKind } from '../src/ring/factory.ts';
import type { FrontendRequestName } from '../src/protocol/requests.ts';

/**
 * Reference model of one vhost-user session (one connection), no bytes.
 *
 * A session goes disconnected → connected → features-negotiated → memory-set →
 * rings-configured → running, and from running to stopped (GET_VRING_BASE) and back. The phase
 * is *derived* from a handful of facts (features acked? memory table sent? which vrings have
 * num, addr, kick, call, enable?), and `ACCEPTS` says which requests each phase takes. The rules
 * are the DPDK 22.11 back-end's, made strict where DPDK is merely lenient, and every sequence the
 * real front-ends send (QEMU 7.2, DPDK virtio-user 22.11, `frontendSequence`) is accepted.
 *
 * The session dies with its connection. What outlives it is what each side keeps
 * (`survivesReconnect`), and from that follow the questions the checkers ask: where does a new
 * back-end resume a ring (`expectedResumeIndex`), and what loss or duplication does the protocol
 * allow when a back-end dies with buffers in flight (`allowedLoss`).
 *
 * "§n" cites /work/shared/reference/vhost-user-facts.md.
 */

// ---- vocabulary ---------------------------------------------------------------------------

export type Phase = 'disconnected' | 'connected' | 'features-negotiated' | 'memory-set' | 'rings-configured' | 'running' | 'stopped';
export const PHASES: readonly Phase[] = ['disconnected', 'connected', 'features-negotiated', 'memory-set', 'rings-configured', 'running', 'stopped'];

/** The requests the model knows: those QEMU 7.2 and DPDK virtio-user 22.11 send to a net back-end. */
export type ModelRequest = Extract<
  FrontendRequestName,
  | 'GET_FEATURES'
  | 'SET_FEATURES'
  | 'SET_OWNER'
  | 'RESET_OWNER'
  | 'GET_PROTOCOL_FEATURES'
  | 'SET_PROTOCOL_FEATURES'
  | 'GET_QUEUE_NUM'
  | 'SET_SLAVE_REQ_FD'
  | 'NET_SET_MTU'
  | 'SET_MEM_TABLE'
  | 'GET_INFLIGHT_FD'
  | 'SET_INFLIGHT_FD'
  | 'SET_LOG_BASE'
  | 'SET_VRING_NUM'
  | 'SET_VRING_BASE'
  | 'SET_VRING_ADDR'
  | 'SET_VRING_KICK'
  | 'SET_VRING_CALL'
  | 'SET_VRING_ERR'
  | 'SET_VRING_ENABLE'
  | 'GET_VRING_BASE'
  | 'IOTLB_MSG'
  | 'SEND_RARP'
  | 'SET_STATUS'
  | 'GET_STATUS'
>;

export type SessionEvent =
  | { type: 'connect' }
  | { type: 'disconnect' }
  /** `value`: features (bigint) for SET_FEATURES / SET_PROTOCOL_FEATURES, else a number (num, base, enable, status). */
  | { type: 'request'; name: ModelRequest; vring?: number; value?: number | bigint };

export type FrontendProfile = 'qemu-7.2' | 'virtio-user-22.11';
export type BackendProfile = 'dpdk-22.11';
export type ProfileName = FrontendProfile | BackendProfile;

// Handshake requests: legal as soon as the socket is up. QEMU sends CALL/ERR/ENABLE before
// SET_FEATURES (§4.1) and virtio-user sends GET_VRING_BASE to a brand-new back-end (§5.4).
const HANDSHAKE: readonly ModelRequest[] = [
  'GET_FEATURES',
  'GET_PROTOCOL_FEATURES',
  'SET_PROTOCOL_FEATURES',
  'GET_QUEUE_NUM',
  'SET_OWNER',
  'RESET_OWNER',
  'SET_SLAVE_REQ_FD',
  'NET_SET_MTU',
  'SET_FEATURES',
  'GET_STATUS',
  'SET_STATUS',
  'SET_VRING_CALL',
  'SET_VRING_ERR',
  'SET_VRING_ENABLE',
  'GET_VRING_BASE',
];
// Memory needs the features (the header size and ring layout depend on them).
const MEMORY: readonly ModelRequest[] = ['SET_MEM_TABLE', 'GET_INFLIGHT_FD', 'SET_INFLIGHT_FD'];
// Ring set-up needs memory: DPDK translates ring addresses through the table (§4.4).
const RINGS: readonly ModelRequest[] = ['SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_LOG_BASE', 'IOTLB_MSG', 'SEND_RARP'];
// While running: no renegotiation and no ring resizing/rebasing (a ring must be stopped with
// GET_VRING_BASE first); logging, memory hotplug, fd replacement and pausing are fine.
const RUNNING: readonly ModelRequest[] = [
  'GET_FEATURES',
  'GET_PROTOCOL_FEATURES',
  'SET_FEATURES',
  'GET_STATUS',
  'SET_STATUS',
  'SET_VRING_ENABLE',
  'SET_VRING_CALL',
  'SET_VRING_ERR',
  'SET_VRING_KICK',
  'SET_VRING_ADDR',
  'GET_VRING_BASE',
  'SET_MEM_TABLE',
  'SET_LOG_BASE',
  'IOTLB_MSG',
  'SEND_RARP',
  'RESET_OWNER',
];

/** Which requests each phase accepts (further guards in `accepts`: values, vring indices, started rings). */
export const ACCEPTS: Readonly<Record<Phase, ReadonlySet<ModelRequest>>> = {
  disconnected: new Set(),
  connected: new Set(HANDSHAKE),
  'features-negotiated': new Set([...HANDSHAKE, ...MEMORY]),
  'memory-set': new Set([...HANDSHAKE, ...MEMORY, ...RINGS]),
  'rings-configured': new Set([...HANDSHAKE, ...MEMORY, ...RINGS]),
  stopped: new Set([...HANDSHAKE, ...MEMORY, ...RINGS]),
  running: new Set(RUNNING),
};

const VRING_REQUESTS: ReadonlySet<ModelRequest> = new Set([
  'SET_VRING_NUM',
  'SET_VRING_BASE',
  'SET_VRING_ADDR',
  'SET_VRING_KICK',
  'SET_VRING_CALL',
  'SET_VRING_ERR',
  'SET_VRING_ENABLE',
  'GET_VRING_BASE',
]);

// ---- state --------------------------------------------------------------------------------

/** What the back-end offers and needs; the defaults are DPDK 22.11's net_vhost. */
export interface SessionConfig {
  /** GET_FEATURES answer; net_vhost with tso=0 offers 0xd7c66e7cb (§3.3). */
  offeredFeatures: bigint;
  /** GET_PROTOCOL_FEATURES answer: 0x10cbf (§3.1). */
  offeredProtocolFeatures: bigint;
  /** Vrings that must be ready before the device runs: 2 for the built-in net device (§4.4). */
  vringsToBeReady: number;
  /** `VHOST_MAX_VRING` 0x100 (§4.4). */
  maxVrings: number;
}

export const DPDK_22_11_SESSION: Readonly<SessionConfig> = Object.freeze({
  offeredFeatures: 0xd7c66e7cbn,
  offeredProtocolFeatures: 0x10cbfn,
  vringsToBeReady: 2,
  maxVrings: 0x100,
});

export interface VringModel {
  /** SET_VRING_NUM value since the ring was last stopped. */
  readonly num?: number;
  /** Last SET_VRING_BASE value. */
  readonly base?: number;
  readonly addr: boolean;
  readonly kick: boolean;
  readonly call: boolean;
  readonly enabled: boolean;
  /** Answered GET_VRING_BASE while started, and not restarted since. */
  readonly stopped: boolean;
}

export interface Session {
  readonly config: SessionConfig;
  readonly connected: boolean;
  /** Connections seen so far (the current one included). */
  readonly connections: number;
  readonly protocolFeatures?: bigint;
  readonly features?: bigint;
  readonly memTable: boolean;
  readonly status: number;
  /** Indexed by vring; DPDK allocates every vring up to the highest index named (§4.4). */
  readonly vrings: readonly VringModel[];
  /** DPDK's VIRTIO_DEV_RUNNING: latched when ready, cleared only by GET_VRING_BASE, RESET_OWNER or a disconnect (§5.7). */
  readonly running: boolean;
}

const FRESH_VRING: VringModel = Object.freeze({ addr: false, kick: false, call: false, enabled: false, stopped: false });

const BIT_PROTOCOL_FEATURES = 1n << 30n;
const BIT_LOG_ALL = 1n << 26n;
const BIT_NET_MQ = 1n << 22n;
const BIT_RING_PACKED = 1n << 34n;
const PROTOCOL_STATUS = 1n << 16n;
const STATUS_DRIVER_OK = 4;
const STATUS_FEATURES_OK = 8;
export const MAX_QUEUE_SIZE = 32768;

export function initialSession(config: SessionConfig = DPDK_22_11_SESSION): Session {
  return { config, connected: false, connections: 0, memTable: false, status: 0, vrings: [], running: false };
}

/** The ring can be processed: translated (num, addr, memory) and kicked. */
export function vringStarted(s: Session, v: VringModel): boolean {
  return s.memTable && v.num !== undefined && v.addr && v.kick;
}

/** DPDK's vq_is_ready: translated, kick and call set, enabled (§4.4). */
function vringReady(s: Session, v: VringModel | undefined): boolean {
  return v !== undefined && vringStarted(s, v) && v.call && v.enabled;
}

/** DPDK's virtio_is_ready: the first vrings ready and, with STATUS negotiated, DRIVER_OK (§4.4). */
function deviceReady(s: Session): boolean {
  for (let i = 0; i < s.config.vringsToBeReady; i++) if (!vringReady(s, s.vrings[i])) return false;
  const statusNegotiated = ((s.protocolFeatures ?? 0n) & PROTOCOL_STATUS) !== 0n;
  return !statusNegotiated || (s.status & STATUS_DRIVER_OK) !== 0;
}

function configured(v: VringModel | undefined): boolean {
  return v !== undefined && v.num !== undefined && v.addr && v.kick && v.call;
}

export function phaseOf(s: Session): Phase {
  if (!s.connected) return 'disconnected';
  if (s.running) return 'running';
  if (s.vrings.some((v) => v.stopped)) return 'stopped';
  if (s.features === undefined) return 'connected';
  if (!s.memTable) return 'features-negotiated';
  for (let i = 0; i < s.config.vringsToBeReady; i++) if (!configured(s.vrings[i])) return 'memory-set';
  return 'rings-configured';
}

// ---- transitions --------------------------------------------------------------------------

export type Acceptance = { ok: true } | { ok: false; reason: string };

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
const num = (v: number | bigint | undefined): number | undefined => (typeof v === 'bigint' ? Number(v) : v);

/** Whether the session accepts the event now, and if not why. */
export function accepts(s: Session, e: SessionEvent): Acceptance {
  const no = (reason: string): Acceptance => ({ ok: false, reason });
  if (e.type === 'connect') return s.connected ? no('already connected') : { ok: true };
  if (e.type === 'disconnect') return s.connected ? { ok: true } : no('not connected');
  const phase = phaseOf(s);
  if (!ACCEPTS[phase].has(e.name)) return no(`${e.name} is not accepted in phase '${phase}'`);
  if (VRING_REQUESTS.has(e.name)) {
    if (e.vring === undefined || !Number.isInteger(e.vring) || e.vring < 0) return no(`${e.name} needs a vring index`);
    if (e.vring >= s.config.maxVrings) return no(`invalid vring index: ${e.vring}`);
  }
  const v = e.vring !== undefined ? s.vrings[e.vring] : undefined;
  const value = e.value;
  switch (e.name) {
    case 'SET_FEATURES': {
      if (typeof value !== 'bigint') return no('SET_FEATURES needs a bigint value');
      if ((value & ~s.config.offeredFeatures) !== 0n) return no('received invalid negotiated features.'); // §3.3
      if (s.running && (value & ~BIT_LOG_ALL) !== ((s.features ?? 0n) & ~BIT_LOG_ALL)) return no('features changed while device is running.');
      return { ok: true };
    }
    case 'SET_PROTOCOL_FEATURES':
      if (typeof value !== 'bigint') return no('SET_PROTOCOL_FEATURES needs a bigint value');
      if ((value & ~s.config.offeredProtocolFeatures) !== 0n) return no('received invalid protocol features.'); // §3.1
      return { ok: true };
    case 'SET_VRING_NUM': {
      const n = num(value);
      if (n === undefined || !Number.isInteger(n) || n < 1 || n > MAX_QUEUE_SIZE) return no(`invalid virtqueue size ${String(value)}`);
      const packed = ((s.features ?? 0n) & BIT_RING_PACKED) !== 0n;
      if (!packed && !isPowerOfTwo(n)) return no(`invalid virtqueue size ${n}: a split ring's size is a power of two`); // §5.8
      if (v !== undefined && vringStarted(s, v)) return no(`vring ${e.vring} is started: stop it with GET_VRING_BASE first`);
      return { ok: true };
    }
    case 'SET_VRING_BASE': {
      const n = num(value);
      if (n === undefined || !Number.isInteger(n) || n < 0 || n > 0xffffffff) return no('SET_VRING_BASE needs a u32 value');
      if (v !== undefined && vringStarted(s, v)) return no(`vring ${e.vring} is started: stop it with GET_VRING_BASE first`);
      return { ok: true };
    }
    case 'SET_VRING_ENABLE': {
      const n = num(value);
      return n === 0 || n === 1 ? { ok: true } : no('SET_VRING_ENABLE takes 0 or 1');
    }
    case 'SET_STATUS': {
      const n = num(value);
      return n !== undefined && Number.isInteger(n) && n >= 0 && n <= 0xff ? { ok: true } : no(`invalid VHOST_USER_SET_STATUS payload ${String(value)}`);
    }
    default:
      return { ok: true };
  }
}

function withVring(s: Session, i: number, f: (v: VringModel) => VringModel): Session {
  const vrings = [...s.vrings];
  while (vrings.length <= i) vrings.push(FRESH_VRING);
  vrings[i] = f(vrings[i]!);
  return { ...s, vrings };
}

/** The state after one request, assuming `accepts` said yes. */
function applyRequest(s: Session, name: ModelRequest, vring: number | undefined, value: number | bigint | undefined): Session {
  const i = vring ?? 0;
  switch (name) {
    case 'SET_PROTOCOL_FEATURES':
      return { ...s, protocolFeatures: value as bigint };
    case 'SET_FEATURES': {
      const features = value as bigint;
      // Without MQ only the first queue pair survives (§3.3).
      const vrings = (features & BIT_NET_MQ) === 0n ? s.vrings.slice(0, 2) : s.vrings;
      return { ...s, features, vrings };
    }
    case 'RESET_OWNER':
      // A full device reset: features and protocol features cleared (§5.8).
      return { ...initialSession(s.config), connected: true, connections: s.connections };
    case 'SET_MEM_TABLE':
      return { ...s, memTable: true };
    case 'SET_STATUS': {
      let status = num(value)!;
      // FEATURES_OK without negotiated features is refused by clearing it (§3.5).
      if (s.features === undefined) status &= ~STATUS_FEATURES_OK;
      return { ...s, status };
    }
    case 'SET_VRING_NUM':
      return withVring(s, i, (v) => ({ ...v, num: num(value) }));
    case 'SET_VRING_BASE':
      return withVring(s, i, (v) => ({ ...v, base: num(value) }));
    case 'SET_VRING_ADDR':
      return withVring(s, i, (v) => ({ ...v, addr: true }));
    case 'SET_VRING_KICK': {
      // Without PROTOCOL_FEATURES a ring is enabled by its kick (§4.2).
      const implicitEnable = ((s.features ?? 0n) & BIT_PROTOCOL_FEATURES) === 0n;
      return withVring(s, i, (v) => ({ ...v, kick: true, enabled: v.enabled || implicitEnable }));
    }
    case 'SET_VRING_CALL':
      return withVring(s, i, (v) => ({ ...v, call: true }));
    case 'SET_VRING_ENABLE':
      return withVring(s, i, (v) => ({ ...v, enabled: num(value) === 1 }));
    case 'GET_VRING_BASE': {
      // Stops the ring: the device is destroyed, kick and call closed, mappings and (22.11.8+)
      // addresses dropped; a restart re-sends NUM, ADDR, KICK, CALL (§5.7).
      const wasStarted = s.vrings[i] !== undefined && vringStarted(s, s.vrings[i]!);
      const out = withVring(s, i, (v) => ({ enabled: v.enabled, base: v.base, addr: false, kick: false, call: false, stopped: v.stopped || wasStarted }));
      return { ...out, running: false };
    }
    default:
      // Queries, ERR (closed, "not implemented"), owner, back-end channel, MTU, inflight,
      // log, IOTLB, RARP: no lifecycle effect in this model.
      return VRING_REQUESTS.has(name) ? withVring(s, i, (v) => v) : s;
  }
}

export interface ApplyResult {
  session: Session;
  accepted: boolean;
  reason?: string;
}

/** One event. A refused event leaves the session as it was (the same object). */
export function apply(s: Session, e: SessionEvent): ApplyResult {
  const verdict = accepts(s, e);
  if (!verdict.ok) return { session: s, accepted: false, reason: verdict.reason };
  let next: Session;
  if (e.type === 'connect') {
    next = { ...initialSession(s.config), connected: true, connections: s.connections + 1 };
  } else if (e.type === 'disconnect') {
    // The session dies with its socket; what each side remembers is `survivesReconnect`'s business.
    next = { ...initialSession(s.config), connections: s.connections };
  } else {
    next = applyRequest(s, e.name, e.vring, e.value);
    if (e.vring !== undefined) {
      const v = next.vrings[e.vring];
      if (v !== undefined && v.stopped && vringStarted(next, v)) next = withVring(next, e.vring, (w) => ({ ...w, stopped: false }));
    }
    if (!next.running && deviceReady(next)) next = { ...next, running: true };
  }
  return { session: next, accepted: true };
}

/** Applies events in order; stops at the first refusal. */
export function run(s: Session, events: readonly SessionEvent[]): { session: Session; refused?: { index: number; reason: string } } {
  let cur = s;
  for (let k = 0; k < events.length; k++) {
    const r = apply(cur, events[k]!);
    if (!r.accepted) return { session: cur, refused: { index: k, reason: r.reason! } };
    cur = r.session;
  }
  return { session: cur };
}

// ---- the invariant --------------------------------------------------------------------------

export const SESSION_INVARIANT = 'session-well-formed';

/**
 * `session-well-formed`: the violations of the model's own consistency rules (empty if none).
 * - disconnected: nothing negotiated, no memory, no vrings, not running;
 * - acked features and protocol features are within what the back-end offered;
 * - running: features, memory, and the required vrings started (sized, mapped, kicked);
 * - a stopped ring is not started; a ring's size is 1..32768, a power of two for split;
 * - no more vrings than the back-end has.
 */
export function sessionViolations(s: Session): string[] {
  const out: string[] = [];
  if (!s.connected) {
    if (s.features !== undefined || s.protocolFeatures !== undefined) out.push('disconnected but features negotiated');
    if (s.memTable || s.vrings.length > 0 || s.running || s.status !== 0) out.push('disconnected but device state present');
  }
  if (s.features !== undefined && (s.features & ~s.config.offeredFeatures) !== 0n) out.push('features beyond the offer');
  if (s.protocolFeatures !== undefined && (s.protocolFeatures & ~s.config.offeredProtocolFeatures) !== 0n) out.push('protocol features beyond the offer');
  if (s.running) {
    if (!s.connected || s.features === undefined || !s.memTable) out.push('running without features or memory');
    for (let i = 0; i < s.config.vringsToBeReady; i++) {
      const v = s.vrings[i];
      if (v === undefined || !vringStarted(s, v)) out.push(`running but vring ${i} not started`);
    }
  }
  const packed = ((s.features ?? 0n) & BIT_RING_PACKED) !== 0n;
  s.vrings.forEach((v, i) => {
    if (v.stopped && vringStarted(s, v)) out.push(`vring ${i} both stopped and started`);
    if (v.num !== undefined && (v.num < 1 || v.num > MAX_QUEUE_SIZE || (!packed && !isPowerOfTwo(v.num)))) out.push(`vring ${i} size ${v.num}`);
  });
  if (s.vrings.length > s.config.maxVrings) out.push('more vrings than the back-end has');
  return out;
}

// ---- what survives a reconnect ---------------------------------------------------------------

export type SessionField =
  | 'acked-features'
  | 'protocol-features'
  | 'mem-table'
  | 'ring-size'
  | 'ring-addresses'
  | 'last-avail-idx'
  | 'vring-enable'
  | 'kick-call-fds'
  | 'device-status'
  | 'inflight-region';

export const SESSION_FIELDS: readonly SessionField[] = [
  'acked-features',
  'protocol-features',
  'mem-table',
  'ring-size',
  'ring-addresses',
  'last-avail-idx',
  'vring-enable',
  'kick-call-fds',
  'device-status',
  'inflight-region',
];

/**
 * kept: the side holds the value and re-sends it; restored: recomputed from guest memory;
 * renegotiated: asked afresh from the new peer; reset: back to the initial value;
 * lost: gone; unused: this profile never has it.
 */
export type Survival = 'kept' | 'restored' | 'renegotiated' | 'reset' | 'lost' | 'unused';

interface SurvivalEntry {
  split: Survival;
  packed: Survival;
  how: string;
  ref: string;
}

const same = (o: Survival, how: string, ref: string): SurvivalEntry => ({ split: o, packed: o, how, ref });

const SURVIVAL: Readonly<Record<ProfileName, Readonly<Record<SessionField, SurvivalEntry>>>> = {
  'dpdk-22.11': Object.fromEntries(
    SESSION_FIELDS.map((f) => [f, same('lost', 'the device is freed on disconnect; the next connection is a new device (new vid)', '§5.1, §5.4')]),
  ) as Record<SessionField, SurvivalEntry>,
  'qemu-7.2': {
    'acked-features': same('kept', 'saved on CHR_EVENT_CLOSED and re-sent in SET_FEATURES', '§5.3'),
    'protocol-features': same('renegotiated', 'CHR_EVENT_OPENED re-runs the full init', '§5.3, §4.1'),
    'mem-table': same('kept', 'guest RAM is QEMU\u2019s; SET_MEM_TABLE is re-sent on start', '§5.3 [OBS]'),
    'ring-size': same('kept', 'per-VirtQueue size', '§5.4'),
    'ring-addresses': same('kept', 'per-VirtQueue ring GPAs', '§5.4'),
    'last-avail-idx': {
      split: 'restored',
      packed: 'kept',
      how: 'GET_VRING_BASE fails on the dead socket; split: last_avail_idx = used->idx from guest memory; packed: nothing to restore from, the previous value is kept',
      ref: '§5.3, §5.4',
    },
    'vring-enable': same('kept', 'per-VirtQueue enable state; SET_VRING_ENABLE(1) re-sent', '§5.4, §5.3 [OBS]'),
    'kick-call-fds': same('kept', 'QEMU\u2019s ioeventfd/irqfd, re-sent with SET_VRING_KICK/CALL on start', '§4.2'),
    'device-status': same('kept', 'the guest driver stays DRIVER_OK, so the link-up restarts vhost', '§5.3'),
    'inflight-region': same('unused', 'QEMU virtio-net never sets up an inflight region', '§4.3'),
  },
  'virtio-user-22.11': {
    'acked-features': same('kept', 'the reconnect re-sends the negotiated features (same value in SET_FEATURES)', '§5.4, Appendix B'),
    'protocol-features': same('renegotiated', 'GET/SET_PROTOCOL_FEATURES on every reconnect', '§5.4'),
    'mem-table': same('kept', 'SET_MEM_TABLE re-sent at DRIVER_OK', '§4.5, §5.4'),
    'ring-size': same('kept', 'SET_VRING_NUM re-sent', '§4.5'),
    'ring-addresses': same('kept', 'same ring memory, SET_VRING_ADDR re-sent', '§4.5'),
    'last-avail-idx': {
      split: 'restored',
      packed: 'reset',
      how: 'base 0 is always sent; split rings are not reset and DPDK resyncs both indices to used->idx; packed rings are reset and in-flight buffers dropped',
      ref: '§5.4, §4.5, §5.9 (6ebbf4109f, 9277125731)',
    },
    'vring-enable': same('kept', 'SET_VRING_ENABLE(1) re-sent for pair 0', '§4.5, Appendix B'),
    'kick-call-fds': same('kept', 'the PMD\u2019s eventfds, re-sent with SET_VRING_CALL/KICK', '§4.5'),
    'device-status': same('kept', 'the status is re-driven on reconnect', '§5.4, §5.9 (47235f1650)'),
    'inflight-region': same('unused', 'virtio-user acks only MQ, REPLY_ACK, STATUS', '§3.1'),
  },
};

export interface SurvivalAnswer {
  outcome: Survival;
  /** Carried over by this side (kept or restored); renegotiated values are asked afresh. */
  survives: boolean;
  how: string;
  ref: string;
}

/**
 * Does `field` outlive a disconnect on this side? `ring` is needed for `last-avail-idx`, whose
 * answer differs between split and packed.
 */
export function survivesReconnect(profile: ProfileName, field: SessionField, ring?: RingKind): SurvivalAnswer {
  const e = SURVIVAL[profile][field];
  if (e.split !== e.packed && ring === undefined) throw new TypeError(`${field} on ${profile} depends on the ring kind: pass 'split' or 'packed'`);
  const outcome = ring === 'packed' ? e.packed : e.split;
  return { outcome, survives: outcome === 'kept' || outcome === 'restored', how: e.how, ref: e.ref };
}

// ---- where a ring resumes ---------------------------------------------------------------------

/** A ring position: split, a free-running u16 index; packed, a slot 0..size-1 and a wrap counter. */
export interface RingPos {
  idx: number;
  wrap?: boolean;
}

export interface ResumeState {
  /**
   * How the previous connection's ring ended:
   * - `backend-lost`: the back-end went away (quit or crash alike: it closes the socket without
   *   a stop, so the front-end's GET_VRING_BASE fails, §5.3);
   * - `frontend-stopped`: the front-end stopped the ring with GET_VRING_BASE and got an answer;
   * - `device-reset`: the guest reset the device (reboot) or the front-end is a new process.
   */
  end: 'backend-lost' | 'frontend-stopped' | 'device-reset';
  /** Queue size (packed positions wrap at it). */
  size: number;
  /** The old back-end's next avail position (what its GET_VRING_BASE returns). */
  lastAvail: RingPos;
  /** Split: used->idx in guest memory. Packed: the old back-end's next used position. */
  used: RingPos;
  /** Packed with QEMU after `backend-lost`: the base QEMU still holds from the last start or stop. */
  frontendBase?: RingPos;
}

export interface ResumePoint {
  /** The `num` of the SET_VRING_BASE the front-end sends. */
  base: number;
  /** Where the new back-end starts consuming and completing. */
  avail: RingPos;
  used: RingPos;
  /** Buffers the new back-end consumes a second time (TX resent, RX re-offered); null: unknown. */
  replayed: number | null;
  /** Buffers never completed (lost to the driver); null: unknown. */
  dropped: number | null;
  /** Resumes exactly where the old back-end stopped: nothing replayed, nothing dropped. */
  exact: boolean;
  source: 'used-idx-in-guest-memory' | 'get-vring-base-reply' | 'front-end-stale-copy' | 'ring-reset';
  ref: string;
}

const PACKED_START: RingPos = Object.freeze({ idx: 0, wrap: true });
const packedBase = (p: RingPos): number => (p.idx & 0x7fff) | (p.wrap === false ? 0 : 0x8000);

/** Buffers between the used position and the avail position: popped but not completed. */
export function inFlight(ring: RingKind, size: number, lastAvail: RingPos, used: RingPos): number {
  if (ring === 'split') return (lastAvail.idx - used.idx) & 0xffff;
  const d = lastAvail.idx - used.idx + ((lastAvail.wrap ?? true) === (used.wrap ?? true) ? 0 : size);
  if (d < 0 || d > size) throw new RangeError(`packed positions ${JSON.stringify(used)} → ${JSON.stringify(lastAvail)} are not within one ring of ${size}`);
  return d;
}

/** Where the new back-end resumes a ring after a reconnect, and what that costs (§5.3, §5.4, §5.6). */
export function expectedResumeIndex(profile: FrontendProfile, ring: RingKind, state: ResumeState): ResumePoint {
  if (state.end === 'device-reset') {
    // The guest rebuilt its rings; QEMU's virtio reset zeroed its indices (§5.4).
    const p = ring === 'split' ? { idx: 0 } : PACKED_START;
    return { base: ring === 'split' ? 0 : packedBase(PACKED_START), avail: p, used: p, replayed: 0, dropped: 0, exact: true, source: 'ring-reset', ref: '§5.4' };
  }
  const pending = inFlight(ring, state.size, state.lastAvail, state.used);
  if (ring === 'split') {
    // Whatever base arrives, DPDK resyncs both indices to used->idx when translating (§5.4), so
    // buffers popped but not used are consumed again.
    const base = profile === 'virtio-user-22.11' ? 0 : state.end === 'frontend-stopped' ? state.lastAvail.idx : state.used.idx;
    const p = { idx: state.used.idx };
    const fromReply = profile === 'qemu-7.2' && state.end === 'frontend-stopped' && pending === 0;
    return {
      base,
      avail: p,
      used: p,
      replayed: pending,
      dropped: 0,
      exact: pending === 0,
      source: fromReply ? 'get-vring-base-reply' : 'used-idx-in-guest-memory',
      ref: profile === 'qemu-7.2' ? '§5.3, §5.4' : '§4.5, §5.4',
    };
  }
  if (profile === 'virtio-user-22.11') {
    // Packed queues are reset on reconnect and in-flight buffers dropped (§5.4).
    return { base: packedBase(PACKED_START), avail: PACKED_START, used: PACKED_START, replayed: 0, dropped: pending, exact: pending === 0, source: 'ring-reset', ref: '§5.4' };
  }
  if (state.end === 'frontend-stopped') {
    // DPDK answers the avail half only; QEMU sends it back; DPDK sets used = avail (§5.6).
    const p = { idx: state.lastAvail.idx, wrap: state.lastAvail.wrap ?? true };
    return { base: packedBase(p), avail: p, used: p, replayed: 0, dropped: pending, exact: pending === 0, source: 'get-vring-base-reply', ref: '§5.6' };
  }
  // QEMU cannot restore a packed ring from guest memory; it sends what it held before (§5.4).
  if (state.frontendBase === undefined) throw new TypeError('packed ring under qemu-7.2 after backend-lost: frontendBase is needed');
  const p = { idx: state.frontendBase.idx, wrap: state.frontendBase.wrap ?? true };
  const exact = pending === 0 && p.idx === state.lastAvail.idx && p.wrap === (state.lastAvail.wrap ?? true);
  return {
    base: packedBase(p),
    avail: p,
    used: p,
    replayed: exact ? 0 : null,
    dropped: exact ? 0 : null,
    exact,
    source: 'front-end-stale-copy',
    ref: '§5.4, §5.6',
  };
}

// ---- what loss the protocol allows -----------------------------------------------------------

export interface InFlightAtCrash {
  /** Guest TX buffers the back-end had popped but not marked used. */
  tx: number;
  /** Guest RX buffers the back-end had popped but not marked used. */
  rx: number;
}

export interface AllowedLoss {
  /** Most packets that may be delivered twice; null: no bound. */
  duplicates: number | null;
  /** Most packets that may be lost; null: no bound. */
  lost: number | null;
  bounded: boolean;
  mechanism: string;
  ref: string;
}

/**
 * The loss and duplication the protocol allows when a back-end dies with buffers in flight.
 * `inflightTracking`: both sides use the inflight region (INFLIGHT_SHMFD); neither QEMU
 * virtio-net nor virtio-user does (§4.3, §3.1), so it is a what-if for these profiles.
 */
export function allowedLoss(profile: FrontendProfile, ring: RingKind, inFlightAtCrash: InFlightAtCrash, opts: { inflightTracking?: boolean } = {}): AllowedLoss {
  const { tx, rx } = inFlightAtCrash;
  if (![tx, rx].every((n) => Number.isInteger(n) && n >= 0)) throw new RangeError('in-flight counts are non-negative integers');
  if (opts.inflightTracking) {
    return { duplicates: 0, lost: 0, bounded: true, mechanism: 'the inflight region lets the new back-end resubmit every in-flight descriptor exactly once', ref: '§5.5' };
  }
  if (ring === 'split') {
    return {
      duplicates: tx,
      lost: rx,
      bounded: true,
      mechanism: 'resume at used->idx: popped TX buffers are sent again (some may already have left), popped RX buffers are re-offered and what was being written to them is lost',
      ref: '§5.4 ("some packets maybe resent for Tx and dropped for Rx")',
    };
  }
  if (profile === 'virtio-user-22.11') {
    return { duplicates: 0, lost: tx + rx, bounded: true, mechanism: 'packed queues are reset on reconnect and in-flight packets dropped', ref: '§5.4' };
  }
  return {
    duplicates: null,
    lost: null,
    bounded: false,
    mechanism: 'QEMU 7.2 cannot restore a packed ring after losing the back-end and DPDK 22.11 ignores the used half of the base: the new back-end resumes at the stale base QEMU held, so loss, duplication or a stall are possible anywhere in the ring',
    ref: '§5.4, §5.6',
  };
}

// ---- the front-ends' message orders ------------------------------------------------------------

export interface SequenceOptions {
  ring: RingKind;
  /** Queue pairs (vrings 0..2*queues-1). */
  queues?: number;
  queueSize?: number;
  /** Acked features for SET_FEATURES; default: VERSION_1 | bit 30 | MRG_RXBUF (| RING_PACKED, | MQ with more than one pair). */
  features?: bigint;
  /** SET_PROTOCOL_FEATURES value; default the profile's negotiated value (§3.1 [OBS]). */
  protocolFeatures?: bigint;
  /** SET_VRING_BASE per vring; default the ring's start (0, or 0x8000 for packed). */
  bases?: readonly number[];
}

const req = (name: ModelRequest, vring?: number, value?: number | bigint): SessionEvent => ({
  type: 'request',
  name,
  ...(vring !== undefined ? { vring } : {}),
  ...(value !== undefined ? { value } : {}),
});

/**
 * The requests a front-end sends, from the fact sheet's observed orders:
 * - `connect`: what follows the socket connecting (QEMU §4.1; virtio-user §4.5 init);
 * - `start`: driver start (QEMU §4.2; virtio-user FEATURES_OK + DRIVER_OK, §4.5);
 * - `stop`: QEMU's stop (SET_STATUS 0, GET_VRING_BASE each, §4.2); virtio-user's (ENABLE 0 per
 *   pair, GET_VRING_BASE each, §4.5);
 * - `reconnect`: everything after a new back-end connects to a front-end that was running
 *   (QEMU: init then start, §5.3 [OBS]; virtio-user: reset, renegotiation, start, §5.4, Appendix B).
 */
export function frontendSequence(profile: FrontendProfile, kind: 'connect' | 'start' | 'stop' | 'reconnect', o: SequenceOptions): SessionEvent[] {
  const queues = o.queues ?? 1;
  const size = o.queueSize ?? 256;
  const packed = o.ring === 'packed';
  const features = o.features ?? (0x140008000n | (packed ? BIT_RING_PACKED : 0n) | (queues > 1 ? BIT_NET_MQ : 0n));
  const protocol = o.protocolFeatures ?? (profile === 'qemu-7.2' ? 0x10cbfn : 0x10009n);
  const vrings = Array.from({ length: 2 * queues }, (_, i) => i);
  // virtio-user handles rx vrings (even) before tx vrings (odd) (§4.5).
  const vuOrder = [...vrings.filter((i) => i % 2 === 0), ...vrings.filter((i) => i % 2 === 1)];
  const base = (i: number): number => o.bases?.[i] ?? (packed ? 0x8000 : 0);
  const ringSetup = (i: number): SessionEvent[] => [req('SET_VRING_NUM', i, size), req('SET_VRING_BASE', i, base(i)), req('SET_VRING_ADDR', i), req('SET_VRING_KICK', i)];

  if (profile === 'qemu-7.2') {
    const connect = [
      req('GET_FEATURES'),
      req('GET_PROTOCOL_FEATURES'),
      req('SET_PROTOCOL_FEATURES', undefined, protocol),
      req('GET_QUEUE_NUM'),
      req('SET_SLAVE_REQ_FD'),
      req('SET_OWNER'),
      req('GET_FEATURES'),
      ...vrings.flatMap((i) => [req('SET_VRING_CALL', i), req('SET_VRING_ERR', i)]),
      ...vrings.map((i) => req('SET_VRING_ENABLE', i, 1)),
    ];
    const start = [
      req('SET_FEATURES', undefined, features),
      req('GET_STATUS'),
      req('SET_STATUS', undefined, STATUS_FEATURES_OK),
      req('SET_MEM_TABLE'),
      ...vrings.flatMap((i) => [...ringSetup(i), req('SET_VRING_CALL', i)]),
      req('GET_STATUS'),
      req('SET_STATUS', undefined, 0x0f),
    ];
    if (kind === 'connect') return connect;
    if (kind === 'start') return start;
    if (kind === 'stop') return [req('SET_STATUS', undefined, 0), ...vrings.map((i) => req('GET_VRING_BASE', i))];
    return [...connect, ...start];
  }

  const negotiate = [req('GET_FEATURES'), req('GET_PROTOCOL_FEATURES'), req('SET_PROTOCOL_FEATURES', undefined, protocol)];
  const pairs = Array.from({ length: queues }, (_, q) => q);
  const start = [
    ...vuOrder.map((i) => req('SET_VRING_CALL', i)),
    req('SET_FEATURES', undefined, features),
    req('SET_STATUS', undefined, 0x0b),
    req('GET_STATUS'),
    req('SET_MEM_TABLE'),
    ...vuOrder.flatMap(ringSetup),
    req('SET_VRING_ENABLE', 0, 1),
    req('SET_VRING_ENABLE', 1, 1),
    req('SET_STATUS', undefined, 0x0f),
  ];
  const stop = [...pairs.flatMap((q) => [req('SET_VRING_ENABLE', 2 * q, 0), req('SET_VRING_ENABLE', 2 * q + 1, 0)]), ...vuOrder.map((i) => req('GET_VRING_BASE', i))];
  if (kind === 'connect') return [req('SET_OWNER'), ...negotiate];
  if (kind === 'start') return start;
  if (kind === 'stop') return stop;
  // No SET_OWNER on a reconnect (§5.4).
  return [...stop, ...negotiate, ...start];
}
