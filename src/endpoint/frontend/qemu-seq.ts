/**
 * QEMU 7.2's vhost-user net control path as sans-IO sequences.
 *
 * Call structure mirrored (one `vhost_dev` per queue pair, vq_index = 2·pair):
 *   vhost_user_start → vhost_net_init → vhost_dev_init → vhost_user_backend_init   (`vhostUserStart`)
 *   virtio_net_set_status → vhost_net_start → vhost_dev_start                       (`setStatus`, start)
 *   virtio_net_set_status → vhost_net_stop → vhost_dev_stop → vhost_virtqueue_stop  (`setStatus`, stop)
 *   peer_attach → vhost_set_vring_enable                                            (`attachRound`)
 * Message-level rules come from hw/virtio/vhost-user.c: per-device requests (SET_OWNER,
 * SET_MEM_TABLE, GET_QUEUE_NUM, …) only go out for vq_index 0; SET_STATUS never waits for an
 * ack; `vhost_user_add_status` reads the status and only writes it when bits are missing.
 */
import { FrontendRequest as FR, ProtocolFeature, decodePayload, hasProtocolFeature, makeRequest, type Message, type VhostUserRegion } from '../../protocol/index.ts';
import type { AnyFd, EventFd, MemFd } from '../../transport/index.ts';
import { DeviceStatus as S, VirtioFeature as F, hasFeature } from '../../virtio/index.ts';
import { FrontendError } from './errors.ts';
import { replyU64, replyVringState, send, type OpResult, type Sequence } from './handshake.ts';
import { PACKED_BASE_WRAP, PROTOCOL_FEATURES_BIT, qemuAckedFeatures, qemuGuestOffered, qemuProtocolFeatures, type QemuDeviceConfig, type RingKind } from './profiles.ts';

/**
 * Reconnect mechanisms broken on purpose, so tests can show a verdict depends on them
 * (src/sim/profile-hooks.ts). None is QEMU behaviour; all default off.
 */
export interface QemuBrokenMechanisms {
  /** chr_closed_bh does not keep the acked features: the next back-end gets only what QEMU adds itself. */
  forgetAckedFeatures?: boolean;
  /** A lost back-end's split ring keeps its stale base instead of being restored from used->idx. */
  keepStaleSplitBase?: boolean;
  /** A lost back-end's packed ring is restored to where the guest driver has taken used buffers back to. */
  restorePackedBase?: boolean;
  /** A guest reset leaves the ring indices (virtio_reset does not zero them). */
  keepRingIndicesOnReset?: boolean;
}

/** One `struct vhost_dev` (a queue pair). */
export interface QemuVhostDev {
  readonly pair: number;
  readonly vqIndex: number;
  /** hdev->features: the second GET_FEATURES of vhost_dev_init. */
  features: bigint;
  /** hdev->backend_features: bit 30 when the back-end offered it. */
  backendFeatures: bigint;
  protocolFeatures: bigint;
  maxQueues: bigint;
  /** hdev->acked_features. */
  ackedFeatures: bigint;
  started: boolean;
}

/** A VirtQueue's indices as QEMU keeps them (hw/virtio/virtio.c). */
export interface QemuVq {
  lastAvailIdx: number;
  lastAvailWrap: boolean;
  usedIdx: number;
  usedWrap: boolean;
}

export interface QemuState {
  readonly cfg: QemuDeviceConfig;
  /** NetVhostUserState.acked_features: saved when a connection closes, checked against the next back-end. */
  savedAcked: bigint;
  /** s->vhost_net per pair; undefined until a connection's init succeeds. */
  devs: QemuVhostDev[] | undefined;
  /** n->vhost_started. */
  vhostStarted: boolean;
  /** Pairs vhost_net_start started (n->multiqueue ? all : 1). */
  startedPairs: number;
  /** nc->vring_enable per pair. */
  vringEnable: boolean[];
  /** VirtQueue state per vring. */
  vqs: QemuVq[];
  /** vdev->guest_features. */
  guestAcked: bigint;
  /** The guest driver set DRIVER_OK. */
  driverOk: boolean;
  /** The NIC link (qmp_set_link). */
  linkUp: boolean;
  /** The VM runs (false after quit). */
  vmRunning: boolean;
  /**
   * `struct vhost_inflight` of the device model (with `cfg.inflight`): filled by the first
   * GET_INFLIGHT_FD and kept for the front-end's lifetime, across back-end reconnects.
   */
  inflight?: QemuInflight;
}

/** The inflight area QEMU keeps: the back-end's memfd and the sizes it replied with. */
export interface QemuInflight {
  readonly fd: MemFd;
  readonly mmapSize: bigint;
  readonly mmapOffset: bigint;
  readonly numQueues: number;
  readonly queueSize: number;
}

/** virtio_reset: indices 0, both packed wrap counters set. */
export function initialVq(): QemuVq {
  return { lastAvailIdx: 0, lastAvailWrap: true, usedIdx: 0, usedWrap: true };
}

/**
 * virtio_queue_get_last_avail_idx: split → last_avail_idx; packed → avail | wrap<<15 in the
 * low half and used | used_wrap<<15 in the high half (0x80008000 after a reset).
 */
export function encodeVqBase(vq: QemuVq, kind: RingKind): number {
  if (kind === 'split') return vq.lastAvailIdx & 0xffff;
  const lo = (vq.lastAvailIdx | (vq.lastAvailWrap ? PACKED_BASE_WRAP : 0)) & 0xffff;
  const hi = (vq.usedIdx | (vq.usedWrap ? PACKED_BASE_WRAP : 0)) & 0xffff;
  return (lo + hi * 0x10000) >>> 0;
}

/**
 * virtio_queue_set_last_avail_idx. For packed rings QEMU 7.2 masks the used half with
 * 0x7ffff (a typo fixed in 8.1), so bit 15 also lands in used_idx; re-encoding gives the
 * same bits, which is all vhost ever sees.
 */
export function setVqBase(vq: QemuVq, kind: RingKind, num: number): void {
  if (kind === 'split') {
    vq.lastAvailIdx = num & 0xffff;
    return;
  }
  vq.lastAvailIdx = num & 0x7fff;
  vq.lastAvailWrap = (num & 0x8000) !== 0;
  const hi = (num >>> 16) & 0xffff;
  vq.usedIdx = hi & 0x7ffff;
  vq.usedWrap = (hi & 0x8000) !== 0;
}

export function newQemuState(cfg: QemuDeviceConfig): QemuState {
  return {
    cfg,
    savedAcked: 0n,
    devs: undefined,
    vhostStarted: false,
    startedPairs: 0,
    vringEnable: new Array<boolean>(cfg.queuePairs).fill(false),
    vqs: Array.from({ length: 2 * cfg.queuePairs }, initialVq),
    guestAcked: 0n,
    driverOk: false,
    linkUp: false,
    vmRunning: true,
  };
}

export interface QemuEnv {
  /** The ring format the guest negotiated (RING_PACKED acked). */
  ringKind(): RingKind;
  /** vhost_virtqueue_init: the masked call notifier and the error notifier of a vring (new per init). */
  initNotifiers(vring: number): { masked: EventFd; err: EventFd };
  /** The host notifier (ioeventfd) the guest kicks. */
  kickFd(vring: number): EventFd;
  /** The guest notifier (irqfd) the back-end calls. */
  callFd(vring: number): EventFd;
  memoryTable(): { regions: readonly VhostUserRegion[]; fds: readonly MemFd[] };
  vringAddr(vring: number): { desc: bigint; avail: bigint; used: bigint; usedGpa: bigint };
  /** used->idx in guest memory (split rings). */
  usedIdx(vring: number): number;
  /** Reconnect mechanisms broken on purpose (tests only; QemuFrontendOptions.broken). */
  readonly broken?: QemuBrokenMechanisms;
  /** With `broken.restorePackedBase`: where the device stopped on a packed ring, as guest memory shows it. */
  packedDriverUsed?(vring: number): { idx: number; wrap: boolean } | undefined;
  /** A socketpair for the back-end channel: [QEMU's end, the end to send]. */
  backendChannel(): [AnyFd, AnyFd];
  /** The back-end channel set up by SET_SLAVE_REQ_FD failed: drop QEMU's end. */
  dropBackendChannel(): void;
  log(level: 'error' | 'warning' | 'info', text: string, error?: FrontendError): void;
  milestone(kind: 'negotiated' | 'started' | 'stopped', detail?: string): void;
}

function* getU64(request: number): Sequence<{ ok: true; value: bigint } | { ok: false; error: FrontendError }> {
  const r = yield send(makeRequest(request), { request, size: 8 });
  if (!r.ok) return r;
  return { ok: true, value: replyU64(r.reply!) };
}

/** process_message_reply: read the ack only when NEED_REPLY went out; non-zero is -EIO. No size check. */
function* sendWithAck(msg: Message<AnyFd>, needReply: boolean): Sequence<OpResult> {
  const r = yield send(msg, needReply ? { request: msg.request } : undefined);
  if (!r.ok || !needReply) return r;
  if (replyU64(r.reply!) !== 0n) return { ok: false, error: new FrontendError('nack', `back-end refused request ${msg.request}`, msg.request) };
  return r;
}

/** vhost_user_backend_init followed by the rest of vhost_dev_init, for one queue pair. */
function* backendInit(st: QemuState, env: QemuEnv, pair: number): Sequence<QemuVhostDev | FrontendError> {
  const vqIndex = 2 * pair;
  const dev: QemuVhostDev = { pair, vqIndex, features: 0n, backendFeatures: 0n, protocolFeatures: 0n, maxQueues: 0n, ackedFeatures: 0n, started: false };
  const first = vqIndex === 0;
  const failInit = (e: FrontendError) => {
    env.log('error', `vhost_backend_init failed: ${e.message}`, e);
    return e;
  };
  const f = yield* getU64(FR.GET_FEATURES);
  if (!f.ok) return failInit(f.error);
  if ((f.value & PROTOCOL_FEATURES_BIT) !== 0n) {
    dev.backendFeatures |= PROTOCOL_FEATURES_BIT;
    const p = yield* getU64(FR.GET_PROTOCOL_FEATURES);
    if (!p.ok) return failInit(p.error);
    if (hasProtocolFeature(p.value, ProtocolFeature.CONFIG)) {
      env.log('warning', 'vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not.');
    }
    dev.protocolFeatures = qemuProtocolFeatures(p.value);
    const s = yield send(makeRequest(FR.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: dev.protocolFeatures }));
    if (!s.ok) return failInit(s.error);
    if (hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.MQ)) {
      // A per-device request: for the other pairs nothing is sent and max_queues stays 0.
      if (first) {
        const q = yield* getU64(FR.GET_QUEUE_NUM);
        if (!q.ok) return failInit(q.error);
        dev.maxQueues = q.value;
      }
    } else {
      dev.maxQueues = 1n;
    }
    if (hasFeature(f.value, F.ACCESS_PLATFORM) && !(hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.SLAVE_REQ) && hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.REPLY_ACK))) {
      return failInit(new FrontendError('iommu', 'IOMMU support requires reply-ack and backend-req protocol features.'));
    }
    if (hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      const m = yield* getU64(FR.GET_MAX_MEM_SLOTS);
      if (!m.ok) return failInit(m.error);
    }
  }
  if (first && hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.SLAVE_REQ)) {
    // vhost_setup_slave_channel: QEMU keeps sv[0], sends sv[1] and closes its copy.
    const [, theirs] = env.backendChannel();
    const ack = hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.REPLY_ACK);
    const r = yield* sendWithAck(makeRequest(FR.SET_SLAVE_REQ_FD, undefined, { needReply: ack, fds: [theirs] }), ack);
    theirs.close();
    if (!r.ok) {
      env.dropBackendChannel();
      return failInit(r.error);
    }
  }
  // vhost_dev_init proper.
  if (first) {
    const o = yield send(makeRequest(FR.SET_OWNER));
    if (!o.ok) return failInit(o.error);
  }
  const f2 = yield* getU64(FR.GET_FEATURES);
  if (!f2.ok) return failInit(f2.error);
  for (let i = vqIndex; i < vqIndex + 2; i++) {
    const n = env.initNotifiers(i);
    const c = yield send(makeRequest(FR.SET_VRING_CALL, { kind: 'vringFile', index: i, noFd: false }, { fds: [n.masked] }));
    if (!c.ok) return failInit(c.error);
    const e = yield send(makeRequest(FR.SET_VRING_ERR, { kind: 'vringFile', index: i, noFd: false }, { fds: [n.err] }));
    if (!e.ok) return failInit(e.error);
  }
  dev.features = f2.value;
  // hw/net/vhost_net.c vhost_net_init: the features acked on an earlier connection (saved by
  // net/vhost-user.c chr_closed_bh) must all be offered again, else the init fails and
  // net_vhost_user_event disconnects the chardev.
  const lacking = st.savedAcked & ~dev.features;
  if (lacking !== 0n) {
    const e = new FrontendError(
      'features-lacking',
      `back-end lacks feature mask 0x${lacking.toString(16)} acked on an earlier connection`,
      undefined,
      `vhost lacks feature mask 0x${lacking.toString(16)} for backend`,
    );
    env.log('error', e.upstream!, e);
    return e;
  }
  dev.ackedFeatures = qemuAckedFeatures(st.savedAcked, dev.backendFeatures);
  return dev;
}

/** vhost_user_start: one vhost_net per queue pair, then the queue count check. */
export function* vhostUserStart(st: QemuState, env: QemuEnv): Sequence<FrontendError | undefined> {
  const devs: QemuVhostDev[] = [];
  for (let pair = 0; pair < st.cfg.queuePairs; pair++) {
    const d = yield* backendInit(st, env, pair);
    if (d instanceof FrontendError) {
      env.log('error', `failed to init vhost_net for queue ${pair}`, d);
      return d;
    }
    devs.push(d);
    if (pair === 0 && BigInt(st.cfg.queuePairs) > d.maxQueues) {
      const e = new FrontendError('queue-num', `back-end supports ${d.maxQueues} queue pairs, ${st.cfg.queuePairs} configured`, FR.GET_QUEUE_NUM, `you are asking more queues than supported: ${d.maxQueues}`);
      env.log('error', e.upstream!, e);
      return e;
    }
  }
  st.devs = devs;
  env.milestone('negotiated', `protocol features 0x${devs[0].protocolFeatures.toString(16)}`);
  return undefined;
}

/** vhost_set_vring_enable(nc, enable) for one pair: remembered in nc->vring_enable, sent when a back-end is there. */
export function* setVringEnable(st: QemuState, pair: number, enable: boolean): Sequence<FrontendError | undefined> {
  st.vringEnable[pair] = enable;
  const dev = st.devs?.[pair];
  if (dev === undefined) return undefined;
  if ((dev.features & PROTOCOL_FEATURES_BIT) === 0n) {
    return new FrontendError('no-protocol-features', 'SET_VRING_ENABLE needs VHOST_USER_F_PROTOCOL_FEATURES (-EINVAL)', FR.SET_VRING_ENABLE);
  }
  for (let i = dev.vqIndex; i < dev.vqIndex + 2; i++) {
    // QEMU 7.2 sends it without waiting (the synchronous form came in 8.2).
    const r = yield send(makeRequest(FR.SET_VRING_ENABLE, { kind: 'vringState', index: i, num: enable ? 1 : 0 }));
    if (!r.ok) return r.error;
  }
  return undefined;
}

/** virtio_net_set_queue_pairs: peer_attach (SET_VRING_ENABLE 1) for the active pairs, peer_detach (ENABLE 0) for the rest. */
export function* attachRound(st: QemuState): Sequence<void> {
  const active = activePairs(st);
  // hw/net/virtio-net.c virtio_net_set_queue_pairs: the pairs above curr_queue_pairs are
  // detached (peer_detach → SET_VRING_ENABLE 0), so after a reset only the guest's MQ command
  // brings them back. With one pair this is the single attach it always was.
  for (let p = 0; p < st.cfg.queuePairs; p++) yield* setVringEnable(st, p, p < active);
}

/** Queue pairs in use: all with MQ acked (n->multiqueue), else one. */
function activePairs(st: QemuState): number {
  return hasFeature(st.guestAcked, F.NET_MQ) ? st.cfg.queuePairs : 1;
}

/** vhost_user_add_status: GET_STATUS, and SET_STATUS(read | bits) only when bits are missing. */
function* addStatus(status: number): Sequence<FrontendError | undefined> {
  const g = yield* getU64(FR.GET_STATUS);
  if (!g.ok) return g.error;
  const s = Number(g.value & 0xffn);
  if ((s & status) === status) return undefined;
  const r = yield send(makeRequest(FR.SET_STATUS, { kind: 'status', status: s | status }));
  return r.ok ? undefined : r.error;
}

/** vhost_virtqueue_start: NUM, BASE (last_avail_idx), ADDR, KICK, CALL (vhost-user does no notifier masking). */
function* vqStart(st: QemuState, env: QemuEnv, i: number): Sequence<FrontendError | undefined> {
  const a = env.vringAddr(i);
  const msgs = [
    makeRequest<AnyFd>(FR.SET_VRING_NUM, { kind: 'vringState', index: i, num: st.cfg.queueSize }),
    makeRequest<AnyFd>(FR.SET_VRING_BASE, { kind: 'vringState', index: i, num: encodeVqBase(st.vqs[i], env.ringKind()) }),
    // log_guest_addr is always the used ring's GPA, used only when the LOG flag is set.
    makeRequest<AnyFd>(FR.SET_VRING_ADDR, { kind: 'vringAddr', index: i, flags: 0, desc: a.desc, used: a.used, avail: a.avail, log: a.usedGpa }),
    makeRequest<AnyFd>(FR.SET_VRING_KICK, { kind: 'vringFile', index: i, noFd: false }, { fds: [env.kickFd(i)] }),
    makeRequest<AnyFd>(FR.SET_VRING_CALL, { kind: 'vringFile', index: i, noFd: false }, { fds: [env.callFd(i)] }),
  ];
  for (const m of msgs) {
    const r = yield send(m);
    if (!r.ok) return r.error;
  }
  return undefined;
}

/**
 * vhost_virtqueue_stop: GET_VRING_BASE becomes last_avail_idx. When it fails (the back-end is
 * gone) the index is restored from guest memory: a split ring's used->idx; a packed ring has
 * nothing to restore from, so the previous value stays (virtio_queue_restore_last_avail_idx).
 */
function* vqStop(st: QemuState, env: QemuEnv, i: number): Sequence<void> {
  const r = yield send(makeRequest(FR.GET_VRING_BASE, { kind: 'vringState', index: i, num: 0 }), { request: FR.GET_VRING_BASE, size: 8 });
  const kind = env.ringKind();
  if (r.ok) {
    setVqBase(st.vqs[i], kind, replyVringState(r.reply!).num >>> 0);
    return;
  }
  if (r.error.code === 'transport') env.log('error', 'Failed to set msg fds.', r.error);
  env.log('error', `vhost VQ ${i} ring restore failed: -22: Invalid argument (22)`, r.error);
  if (kind === 'split') {
    if (env.broken?.keepStaleSplitBase !== true) st.vqs[i].lastAvailIdx = env.usedIdx(i);
    return;
  }
  const p = env.broken?.restorePackedBase === true ? env.packedDriverUsed?.(i) : undefined;
  if (p !== undefined) Object.assign(st.vqs[i], { lastAvailIdx: p.idx, lastAvailWrap: p.wrap, usedIdx: p.idx, usedWrap: p.wrap });
}

/** vhost_dev_start for one pair (vrings=false, as virtio-net calls it). */
function* devStart(st: QemuState, env: QemuEnv, dev: QemuVhostDev, last: boolean): Sequence<FrontendError | undefined> {
  const features = dev.ackedFeatures | dev.backendFeatures;
  const f = yield send(makeRequest(FR.SET_FEATURES, { kind: 'features', features }));
  if (!f.ok) return f.error;
  const status = hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.STATUS);
  if (status) {
    const e = yield* addStatus(S.FEATURES_OK);
    if (e) return e;
  }
  if (dev.vqIndex === 0) {
    const ack = hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.REPLY_ACK);
    const mt = env.memoryTable();
    if (hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      for (let k = 0; k < mt.regions.length; k++) {
        const r = yield* sendWithAck(makeRequest(FR.ADD_MEM_REG, { kind: 'singleRegion', region: mt.regions[k] }, { needReply: ack, fds: [mt.fds[k]] }), ack);
        if (!r.ok) return logged(env, r.error, 'vhost_set_mem_table failed');
      }
    } else {
      const r = yield* sendWithAck(makeRequest(FR.SET_MEM_TABLE, { kind: 'memoryTable', regions: mt.regions }, { needReply: ack, fds: mt.fds }), ack);
      if (!r.ok) return logged(env, r.error, 'vhost_set_mem_table failed');
    }
  }
  for (let i = dev.vqIndex; i < dev.vqIndex + 2; i++) {
    const e = yield* vqStart(st, env, i);
    if (e) {
      for (let j = i - 1; j >= dev.vqIndex; j--) yield* vqStop(st, env, j);
      return e;
    }
  }
  if (status && last) {
    const e = yield* addStatus(S.ACKNOWLEDGE | S.DRIVER | S.DRIVER_OK);
    if (e) {
      for (let j = dev.vqIndex + 1; j >= dev.vqIndex; j--) yield* vqStop(st, env, j);
      return e;
    }
  }
  dev.started = true;
  return undefined;
}

function logged(env: QemuEnv, e: FrontendError, text: string): FrontendError {
  env.log('error', `${text}: ${e.message}`, e);
  return e;
}

/** vhost_dev_stop for one pair: SET_STATUS(0) on the last pair (errors ignored), then every ring. */
function* devStop(st: QemuState, env: QemuEnv, dev: QemuVhostDev, last: boolean): Sequence<void> {
  if (hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.STATUS) && last) {
    const r = yield send(makeRequest(FR.SET_STATUS, { kind: 'status', status: 0 }));
    if (!r.ok) env.log('error', 'Failed to set msg fds.', r.error);
  }
  for (let i = dev.vqIndex; i < dev.vqIndex + 2; i++) yield* vqStop(st, env, i);
  dev.started = false;
}

/**
 * What vhost_user_blk_start does before vhost_dev_start (hw/block/vhost-user-blk.c, QEMU 7.2):
 * vhost_dev_prepare_inflight (SET_FEATURES, so the back-end knows split vs packed), then
 * vhost_dev_get_inflight only while `s->inflight->addr` is unset, then vhost_dev_set_inflight
 * on every start. hw/virtio/vhost-user.c: both are no-ops without INFLIGHT_SHMFD; GET sends
 * num_queues = dev->nvqs and the queue size and takes the reply's fd; a zero mmap_size leaves
 * the area unset; SET passes the kept fd, without waiting for a reply.
 */
function* prepareInflight(st: QemuState, env: QemuEnv, dev: QemuVhostDev): Sequence<FrontendError | undefined> {
  if (st.cfg.inflight !== true || !hasProtocolFeature(dev.protocolFeatures, ProtocolFeature.INFLIGHT_SHMFD)) return undefined;
  const f = yield send(makeRequest(FR.SET_FEATURES, { kind: 'features', features: dev.ackedFeatures | dev.backendFeatures }));
  if (!f.ok) return f.error;
  if (st.inflight === undefined) {
    const numQueues = 2 * st.cfg.queuePairs;
    const r = yield send(makeRequest(FR.GET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize: st.cfg.queueSize }), {
      request: FR.GET_INFLIGHT_FD,
      size: 24,
      keepFds: true,
    });
    if (!r.ok) return logged(env, r.error, 'Error getting inflight');
    const fds = r.reply!.fds ?? [];
    const p = decodePayload('inflight', r.reply!.payload);
    if (p.kind !== 'inflight') throw new Error('unreachable');
    const fd = fds[0];
    if (p.mmapSize !== 0n) {
      if (fds.length !== 1 || fd === undefined || !('buffer' in fd)) {
        for (const x of fds) if (!x.closed) x.close();
        return logged(env, new FrontendError('inflight', 'GET_INFLIGHT_FD reply without a memfd', FR.GET_INFLIGHT_FD), 'Error getting inflight');
      }
      st.inflight = { fd: fd as MemFd, mmapSize: p.mmapSize, mmapOffset: p.mmapOffset, numQueues, queueSize: st.cfg.queueSize };
    } else for (const x of fds) if (!x.closed) x.close();
  }
  const inf = st.inflight;
  if (inf === undefined) return undefined;
  const s = yield send(
    makeRequest(FR.SET_INFLIGHT_FD, { kind: 'inflight', mmapSize: inf.mmapSize, mmapOffset: inf.mmapOffset, numQueues: inf.numQueues, queueSize: inf.queueSize }, { fds: [inf.fd] }),
  );
  if (!s.ok) return logged(env, s.error, 'Error setting inflight');
  return undefined;
}

/** vhost_net_start: per pair, the remembered enable first (QEMU ≥ 7.2 order), then the device. */
function* netStart(st: QemuState, env: QemuEnv): Sequence<FrontendError | undefined> {
  const devs = st.devs!;
  const n = activePairs(st);
  for (let p = 0; p < n; p++) {
    let e: FrontendError | undefined;
    if (st.vringEnable[p]) e = yield* setVringEnable(st, p, true);
    // One inflight area for the whole device, set before the first ring is configured.
    if (e === undefined && p === 0) e = yield* prepareInflight(st, env, devs[p]);
    if (e === undefined) e = yield* devStart(st, env, devs[p], p === n - 1);
    if (e !== undefined) {
      for (let q = p - 1; q >= 0; q--) yield* devStop(st, env, devs[q], false);
      return e;
    }
  }
  st.startedPairs = n;
  return undefined;
}

/** vhost_net_stop. */
function* netStop(st: QemuState, env: QemuEnv): Sequence<void> {
  const devs = st.devs!;
  const n = st.startedPairs;
  for (let p = 0; p < n; p++) yield* devStop(st, env, devs[p], p === n - 1);
  st.startedPairs = 0;
}

/**
 * virtio_net_set_status → virtio_net_vhost_status: vhost runs exactly while the guest
 * driver is OK, the link is up and the VM runs. A failed start falls back to userspace
 * virtio (the back-end is left alone until the next status change).
 */
export function* setStatus(st: QemuState, env: QemuEnv): Sequence<'started' | 'stopped' | 'failed' | 'unchanged'> {
  if (st.devs === undefined) return 'unchanged';
  const want = st.driverOk && st.linkUp && st.vmRunning;
  if (want === st.vhostStarted) return 'unchanged';
  if (want) {
    st.vhostStarted = true;
    const e = yield* netStart(st, env);
    if (e !== undefined) {
      env.log('error', `unable to start vhost net: 22: falling back on userspace virtio`, e);
      st.vhostStarted = false;
      return 'failed';
    }
    env.milestone('started');
    return 'started';
  }
  yield* netStop(st, env);
  st.vhostStarted = false;
  env.milestone('stopped');
  return 'stopped';
}

/** The guest acks features (virtio_net_set_features → vhost_net_ack_features for every pair). */
export function ackGuestFeatures(st: QemuState, guestAcked: bigint): void {
  st.guestAcked = guestAcked;
  for (const d of st.devs ?? []) d.ackedFeatures = qemuAckedFeatures(guestAcked, d.backendFeatures);
}

/** chr_closed_bh: keep the acked features for the next back-end. */
export function saveAckedFeatures(st: QemuState): void {
  if (st.devs !== undefined && st.devs.length > 0) st.savedAcked = st.devs[0].ackedFeatures;
}

/** virtio_reset of the device: ring indices back to their initial values. */
export function resetVirtqueues(st: QemuState): void {
  for (let i = 0; i < st.vqs.length; i++) st.vqs[i] = initialVq();
  st.guestAcked = 0n;
}

// ---- events, as every glue runs them (in-process QemuFrontend, RealQemuFrontend) ---------

export type StatusOutcome = 'started' | 'stopped' | 'failed' | 'unchanged';

/** CHR_EVENT_OPENED: vhost_user_start on the new connection; on success the link comes up (s->started). */
export function* netdevInit(st: QemuState, env: QemuEnv): Sequence<FrontendError | undefined> {
  const e = yield* vhostUserStart(st, env);
  if (e === undefined) st.linkUp = true;
  return e;
}

/** `n` peer_attach rounds (firmware and driver start-up, or the re-attach after a reset). */
export function* attachRounds(st: QemuState, n: number): Sequence<void> {
  for (let i = 0; i < n; i++) yield* attachRound(st);
}

/**
 * The guest driver sets DRIVER_OK: it acks what it `wants` of what QEMU offers (bits of
 * user_feature_bits the back-end lacks withdrawn), lays out its rings (`setupRings`, the
 * glue's guest memory), then virtio_net_set_status starts vhost.
 */
export function* guestDriverOk(st: QemuState, env: QemuEnv, wants: bigint, setupRings: (acked: bigint) => void): Sequence<StatusOutcome> {
  const acked = wants & qemuGuestOffered(st.cfg, st.devs?.[0]?.features ?? 0n);
  ackGuestFeatures(st, acked);
  setupRings(acked);
  st.driverOk = true;
  return yield* setStatus(st, env);
}

/** The guest driver resets the device: vhost stops (SET_STATUS 0, GET_VRING_BASE), then virtio_reset. */
export function* guestReset(st: QemuState, env: QemuEnv): Sequence<StatusOutcome> {
  st.driverOk = false;
  const r = yield* setStatus(st, env);
  if (env.broken?.keepRingIndicesOnReset === true) st.guestAcked = 0n;
  else resetVirtqueues(st);
  return r;
}

/**
 * chr_closed_bh: keep the acked features, set the link down, which stops vhost on the dead
 * socket (SET_STATUS and GET_VRING_BASE fail; split rings restored from used->idx, packed
 * rings keep their base).
 */
export function* chrClosed(st: QemuState, env: QemuEnv): Sequence<StatusOutcome> {
  if (env.broken?.forgetAckedFeatures === true) st.savedAcked = 0n;
  else saveAckedFeatures(st);
  st.linkUp = false;
  return yield* setStatus(st, env);
}

/** The VM stops (QEMU quits): vhost stops while the back-end is still there. */
export function* vmStop(st: QemuState, env: QemuEnv): Sequence<StatusOutcome> {
  st.vmRunning = false;
  return yield* setStatus(st, env);
}
