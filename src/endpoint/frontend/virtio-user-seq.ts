/**
 * DPDK 22.11 virtio-user's control path as sans-IO sequences.
 *
 * The functions mirror the upstream call structure so that message order, and which failure
 * stops what, come out as they do in DPDK:
 *   virtio_user_dev_init → virtio_init_device → virtio_reinit_complete   (`probe`)
 *   virtio_user_dev_server_reconnect                                      (`serverReconnect`)
 *   virtio_dev_close → virtio_reset                                       (`close`)
 * with virtio_set_status (virtio.c), virtio_user_set_status / virtio_user_reset
 * (virtio_user_ethdev.c), virtio_user_dev_set_features / _start_device / _stop_device /
 * _set_status / _update_status (virtio_user_dev.c) and the vhost-user ops (vhost_user.c)
 * underneath. Most failures there are logged and the caller carries on; the sequences do
 * the same, so the state left behind (status byte, started, qp_enabled) is the real one.
 */
import { FrontendRequest as FR, ProtocolFeature, hasProtocolFeature, makeRequest, type VhostUserRegion } from '../../protocol/index.ts';
import type { EventFd, MemFd } from '../../transport/index.ts';
import { DeviceStatus as S, VirtioFeature as F, featureMask, hasFeature } from '../../virtio/index.ts';
import { FrontendError } from './errors.ts';
import { replyU64, replyVringState, send, type Sequence } from './handshake.ts';
import {
  PACKED_BASE_WRAP,
  PROTOCOL_FEATURES_BIT,
  VIRTIO_USER_BACKEND_FEATURES,
  VIRTIO_USER_PROTOCOL_MASK,
  VIRTIO_USER_SUPPORTED_FEATURES,
  virtioPmdNegotiate,
  virtioUserFeatureMasks,
  virtioUserSetFeaturesValue,
  virtioUserVringOrder,
  type VirtioUserConfig,
} from './profiles.ts';

/** `struct virtio_user_dev` and the parts of `struct virtio_hw` the control path uses. */
export interface VirtioUserState {
  /** dev->status: the last status set, or read back from the back-end. */
  status: number;
  /** dev->started: the rings were handed to the back-end (start_device succeeded). */
  started: boolean;
  /** dev->qp_enabled. */
  qpEnabled: boolean[];
  /** dev->queue_pairs: pairs in use, 1 until the PMD's MQ command (virtio_user_handle_mq). */
  queuePairs: number;
  /** dev->device_features: the back-end's offer minus unsupported bits. */
  deviceFeatures: bigint;
  frontendFeatures: bigint;
  unsupportedFeatures: bigint;
  /** dev->features: what the driver acked (re-masked with each new back-end's offer). */
  features: bigint;
  /** hw->guest_features: the PMD's negotiation result, fixed after probe. */
  guestFeatures: bigint;
  /** data->protocol_features. */
  protocolFeatures: bigint;
  /**
   * The `num` of the first GET_VRING_BASE request of a stop: virtio_user_stop_device passes a
   * `struct vhost_vring_state` whose num is never initialised (the reference capture shows
   * 0x559e); later rings carry the previous reply's num.
   */
  staleVringNum: number;
  /** The last SET_FEATURES payload sent. */
  lastSetFeatures: bigint | undefined;
}

export function newVirtioUserState(cfg: VirtioUserConfig, staleVringNum = 0): VirtioUserState {
  return {
    status: 0,
    started: false,
    qpEnabled: new Array<boolean>(cfg.queues).fill(false),
    queuePairs: 1,
    deviceFeatures: 0n,
    frontendFeatures: 0n,
    unsupportedFeatures: 0n,
    features: 0n,
    guestFeatures: 0n,
    protocolFeatures: 0n,
    staleVringNum,
    lastSetFeatures: undefined,
  };
}

/**
 * Reconnect mechanisms broken on purpose, so tests can show a verdict depends on them
 * (src/sim/profile-hooks.ts). None is DPDK behaviour; all default off.
 */
export interface VirtioUserBrokenMechanisms {
  /** A server-mode reconnect keeps packed rings as they are (DPDK before 6ebbf4109f, v20.02) and still sends base 0. */
  keepPackedRingsOnReconnect?: boolean;
}

/** What the sequences need from the rest of the front-end. */
export interface VirtioUserEnv {
  readonly cfg: VirtioUserConfig;
  /** data->vhostfd >= 0: a back-end connection is held. */
  connected(): boolean;
  callFd(vring: number): EventFd;
  kickFd(vring: number): EventFd;
  memoryTable(): { regions: readonly VhostUserRegion[]; fds: readonly MemFd[] };
  vringAddr(vring: number): { desc: bigint; avail: bigint; used: bigint };
  /** virtio_alloc_queues: the PMD lays out its rings once features are known. */
  allocQueues(guestFeatures: bigint): void;
  /** virtio_user_dev_reset_queues_packed. */
  resetPackedQueues(): void;
  /** Reconnect mechanisms broken on purpose (tests only; VirtioUserFrontendOptions.broken). */
  readonly broken?: VirtioUserBrokenMechanisms;
  /** A PMD log line (level as DPDK's). */
  log(level: 'ERR' | 'NOTICE' | 'INFO' | 'DEBUG', text: string, error?: FrontendError): void;
  /** Lifecycle points: SET_FEATURES sent, rings handed over (start), rings taken back (stop). */
  milestone(kind: 'negotiated' | 'started' | 'stopped'): void;
}

const bit = (b: number) => featureMask(b);

// ---- vhost-user ops (vhost_user.c) ---------------------------------------------------

function* vhostSetOwner(env: VirtioUserEnv): Sequence<FrontendError | undefined> {
  const r = yield send(makeRequest(FR.SET_OWNER));
  if (r.ok) return undefined;
  env.log('ERR', 'Failed to set owner', r.error);
  return r.error;
}

/** vhost_user_get_features, which negotiates protocol features when bit 30 is offered. */
function* vhostGetFeatures(st: VirtioUserState, env: VirtioUserEnv): Sequence<bigint | FrontendError> {
  const fail = (e: FrontendError) => {
    env.log('ERR', 'Failed to get backend features', e);
    return e;
  };
  const r = yield send(makeRequest(FR.GET_FEATURES), { request: FR.GET_FEATURES, size: 8 });
  if (!r.ok) return fail(r.error);
  const features = replyU64(r.reply!);
  if ((features & PROTOCOL_FEATURES_BIT) === 0n) return features;
  const p = yield send(makeRequest(FR.GET_PROTOCOL_FEATURES), { request: FR.GET_PROTOCOL_FEATURES, size: 8 });
  if (!p.ok) {
    env.log('ERR', 'Failed to get backend protocol features', p.error);
    return fail(p.error);
  }
  st.protocolFeatures = replyU64(p.reply!) & VIRTIO_USER_PROTOCOL_MASK;
  const s = yield send(makeRequest(FR.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: st.protocolFeatures }));
  if (!s.ok) {
    env.log('ERR', 'Failed to set protocol features', s.error);
    return fail(s.error);
  }
  if (!hasProtocolFeature(st.protocolFeatures, ProtocolFeature.MQ)) st.unsupportedFeatures |= bit(F.NET_MQ);
  return features;
}

/** SET_STATUS and GET_STATUS are only spoken once FEATURES_OK is set, bit 30 offered and STATUS negotiated. */
function statusSupported(st: VirtioUserState): boolean {
  return (
    (st.status & S.FEATURES_OK) !== 0 &&
    (st.deviceFeatures & PROTOCOL_FEATURES_BIT) !== 0n &&
    hasProtocolFeature(st.protocolFeatures, ProtocolFeature.STATUS)
  );
}

/** virtio_user_dev_set_status → vhost_user_set_status. */
function* devSetStatus(st: VirtioUserState, env: VirtioUserEnv, status: number): Sequence<void> {
  st.status = status;
  if (!statusSupported(st)) return; // -ENOTSUP: nothing sent, not an error
  const ack = hasProtocolFeature(st.protocolFeatures, ProtocolFeature.REPLY_ACK);
  const r = yield send(makeRequest(FR.SET_STATUS, { kind: 'status', status }, { needReply: ack }), ack ? { request: FR.SET_STATUS, size: 8 } : undefined);
  if (!r.ok) {
    env.log('ERR', 'Failed to set backend status', r.error);
  } else if (ack && replyU64(r.reply!) !== 0n) {
    env.log('ERR', `Slave replied NACK to request type (${FR.SET_STATUS})`, new FrontendError('nack', 'SET_STATUS refused', FR.SET_STATUS));
  }
}

/** virtio_user_dev_update_status → vhost_user_get_status; dev->status takes the back-end's answer. */
function* devUpdateStatus(st: VirtioUserState, env: VirtioUserEnv): Sequence<boolean> {
  if (!statusSupported(st)) return false;
  const r = yield send(makeRequest(FR.GET_STATUS), { request: FR.GET_STATUS, size: 8 });
  if (!r.ok) {
    env.log('ERR', 'Failed to get backend status', r.error);
    return false;
  }
  st.status = Number(replyU64(r.reply!) & 0xffn);
  env.log('DEBUG', `Updated Device Status(0x${st.status.toString(16).padStart(8, '0')})`);
  return true;
}

/** vhost_user_enable_queue_pair: one SET_VRING_ENABLE per vring of the pair, only on a change. */
function* enableQueuePair(st: VirtioUserState, env: VirtioUserEnv, pair: number, enable: boolean): Sequence<boolean> {
  // Without a connection the op succeeds without sending (vhostfd < 0) and nothing changes.
  if (!env.connected()) return true;
  if (st.qpEnabled[pair] === enable) return true;
  for (let i = 0; i < 2; i++) {
    const r = yield send(makeRequest(FR.SET_VRING_ENABLE, { kind: 'vringState', index: pair * 2 + i, num: enable ? 1 : 0 }));
    if (!r.ok) return false;
  }
  st.qpEnabled[pair] = enable;
  return true;
}

// ---- virtio_user_dev.c ------------------------------------------------------------------

/**
 * virtio_user_handle_mq (virtio_user_dev.c), run when the PMD's control queue carries
 * VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (virtio_dev_start with more than one queue): pairs below
 * `n` enabled, the rest disabled, each only on a change. False (ack ~0) above max_queue_pairs.
 */
export function* handleMq(st: VirtioUserState, env: VirtioUserEnv, n: number): Sequence<boolean> {
  if (n > env.cfg.queues) {
    env.log('ERR', `multi-q config ${n}, but only ${env.cfg.queues} supported`);
    return false;
  }
  let ok = true;
  for (let p = 0; p < n; p++) ok = (yield* enableQueuePair(st, env, p, true)) && ok;
  for (let p = n; p < env.cfg.queues; p++) ok = (yield* enableQueuePair(st, env, p, false)) && ok;
  st.queuePairs = n;
  return ok;
}

/** virtio_user_dev_set_features: SET_VRING_CALL for every vring (vhost allocates rings on it), then SET_FEATURES. */
function* devSetFeatures(st: VirtioUserState, env: VirtioUserEnv): Sequence<boolean> {
  for (const i of virtioUserVringOrder(env.cfg.queues)) {
    const r = yield send(makeRequest(FR.SET_VRING_CALL, { kind: 'vringFile', index: i, noFd: false }, { fds: [env.callFd(i)] }));
    if (!r.ok) {
      env.log('ERR', `Failed to create queue ${i}`, r.error);
      return false;
    }
  }
  const value = virtioUserSetFeaturesValue(st.features, st.deviceFeatures);
  const r = yield send(makeRequest(FR.SET_FEATURES, { kind: 'features', features: value }));
  if (!r.ok) {
    env.log('ERR', 'Failed to set features', r.error);
    return false;
  }
  st.lastSetFeatures = value;
  env.milestone('negotiated');
  env.log('INFO', `set features: 0x${(value & ~PROTOCOL_FEATURES_BIT).toString(16)}`);
  return true;
}

/** virtio_user_kick_queue: NUM, BASE (0, wrap bit for packed: no reservation), ADDR, then KICK last (vhost readiness). */
function* kickQueue(st: VirtioUserState, env: VirtioUserEnv, i: number): Sequence<boolean> {
  const packed = hasFeature(st.features, F.RING_PACKED);
  const a = env.vringAddr(i);
  const msgs = [
    makeRequest(FR.SET_VRING_NUM, { kind: 'vringState', index: i, num: env.cfg.queueSize }),
    makeRequest(FR.SET_VRING_BASE, { kind: 'vringState', index: i, num: packed ? PACKED_BASE_WRAP : 0 }),
    makeRequest(FR.SET_VRING_ADDR, { kind: 'vringAddr', index: i, flags: 0, desc: a.desc, used: a.used, avail: a.avail, log: 0n }),
    makeRequest(FR.SET_VRING_KICK, { kind: 'vringFile', index: i, noFd: false }, { fds: [env.kickFd(i)] }),
  ];
  for (const m of msgs) {
    const r = yield send(m);
    if (!r.ok) {
      env.log('ERR', `Failed to kick queue ${i}`, r.error);
      return false;
    }
  }
  return true;
}

/** virtio_user_start_device: memory table, every ring, then pair 0 enabled. */
function* startDevice(st: VirtioUserState, env: VirtioUserEnv): Sequence<boolean> {
  const ack = hasProtocolFeature(st.protocolFeatures, ProtocolFeature.REPLY_ACK);
  const mt = env.memoryTable();
  const r = yield send(
    makeRequest(FR.SET_MEM_TABLE, { kind: 'memoryTable', regions: mt.regions }, { needReply: ack, fds: mt.fds }),
    ack ? { request: FR.SET_MEM_TABLE, size: 8 } : undefined,
  );
  let ok = r.ok;
  if (!r.ok) env.log('ERR', 'Failed to set memory table', r.error);
  else if (ack && replyU64(r.reply!) !== 0n) {
    env.log('ERR', `Slave replied NACK to request type (${FR.SET_MEM_TABLE})`, new FrontendError('nack', 'SET_MEM_TABLE refused', FR.SET_MEM_TABLE));
    ok = false;
  }
  if (ok) {
    for (const i of virtioUserVringOrder(env.cfg.queues)) {
      if (!(yield* kickQueue(st, env, i))) {
        ok = false;
        break;
      }
    }
  }
  if (ok) ok = yield* enableQueuePair(st, env, 0, true);
  if (!ok) {
    env.log('ERR', 'Failed to start device');
    return false;
  }
  st.started = true;
  env.milestone('started');
  return true;
}

/** virtio_user_stop_device: disable every enabled pair, then GET_VRING_BASE on every vring. */
function* stopDevice(st: VirtioUserState, env: VirtioUserEnv): Sequence<boolean> {
  if (!st.started) return true;
  const fail = () => {
    env.log('ERR', 'Failed to stop device');
    return false;
  };
  for (let p = 0; p < env.cfg.queues; p++) {
    if (!(yield* enableQueuePair(st, env, p, false))) return fail();
  }
  let state = { index: 0, num: st.staleVringNum };
  for (let i = 0; i < 2 * env.cfg.queues; i++) {
    state = { index: i, num: state.num };
    const r = yield send(makeRequest(FR.GET_VRING_BASE, { kind: 'vringState', ...state }), { request: FR.GET_VRING_BASE, size: 8 });
    if (!r.ok) {
      env.log('ERR', `get_vring_base failed, index=${i}`, r.error);
      return fail();
    }
    const got = replyVringState(r.reply!);
    if (got.index !== i) {
      env.log('ERR', `Unexpected ring index (${got.index})`, new FrontendError('bad-vring-index', `GET_VRING_BASE ${i} answered for ring ${got.index}`, FR.GET_VRING_BASE));
      return fail();
    }
    state = got;
  }
  st.started = false;
  env.milestone('stopped');
  return true;
}

// ---- virtio_user_ethdev.c and virtio.c ------------------------------------------------

/** virtio_user_set_status. */
function* pmdSetStatus(st: VirtioUserState, env: VirtioUserEnv, status: number): Sequence<void> {
  const old = st.status;
  if ((status & S.FEATURES_OK) !== 0 && (old & S.FEATURES_OK) === 0) yield* devSetFeatures(st, env);
  if ((status & S.DRIVER_OK) !== 0) {
    if (!(yield* startDevice(st, env))) {
      yield* devUpdateStatus(st, env);
      return;
    }
  } else if (status === 0) {
    // virtio_user_reset
    if ((st.status & S.DRIVER_OK) !== 0) yield* stopDevice(st, env);
  }
  yield* devSetStatus(st, env, status);
}

/** virtio_user_get_status. */
function* pmdGetStatus(st: VirtioUserState, env: VirtioUserEnv): Sequence<number> {
  yield* devUpdateStatus(st, env);
  return st.status;
}

/** virtio_set_status: ORs in the status read back first (except for a reset). */
function* virtioSetStatus(st: VirtioUserState, env: VirtioUserEnv, status: number): Sequence<void> {
  if (status !== 0) status |= yield* pmdGetStatus(st, env);
  yield* pmdSetStatus(st, env, status);
}

/** virtio_reset: status 0, then poll until the device reads back 0 (it does at once: GET_STATUS is not spoken then). */
function* virtioReset(st: VirtioUserState, env: VirtioUserEnv): Sequence<void> {
  yield* pmdSetStatus(st, env, 0);
  yield* pmdGetStatus(st, env);
}

// ---- entry points -----------------------------------------------------------------------

export type ProbeResult =
  | { readonly probed: true; readonly started: boolean }
  | { readonly probed: false; readonly error: FrontendError };

/**
 * The first connection: virtio_user_dev_init (SET_OWNER, features and protocol features),
 * virtio_init_device (reset, ACK, DRIVER, negotiation, FEATURES_OK and its check), the
 * queues, virtio_reinit_complete (DRIVER_OK).
 */
export function* probe(st: VirtioUserState, env: VirtioUserEnv): Sequence<ProbeResult> {
  // The root cause is reported; the PMD's own summary line is logged.
  const failed = (error: FrontendError, text: string): ProbeResult => {
    env.log('ERR', text, error);
    return { probed: false, error };
  };
  const owner = yield* vhostSetOwner(env);
  if (owner !== undefined) return failed(owner, 'Failed to set backend owner');
  st.unsupportedFeatures = ~(VIRTIO_USER_SUPPORTED_FEATURES | VIRTIO_USER_BACKEND_FEATURES) & 0xffff_ffff_ffff_ffffn;
  const offered = yield* vhostGetFeatures(st, env);
  if (offered instanceof FrontendError) return failed(offered, 'Failed to get device features');
  const masks = virtioUserFeatureMasks(env.cfg);
  st.unsupportedFeatures |= masks.unsupported;
  st.frontendFeatures = masks.frontend & ~st.unsupportedFeatures;
  st.deviceFeatures = offered & ~st.unsupportedFeatures;

  yield* virtioReset(st, env);
  yield* virtioSetStatus(st, env, S.ACKNOWLEDGE);
  yield* virtioSetStatus(st, env, S.DRIVER);
  st.guestFeatures = virtioPmdNegotiate(st.deviceFeatures, st.frontendFeatures);
  st.features = st.guestFeatures & (st.deviceFeatures | st.frontendFeatures);
  env.log('DEBUG', `features after negotiate = ${st.guestFeatures.toString(16)}`);
  if (hasFeature(st.guestFeatures, F.VERSION_1)) {
    yield* virtioSetStatus(st, env, S.FEATURES_OK);
    const s = yield* pmdGetStatus(st, env);
    if ((s & S.FEATURES_OK) === 0) return failed(new FrontendError('features-ok', `device status 0x${s.toString(16)} lacks FEATURES_OK`), 'Failed to set FEATURES_OK status!');
  }
  env.allocQueues(st.guestFeatures);
  yield* virtioSetStatus(st, env, S.DRIVER_OK);
  return { probed: true, started: st.started };
}

/**
 * A new back-end accepted on the listening socket (server mode): reset (which stops the
 * rings on the *new* back-end), ACK, DRIVER, features again (no SET_OWNER), the packed-ring
 * reset, FEATURES_OK, DRIVER_OK. True when the device runs again.
 */
export function* serverReconnect(st: VirtioUserState, env: VirtioUserEnv): Sequence<boolean> {
  const oldStatus = st.status;
  yield* virtioReset(st, env);
  yield* virtioSetStatus(st, env, S.ACKNOWLEDGE);
  yield* virtioSetStatus(st, env, S.DRIVER);
  const offered = yield* vhostGetFeatures(st, env);
  if (offered instanceof FrontendError) {
    env.log('ERR', 'get_features failed', offered);
    return false;
  }
  st.deviceFeatures = offered & ~st.unsupportedFeatures;
  // A back-end offering less is not refused: the acked set silently shrinks.
  st.features &= st.deviceFeatures | st.frontendFeatures;
  // Only when the status being replaced had DRIVER_OK: an earlier attempt that died after
  // its reset but before this point leaves a status without it, and then the packed rings
  // are not reset on this attempt (virtio_user_dev_server_reconnect's old_status test).
  if (hasFeature(st.guestFeatures, F.RING_PACKED) && (oldStatus & S.DRIVER_OK) !== 0 && env.broken?.keepPackedRingsOnReconnect !== true) {
    env.log('NOTICE', 'Packets on the fly will be dropped when packed ring reconnecting.');
    env.resetPackedQueues();
  }
  yield* virtioSetStatus(st, env, S.FEATURES_OK);
  yield* virtioSetStatus(st, env, S.DRIVER_OK);
  if (!st.started) return false;
  // start_device enabled pair 0 only: the pairs the application had in use come back here.
  if (st.queuePairs > 1 && !(yield* handleMq(st, env, st.queuePairs))) {
    env.log('ERR', 'Fails to enable multi-queue pairs!');
    return false;
  }
  env.log('NOTICE', 'server mode virtio-user reconnection succeeds!');
  return true;
}

/** virtio_dev_close: the reset stops the rings (ENABLE 0, GET_VRING_BASE); status 0 itself is never sent. */
export function* close(st: VirtioUserState, env: VirtioUserEnv): Sequence<void> {
  yield* virtioReset(st, env);
}

