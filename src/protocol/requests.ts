/**
 * The vhost-user request catalogue: every front-end request (1..43, sent on the main socket)
 * and every back-end request (1..8, sent on the back-end channel set up by SET_SLAVE_REQ_FD).
 * [QDOC "Front-end message types", "Back-end message types"; DPDK 22.11 lib/vhost/vhost_user.{h,c};
 * QEMU hw/virtio/vhost-user.c]
 *
 * Names are the DPDK 22.11 / QEMU 7.2 era ones (SET_SLAVE_REQ_FD, SLAVE_IOTLB_MSG, …); the
 * renamed forms (SET_BACKEND_REQ_FD, BACKEND_IOTLB_MSG, …) are aliases.
 */
import type { PayloadKind, Payload } from './payloads.ts';
import { isReply, wantsReply } from './header.ts';
import { ProtocolFeature } from './protocol-features.ts';

/**
 * Which side sends the requests of a code space: `frontend` codes are requests on the main
 * socket (and the replies the back-end sends there echo them); `backend` codes are requests on
 * the back-end channel (and the front-end's replies there).
 */
export type RequestSpace = 'frontend' | 'backend';

/** How many fds a message carries. */
export type FdRule =
  | { readonly type: 'exact'; readonly count: number }
  | { readonly type: 'range'; readonly min: number; readonly max: number }
  /** One fd per memory region, same order (SET_MEM_TABLE). */
  | { readonly type: 'per-region' }
  /** 0 if the payload's NOFD bit (0x100) is set, else 1 (KICK/CALL/ERR, HOST_NOTIFIER, device-state reply). */
  | { readonly type: 'nofd-bit' };

/** What the receiver of a request answers. */
export type ReplyRule =
  /** Nothing, unless NEED_REPLY was set with REPLY_ACK negotiated: then a u64 ack. */
  | { readonly type: 'ack-if-requested' }
  /** Always a reply with this payload (NEED_REPLY changes nothing: DPDK clears it). */
  | { readonly type: 'payload'; readonly kind: PayloadKind }
  /** Always a reply with size 0 (SET_LOG_BASE; QEMU reads it only with LOG_SHMFD, DPDK always sends it). */
  | { readonly type: 'empty' };

/** One shape a message may take. */
export interface MessageForm {
  readonly kind: PayloadKind;
  readonly fds: FdRule;
}

export interface RequestSpec {
  readonly space: RequestSpace;
  readonly code: number;
  /** DPDK 22.11 / QEMU 7.2 era name, without the `VHOST_USER_` prefix. */
  readonly name: string;
  /** Other names for the same code (newer renames, DPDK's spelling). */
  readonly aliases: readonly string[];
  /** Request payload. */
  readonly payload: PayloadKind;
  readonly fds: FdRule;
  readonly reply: ReplyRule;
  /**
   * Every shape a reply to this request may take, preferred first. A decoder picks the first
   * whose size fits. Always includes the u64 ack: any request may be acked under REPLY_ACK,
   * and DPDK answers a failed request that had NEED_REPLY with an ack of 1 whatever its normal reply.
   */
  readonly replyForms: readonly MessageForm[];
  /**
   * Front-end space: DPDK 22.11's vhost library has a handler (otherwise "was not handled" →
   * failure). Back-end space: DPDK 22.11 defines the request (it may send it).
   */
  readonly dpdk2211: boolean;
  /** The protocol feature that gates the request, if one does. */
  readonly protocolFeature?: number;
  readonly note?: string;
}

const NONE: FdRule = { type: 'exact', count: 0 };
const ONE: FdRule = { type: 'exact', count: 1 };
const ACK_FORM: MessageForm = { kind: 'ack', fds: NONE };

interface Def {
  code: number;
  name: string;
  aliases?: string[];
  payload: PayloadKind;
  fds?: FdRule;
  reply?: ReplyRule;
  /** Extra reply shapes besides the rule's own and the ack. */
  replyAlt?: MessageForm[];
  /** fds on the rule's own reply form */
  replyFds?: FdRule;
  dpdk: boolean;
  pf?: number;
  note?: string;
}

function build(space: RequestSpace, d: Def): RequestSpec {
  const reply = d.reply ?? { type: 'ack-if-requested' };
  // Order decides ambiguous sizes: for an ack-only request an 8-byte reply is the ack (an
  // empty memory table would also be 8 bytes); for the others the request's own reply wins.
  const forms: MessageForm[] = [];
  if (reply.type === 'ack-if-requested') forms.push(ACK_FORM);
  if (reply.type === 'payload') forms.push({ kind: reply.kind, fds: d.replyFds ?? NONE });
  if (reply.type === 'empty') forms.push({ kind: 'none', fds: NONE });
  forms.push(...(d.replyAlt ?? []));
  if (!forms.some((f) => f.kind === 'ack')) forms.push(ACK_FORM);
  return {
    space,
    code: d.code,
    name: d.name,
    aliases: d.aliases ?? [],
    payload: d.payload,
    fds: d.fds ?? NONE,
    reply,
    replyForms: forms,
    dpdk2211: d.dpdk,
    ...(d.pf !== undefined ? { protocolFeature: d.pf } : {}),
    ...(d.note ? { note: d.note } : {}),
  };
}

const PF = ProtocolFeature;
const payload = (kind: PayloadKind): ReplyRule => ({ type: 'payload', kind });

const FRONTEND_DEFS: Def[] = [
  { code: 1, name: 'GET_FEATURES', payload: 'none', reply: payload('features'), dpdk: true },
  { code: 2, name: 'SET_FEATURES', payload: 'features', dpdk: true },
  { code: 3, name: 'SET_OWNER', payload: 'none', dpdk: true },
  { code: 4, name: 'RESET_OWNER', payload: 'none', dpdk: true, note: 'deprecated; DPDK treats it as a full device reset' },
  {
    code: 5,
    name: 'SET_MEM_TABLE',
    payload: 'memoryTable',
    fds: { type: 'per-region' },
    // After POSTCOPY_LISTEN the back-end answers with the table of its own mapping bases.
    replyAlt: [{ kind: 'memoryTable', fds: NONE }],
    dpdk: true,
  },
  {
    code: 6,
    name: 'SET_LOG_BASE',
    // QDOC's table says u64, but QEMU sends and DPDK requires the 16-byte VhostUserLog.
    payload: 'log',
    // QEMU attaches the log fd only with LOG_SHMFD; DPDK 22.11 insists on exactly one.
    fds: { type: 'range', min: 0, max: 1 },
    reply: { type: 'empty' },
    dpdk: true,
  },
  { code: 7, name: 'SET_LOG_FD', payload: 'none', fds: ONE, dpdk: true, note: 'DPDK closes the fd: not implemented' },
  { code: 8, name: 'SET_VRING_NUM', payload: 'vringState', dpdk: true },
  { code: 9, name: 'SET_VRING_ADDR', payload: 'vringAddr', dpdk: true },
  { code: 10, name: 'SET_VRING_BASE', payload: 'vringState', dpdk: true },
  // The request's num is reserved (0); DPDK virtio-user 22.11 leaves stack garbage in it.
  { code: 11, name: 'GET_VRING_BASE', payload: 'vringState', reply: payload('vringState'), dpdk: true },
  { code: 12, name: 'SET_VRING_KICK', payload: 'vringFile', fds: { type: 'nofd-bit' }, dpdk: true },
  { code: 13, name: 'SET_VRING_CALL', payload: 'vringFile', fds: { type: 'nofd-bit' }, dpdk: true },
  { code: 14, name: 'SET_VRING_ERR', payload: 'vringFile', fds: { type: 'nofd-bit' }, dpdk: true, note: 'DPDK closes the fd: not implemented' },
  { code: 15, name: 'GET_PROTOCOL_FEATURES', payload: 'none', reply: payload('protocolFeatures'), dpdk: true },
  { code: 16, name: 'SET_PROTOCOL_FEATURES', payload: 'protocolFeatures', dpdk: true },
  // DPDK answers the number of queue pairs (128), QEMU compares it with its queue count.
  { code: 17, name: 'GET_QUEUE_NUM', payload: 'none', reply: payload('u64'), dpdk: true, pf: PF.MQ },
  { code: 18, name: 'SET_VRING_ENABLE', payload: 'vringState', dpdk: true },
  { code: 19, name: 'SEND_RARP', payload: 'mac', dpdk: true, pf: PF.RARP },
  { code: 20, name: 'NET_SET_MTU', payload: 'u64', dpdk: true, pf: PF.NET_MTU, note: 'DPDK accepts 68..65535' },
  { code: 21, name: 'SET_SLAVE_REQ_FD', aliases: ['SET_BACKEND_REQ_FD'], payload: 'none', fds: ONE, dpdk: true, pf: PF.SLAVE_REQ },
  // QEMU always sets NEED_REPLY on IOTLB updates; DPDK acks only when asked.
  { code: 22, name: 'IOTLB_MSG', payload: 'iotlb', dpdk: true },
  { code: 23, name: 'SET_VRING_ENDIAN', payload: 'vringState', dpdk: false, pf: PF.CROSS_ENDIAN },
  {
    code: 24,
    name: 'GET_CONFIG',
    payload: 'config',
    reply: payload('config'),
    // QDOC: a back-end signals an error with a zero-length reply.
    replyAlt: [{ kind: 'none', fds: NONE }],
    dpdk: true,
    pf: PF.CONFIG,
    note: 'DPDK: vDPA devices only',
  },
  { code: 25, name: 'SET_CONFIG', payload: 'config', dpdk: true, pf: PF.CONFIG, note: 'DPDK: vDPA devices only' },
  {
    code: 26,
    name: 'CREATE_CRYPTO_SESSION',
    aliases: ['CRYPTO_CREATE_SESS'],
    payload: 'cryptoSession',
    reply: payload('cryptoSession'),
    dpdk: false,
    pf: PF.CRYPTO_SESSION,
    note: 'layout differs between DPDK and QEMU versions; carried as opaque bytes',
  },
  { code: 27, name: 'CLOSE_CRYPTO_SESSION', aliases: ['CRYPTO_CLOSE_SESS'], payload: 'u64', dpdk: false, pf: PF.CRYPTO_SESSION },
  // The reply carries the userfaultfd and no payload.
  { code: 28, name: 'POSTCOPY_ADVISE', payload: 'none', reply: payload('none'), replyFds: ONE, dpdk: true, pf: PF.PAGEFAULT },
  { code: 29, name: 'POSTCOPY_LISTEN', payload: 'none', dpdk: true, pf: PF.PAGEFAULT },
  { code: 30, name: 'POSTCOPY_END', payload: 'none', reply: payload('ack'), dpdk: true, pf: PF.PAGEFAULT },
  { code: 31, name: 'GET_INFLIGHT_FD', payload: 'inflight', reply: payload('inflight'), replyFds: ONE, dpdk: true, pf: PF.INFLIGHT_SHMFD },
  { code: 32, name: 'SET_INFLIGHT_FD', payload: 'inflight', fds: ONE, dpdk: true, pf: PF.INFLIGHT_SHMFD },
  { code: 33, name: 'GPU_SET_SOCKET', payload: 'none', fds: ONE, dpdk: false },
  { code: 34, name: 'RESET_DEVICE', payload: 'none', dpdk: false, pf: PF.RESET_DEVICE },
  { code: 35, name: 'VRING_KICK', payload: 'vringState', dpdk: false, pf: PF.INBAND_NOTIFICATIONS },
  { code: 36, name: 'GET_MAX_MEM_SLOTS', payload: 'none', reply: payload('u64'), dpdk: false, pf: PF.CONFIGURE_MEM_SLOTS },
  {
    code: 37,
    name: 'ADD_MEM_REG',
    payload: 'singleRegion',
    fds: ONE,
    replyAlt: [{ kind: 'singleRegion', fds: NONE }],
    dpdk: false,
    pf: PF.CONFIGURE_MEM_SLOTS,
  },
  // QDOC: no fd SHOULD be sent, but back-ends MAY accept (and must close) one.
  { code: 38, name: 'REM_MEM_REG', payload: 'singleRegion', fds: { type: 'range', min: 0, max: 1 }, dpdk: false, pf: PF.CONFIGURE_MEM_SLOTS },
  { code: 39, name: 'SET_STATUS', payload: 'status', dpdk: true, pf: PF.STATUS },
  { code: 40, name: 'GET_STATUS', payload: 'none', reply: payload('status'), dpdk: true, pf: PF.STATUS },
  // The reply's layout is not specified (QEMU reads only the fd): opaque, fd optional.
  {
    code: 41,
    name: 'GET_SHARED_OBJECT',
    payload: 'uuid',
    reply: payload('opaque'),
    replyFds: { type: 'range', min: 0, max: 1 },
    dpdk: false,
    pf: PF.SHARED_OBJECT,
  },
  {
    code: 42,
    name: 'SET_DEVICE_STATE_FD',
    payload: 'deviceStateFd',
    fds: ONE,
    reply: payload('deviceStateResult'),
    replyFds: { type: 'nofd-bit' },
    dpdk: false,
    pf: PF.DEVICE_STATE,
  },
  { code: 43, name: 'CHECK_DEVICE_STATE', payload: 'none', reply: payload('ack'), dpdk: false, pf: PF.DEVICE_STATE },
];

const BACKEND_DEFS: Def[] = [
  // DPDK 22.11 sends IOTLB misses without NEED_REPLY.
  { code: 1, name: 'SLAVE_IOTLB_MSG', aliases: ['BACKEND_IOTLB_MSG'], payload: 'iotlb', dpdk: true },
  { code: 2, name: 'SLAVE_CONFIG_CHANGE_MSG', aliases: ['BACKEND_CONFIG_CHANGE_MSG'], payload: 'none', dpdk: true, pf: PF.CONFIG },
  {
    code: 3,
    name: 'SLAVE_VRING_HOST_NOTIFIER_MSG',
    aliases: ['BACKEND_VRING_HOST_NOTIFIER_MSG'],
    payload: 'vringArea',
    fds: { type: 'nofd-bit' },
    dpdk: true,
    pf: PF.HOST_NOTIFIER,
  },
  { code: 4, name: 'SLAVE_VRING_CALL', aliases: ['BACKEND_VRING_CALL'], payload: 'vringState', dpdk: false, pf: PF.INBAND_NOTIFICATIONS },
  { code: 5, name: 'SLAVE_VRING_ERR', aliases: ['BACKEND_VRING_ERR'], payload: 'vringState', dpdk: false, pf: PF.INBAND_NOTIFICATIONS },
  { code: 6, name: 'BACKEND_SHARED_OBJECT_ADD', payload: 'uuid', dpdk: false, pf: PF.SHARED_OBJECT },
  { code: 7, name: 'BACKEND_SHARED_OBJECT_REMOVE', payload: 'uuid', dpdk: false, pf: PF.SHARED_OBJECT },
  // Answered with a u64 (0 = found) and, on success only, the dma-buf fd.
  {
    code: 8,
    name: 'BACKEND_SHARED_OBJECT_LOOKUP',
    payload: 'uuid',
    reply: payload('ack'),
    replyFds: { type: 'range', min: 0, max: 1 },
    dpdk: false,
    pf: PF.SHARED_OBJECT,
  },
];

export const FRONTEND_REQUESTS: readonly RequestSpec[] = FRONTEND_DEFS.map((d) => build('frontend', d));
export const BACKEND_REQUESTS: readonly RequestSpec[] = BACKEND_DEFS.map((d) => build('backend', d));

const TABLES: Record<RequestSpace, ReadonlyMap<number, RequestSpec>> = {
  frontend: new Map(FRONTEND_REQUESTS.map((s) => [s.code, s])),
  backend: new Map(BACKEND_REQUESTS.map((s) => [s.code, s])),
};

export function lookupRequest(code: number, space: RequestSpace = 'frontend'): RequestSpec | undefined {
  return TABLES[space].get(code);
}

/** By name or alias, with or without `VHOST_USER_`. */
export function requestByName(name: string, space?: RequestSpace): RequestSpec | undefined {
  const n = name.toUpperCase().replace(/^VHOST_USER_/, '');
  const spaces: RequestSpace[] = space ? [space] : ['frontend', 'backend'];
  for (const sp of spaces) {
    for (const s of TABLES[sp].values()) if (s.name === n || s.aliases.includes(n)) return s;
  }
  return undefined;
}

/** `GET_FEATURES`, or `UNKNOWN(99)` / `BACKEND_UNKNOWN(99)` for codes outside the catalogue. */
export function requestName(code: number, space: RequestSpace = 'frontend'): string {
  return lookupRequest(code, space)?.name ?? `${space === 'backend' ? 'BACKEND_' : ''}UNKNOWN(${code})`;
}

function codesByName(specs: readonly RequestSpec[]) {
  const o: Record<string, number> = {};
  for (const s of specs) {
    o[s.name] = s.code;
    for (const a of s.aliases) o[a] = s.code;
  }
  return o;
}

/** Front-end request codes by name and alias: `FrontendRequest.SET_SLAVE_REQ_FD === FrontendRequest.SET_BACKEND_REQ_FD === 21`. */
export const FrontendRequest = codesByName(FRONTEND_REQUESTS) as Readonly<Record<FrontendRequestName, number>>;
/** Back-end channel request codes by name and alias. */
export const BackendRequest = codesByName(BACKEND_REQUESTS) as Readonly<Record<BackendRequestName, number>>;

export type FrontendRequestName =
  | 'GET_FEATURES' | 'SET_FEATURES' | 'SET_OWNER' | 'RESET_OWNER' | 'SET_MEM_TABLE' | 'SET_LOG_BASE'
  | 'SET_LOG_FD' | 'SET_VRING_NUM' | 'SET_VRING_ADDR' | 'SET_VRING_BASE' | 'GET_VRING_BASE'
  | 'SET_VRING_KICK' | 'SET_VRING_CALL' | 'SET_VRING_ERR' | 'GET_PROTOCOL_FEATURES'
  | 'SET_PROTOCOL_FEATURES' | 'GET_QUEUE_NUM' | 'SET_VRING_ENABLE' | 'SEND_RARP' | 'NET_SET_MTU'
  | 'SET_SLAVE_REQ_FD' | 'SET_BACKEND_REQ_FD' | 'IOTLB_MSG' | 'SET_VRING_ENDIAN' | 'GET_CONFIG'
  | 'SET_CONFIG' | 'CREATE_CRYPTO_SESSION' | 'CRYPTO_CREATE_SESS' | 'CLOSE_CRYPTO_SESSION'
  | 'CRYPTO_CLOSE_SESS' | 'POSTCOPY_ADVISE' | 'POSTCOPY_LISTEN' | 'POSTCOPY_END' | 'GET_INFLIGHT_FD'
  | 'SET_INFLIGHT_FD' | 'GPU_SET_SOCKET' | 'RESET_DEVICE' | 'VRING_KICK' | 'GET_MAX_MEM_SLOTS'
  | 'ADD_MEM_REG' | 'REM_MEM_REG' | 'SET_STATUS' | 'GET_STATUS' | 'GET_SHARED_OBJECT'
  | 'SET_DEVICE_STATE_FD' | 'CHECK_DEVICE_STATE';

export type BackendRequestName =
  | 'SLAVE_IOTLB_MSG' | 'BACKEND_IOTLB_MSG' | 'SLAVE_CONFIG_CHANGE_MSG' | 'BACKEND_CONFIG_CHANGE_MSG'
  | 'SLAVE_VRING_HOST_NOTIFIER_MSG' | 'BACKEND_VRING_HOST_NOTIFIER_MSG' | 'SLAVE_VRING_CALL'
  | 'BACKEND_VRING_CALL' | 'SLAVE_VRING_ERR' | 'BACKEND_VRING_ERR' | 'BACKEND_SHARED_OBJECT_ADD'
  | 'BACKEND_SHARED_OBJECT_REMOVE' | 'BACKEND_SHARED_OBJECT_LOOKUP';

/** The shapes a message with these flags may take: the request form, or the reply forms. */
export function formsFor(spec: RequestSpec, flags: number): readonly MessageForm[] {
  return isReply(flags) ? spec.replyForms : [{ kind: spec.payload, fds: spec.fds }];
}

/** Allowed fd counts for a form, given its decoded payload (needed for per-region and NOFD rules). */
export function expectedFdCount(rule: FdRule, decoded: Payload | undefined): { min: number; max: number } {
  switch (rule.type) {
    case 'exact':
      return { min: rule.count, max: rule.count };
    case 'range':
      return { min: rule.min, max: rule.max };
    case 'per-region': {
      const n = decoded?.kind === 'memoryTable' ? decoded.regions.length : 0;
      return { min: n, max: n };
    }
    case 'nofd-bit': {
      const noFd = decoded !== undefined && 'noFd' in decoded ? decoded.noFd : false;
      const n = noFd ? 0 : 1;
      return { min: n, max: n };
    }
  }
}

/**
 * The request space a message belongs to, from who sent it and its REPLY flag: requests
 * from the front-end and replies from the back-end are front-end codes; requests from the
 * back-end and the front-end's replies to them are back-end-channel codes.
 */
export function requestSpaceOf(sender: 'frontend' | 'backend', flags: number): RequestSpace {
  const reply = isReply(flags);
  return (sender === 'frontend') !== reply ? 'frontend' : 'backend';
}

/** True when a receiver must send an ack: NEED_REPLY set and the request has no reply of its own. */
export function needsAck(spec: RequestSpec | undefined, flags: number): boolean {
  if (!wantsReply(flags) || isReply(flags)) return false;
  return spec === undefined || spec.reply.type === 'ack-if-requested';
}

