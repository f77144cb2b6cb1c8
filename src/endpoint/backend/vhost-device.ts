/**
 * One vhost-user connection of the DPDK 22.11 back-end (`struct virtio_net` and
 * lib/vhost/vhost_user.c `vhost_user_msg_handler`), sans IO: `handle(message)` returns the
 * replies to send, log events, and whether the connection must be closed. The glue
 * (backend.ts) owns sockets and time; the replay (replay-backend.ts) feeds captured messages.
 *
 * Dispatch follows DPDK 22.11 step by step:
 *  1. "read message X" (IOTLB_MSG at DEBUG) or "external request N" for codes without handler;
 *  2. vring-indexed requests allocate vrings up to their index; an index ≥ 256 closes the
 *     connection whatever the flags ("failed to alloc queue");
 *  3. handlers that take no fds get 0 or fail ("expect 0 FDs…"), the others check their count;
 *  4. a handler fails, succeeds, or succeeds with a reply (flags 0x5, NEED_REPLY cleared);
 *  5. NEED_REPLY still set → ack u64 (1 on failure, 0 on success) and carry on; a failure
 *     without it → "vhost message handling failed." and the connection is closed;
 *  6. every vring's readiness is re-evaluated (queue state changes), then the device's: the
 *     first time vrings 0 and 1 are ready (and DRIVER_OK, with STATUS negotiated) it is
 *     "ready for processing" and new_device() runs once until destroyed.
 *
 * Where DPDK reads stale stack bytes (a payload shorter than its handler reads), maps past
 * the end of a file, or keeps a dangling pointer, the model refuses and emits a `model`
 * event instead (see log.ts `ModelNote`). No input makes `handle` throw, and nothing outside
 * the MemFd buffers is ever touched.
 */
import {
  encode,
  lookupRequest,
  type EncodedMessage,
  type Message,
  type MessageHeader,
  type Payload,
  FLAG_NEED_REPLY,
  makeAck,
  makeReply,
  ProtocolFeature,
  hasProtocolFeature,
  BackendRequest,
  requestFlags,
} from '../../protocol/index.ts';
import { GuestMemory, GuestMemoryError, DirtyLog } from '../../memory/index.ts';
import { MemFd, EventFd, SocketFd, type AnyFd } from '../../transport/index.ts';
import { VirtioFeature, hasFeature, featureBit, DeviceStatus } from '../../virtio/index.ts';
import { RingError } from '../../ring/errors.ts';
import type { DescriptorChain } from '../../ring/types.ts';
import type { SplitDevice } from '../../ring/split/index.ts';
import type { PackedDevice } from '../../ring/packed/index.ts';
import { dpdkGetPackedBase, dpdkSetPackedBase } from '../../ring/packed/index.ts';
import type { DpdkBackendProfile } from './profile.ts';
import { Vring, closeSlot, fdNumber, translateRingAddresses, qvaToGpa, ZERO_RING_ADDRS, type FdSlot, type TranslateContext } from './vring.ts';
import { configEvent, errorEvent, hex64, modelEvent, pmdEvent, statusLines, type VhostLogEvent } from './log.ts';
import {
  checkInflightsPacked,
  checkInflightsSplit,
  inflightSizePerQueue,
  initInflightRegion,
  InflightPackedView,
  InflightSplitView,
  type InflightCheck,
  type InflightView,
} from './inflight.ts';
import { IOTLB_INVALIDATE, IOTLB_MISS, IOTLB_UPDATE } from './iotlb.ts';

/** A framed message as DPDK's reader hands it over: header, `size` payload bytes, the fds received with it. */
export interface IncomingMessage {
  readonly header: MessageHeader;
  readonly payload: Uint8Array;
  readonly fds: readonly AnyFd[];
}

export interface DeviceEnvironment {
  /** Socket path: the `(<path>)` of the log lines. */
  readonly path: string;
  /** Creates the memfd GET_INFLIGHT_FD hands out (`memfd_create("vhost-inflight")`). */
  memfd(name: string, size: number): MemFd;
  /** Inflight areas larger than this fail as an allocation failure (default 64 MiB). */
  readonly maxInflightBytes?: number;
  /** Receives events the data path raises between messages (a ring error stopping a queue). */
  dataPathEvent?(ev: VhostLogEvent): void;
}

export type Lifecycle = 'new-device' | 'destroy-device';

export interface HandleResult {
  /** Messages to send on the main socket, in order. */
  readonly replies: Message<AnyFd>[];
  /** Requests to send on the back-end (slave) channel: IOTLB misses. */
  readonly backendRequests: Message<AnyFd>[];
  readonly events: VhostLogEvent[];
  /** new_device() / destroy_device() calls made while handling. */
  readonly lifecycle: Lifecycle[];
  /** The handler returned -1: DPDK closes the connection and destroys the device. */
  readonly close: boolean;
}

function asEventFd(s: FdSlot): EventFd | undefined {
  return s instanceof EventFd && !s.closed ? s : undefined;
}

/** A vring as the data path sees it once the device runs. */
export interface VringView {
  readonly index: number;
  readonly device: SplitDevice | PackedDevice;
  /** The kick eventfd, undefined when the front-end passed none (NOFD: the back-end polls). */
  readonly kick: EventFd | undefined;
  /** The call eventfd, undefined with NOFD. */
  readonly call: EventFd | undefined;
  readonly enabled: boolean;
  /** `device.pop`; a malformed chain is reported once (model event) and stops the queue at it: false. */
  pop(chain: DescriptorChain): boolean;
  /** Flushes used entries and writes the call eventfd if the ring says to notify. True when signalled. */
  notify(): boolean;
  /**
   * The vring's inflight area (SET_INFLIGHT_FD with INFLIGHT_SHMFD negotiated), for data paths
   * that track inflight I/O (`rte_vhost_get_vhost_ring_inflight`); undefined otherwise.
   */
  readonly inflight?: VringInflight;
}

/** What `rte_vhost_get_vhost_ring_inflight` hands the application. */
export interface VringInflight {
  readonly view: InflightView;
  /** `vq->resubmit_inflight`: what the first kick found still inflight; taken once. */
  takeResubmit(): InflightCheck | undefined;
  /** `vq->global_counter++`. */
  nextCounter(): bigint;
}

type Result = { type: 'ok' } | { type: 'err' } | { type: 'reply'; payload?: Payload | Uint8Array; fds?: AnyFd[] };
const OK: Result = { type: 'ok' };
const ERR: Result = { type: 'err' };

interface Ctx {
  readonly header: MessageHeader;
  readonly request: number;
  readonly payload: Uint8Array;
  readonly dv: DataView;
  /** Received fds; a handler that keeps or closes one sets its slot to null. */
  readonly fds: (AnyFd | null)[];
  readonly name: string;
  /** DPDK clears NEED_REPLY when it sends a handler's own reply. */
  needReply: boolean;
}

interface Handler {
  readonly name: string;
  readonly acceptsFd: boolean;
  readonly fn: (d: VhostUserDevice, c: Ctx) => Result;
}

interface MappedRegion {
  readonly gpa: bigint;
  readonly size: bigint;
  readonly uaddr: bigint;
  readonly mmapOffset: bigint;
  readonly fd: AnyFd;
}

const U64_MAX = (1n << 64n) - 1n;
const MEMFD_BLKSIZE = 0x1000n;
/** Made-up host addresses for the memory-region log lines: region i is mapped at this + i TiB. */
const HOST_MAP_BASE = 0x7f0000000000n;

/** Broken-profile switch keepVringStateAcrossConnections: ring positions a destroyed device left, per back-end (its profile object). */
const KEPT_POSITIONS = new WeakMap<DpdkBackendProfile, Pick<Vring, 'lastAvailIdx' | 'availWrap' | 'lastUsedIdx' | 'usedWrap'>[]>();

const F = VirtioFeature;
const PF = ProtocolFeature;

/** Requests whose payload carries a vring index, and where (`vhost_user_check_and_alloc_queue_pair`). */
function vringIndexOf(request: number, c: Ctx): number | undefined {
  const p = c.payload;
  switch (request) {
    case 12:
    case 13:
    case 14:
      return p.length >= 1 ? p[0]! : undefined; // u64 & VHOST_USER_VRING_IDX_MASK
    case 8:
    case 10:
    case 11:
    case 18:
    case 9:
      return p.length >= 4 ? c.dv.getUint32(0, true) : undefined;
    case 32:
      // num_queues - 1 as a uint32: 0 queues wraps to 0xffffffff and is refused.
      return p.length >= 18 ? (c.dv.getUint16(16, true) - 1) >>> 0 : undefined;
    default:
      return undefined;
  }
}

export class VhostUserDevice {
  readonly vid: number;
  features = 0n;
  protocolFeatures = 0n;
  status = 0;
  /** VIRTIO_DEV_RUNNING: new_device() was called. */
  running = false;
  /** VIRTIO_DEV_READY. */
  readyFlag = false;
  featuresFailed = false;
  readonly vrings: (Vring | undefined)[] = [];
  nrVring = 0;
  mtu = 0;
  mac: string | undefined;
  /** SEND_RARP seen: the data path would inject a RARP broadcast. */
  rarpPending = false;
  /** Back-end (slave) channel end kept from SET_SLAVE_REQ_FD. */
  slaveReqFd: AnyFd | undefined;
  postcopyListening = false;

  private memTable: MappedRegion[] | undefined;
  private guestMem: GuestMemory | undefined;
  private log: { buffer: ArrayBufferLike; dirty: DirtyLog; size: bigint; offset: bigint } | undefined;
  private inflightInfo: { fd: MemFd; buffer: SharedArrayBuffer; offset: number; size: number } | undefined;
  /** SET_MEM_TABLE under postcopy: the next message is read inside the handler as its ack. */
  private postcopyAck: { ctx: Ctx } | undefined;
  private destroyed = false;
  /** Vrings that took a destroyed device's positions (keepVringStateAcrossConnections): those win over the front-end's. */
  private readonly keptVrings = new Set<number>();

  // Per-call collectors.
  private events: VhostLogEvent[] = [];
  private lifecycle: Lifecycle[] = [];
  private backendRequests: Message<AnyFd>[] = [];

  constructor(
    readonly profile: DpdkBackendProfile,
    private readonly env: DeviceEnvironment,
    vid = 0,
  ) {
    this.vid = vid;
  }

  // ---- introspection ---------------------------------------------------------------------

  /** Guest memory from the last SET_MEM_TABLE (undefined without one, or with 0 regions). */
  get memory(): GuestMemory | undefined {
    return this.guestMem;
  }

  get isPacked(): boolean {
    return hasFeature(this.features, F.RING_PACKED);
  }

  get dirtyLog(): DirtyLog | undefined {
    return this.log?.dirty;
  }

  get inflightRegion(): { fd: MemFd; size: number } | undefined {
    return this.inflightInfo;
  }

  vringState(i: number): Vring | undefined {
    return this.vrings[i];
  }

  /**
   * A ready vring for the data path: the device runs (new_device done), the vring is ready
   * (mapped, kick and call set, enabled), its device half exists, it has not met a malformed
   * chain, and the PMD polls it (index < 2·queues). Otherwise undefined: disabled rings get nothing.
   */
  vring(i: number): VringView | undefined {
    const vq = this.vrings[i];
    if (!this.running || this.destroyed || vq === undefined) return undefined;
    if (i >= 2 * this.profile.options.queues) return undefined;
    if (!vq.isReady() || !vq.accessOk || vq.device === undefined) return undefined;
    const device = vq.device;
    const kick = asEventFd(vq.kick);
    const call = asEventFd(vq.call);
    const inflight = vq.inflight !== undefined && hasProtocolFeature(this.protocolFeatures, PF.INFLIGHT_SHMFD) ? vq.inflight : undefined;
    // The glue asks after every event while it waits for readiness: hand back the same view while
    // nothing it carries changed (views are never mutated, so a held one keeps its old values).
    const c = this.viewCache[i];
    if (c !== undefined && c.vq === vq && c.view.device === device && c.view.kick === kick && c.view.call === call && c.view.enabled === vq.enabled && c.inflight === inflight) return c.view;
    const view = this.makeView(i, vq, device, kick, call, inflight);
    this.viewCache[i] = { vq, inflight, view };
    return view;
  }

  private readonly viewCache: ({ vq: Vring; inflight: InflightView | undefined; view: VringView } | undefined)[] = [];

  private makeView(i: number, vq: Vring, device: SplitDevice | PackedDevice, kick: EventFd | undefined, call: EventFd | undefined, inflight: InflightView | undefined): VringView {
    const self = this;
    return {
      index: i,
      device,
      kick,
      call,
      enabled: vq.enabled,
      ...(inflight !== undefined
        ? {
            inflight: {
              view: inflight,
              takeResubmit(): InflightCheck | undefined {
                const r = vq.resubmit;
                vq.resubmit = undefined;
                return r;
              },
              nextCounter(): bigint {
                const c = vq.globalCounter;
                vq.globalCounter = c + 1n;
                return c;
              },
            },
          }
        : {}),
      pop(chain: DescriptorChain): boolean {
        if (vq.device !== device) return false;
        try {
          const got = device.pop(chain);
          vq.broken = undefined;
          return got;
        } catch (e) {
          if (!(e instanceof RingError) && !(e instanceof GuestMemoryError)) throw e;
          // As DPDK's burst functions: stop at the bad chain without consuming it; every later
          // poll meets it again, so the queue makes no progress until the driver rewrites it.
          const err = e instanceof RingError ? e : new RingError('bad-address', e.message);
          const again = vq.broken !== undefined && vq.broken.code === err.code && vq.broken.where === err.where;
          vq.broken = err;
          if (!again) {
            const ev = modelEvent('ring-error', `vring ${i}: ${err.message}; the queue stops at this chain`);
            self.dataPathEvents.push(ev);
            self.env.dataPathEvent?.(ev);
          }
          return false;
        }
      },
      notify(): boolean {
        if (vq.device !== device) return false;
        const must = device.flush();
        const call = asEventFd(vq.call);
        // DPDK ≥22.11.3 skips the write for an invalid call fd; the model has nothing to write to either way.
        if (must && call !== undefined) {
          call.write(1n);
          return true;
        }
        return false;
      },
    };
  }

  /** Events raised by the data path (ring errors), drained by the glue. */
  readonly dataPathEvents: VhostLogEvent[] = [];

  // ---- message handling --------------------------------------------------------------------

  handle(m: IncomingMessage): HandleResult {
    this.events = [];
    this.lifecycle = [];
    this.backendRequests = [];
    const replies: Message<AnyFd>[] = [];
    let close = false;
    if (this.destroyed) {
      for (const fd of m.fds) if (!fd.closed) fd.close();
      return this.result(replies, true);
    }
    try {
      close = this.dispatch(m, replies);
    } catch (e) {
      // A model bug must not pass silently, but it must not take the endpoint down either.
      this.events.push(errorEvent('processing-failed', `internal error: ${e instanceof Error ? e.message : String(e)}`));
      for (const fd of m.fds) if (!fd.closed) fd.close();
      close = true;
      this.internalErrors.push(e);
    }
    return this.result(replies, close);
  }

  /** Exceptions caught inside `handle` (always a model bug; tests assert it stays empty). */
  readonly internalErrors: unknown[] = [];

  private result(replies: Message<AnyFd>[], close: boolean): HandleResult {
    return { replies, backendRequests: this.backendRequests, events: this.events, lifecycle: this.lifecycle, close };
  }

  private ev(e: VhostLogEvent): void {
    this.events.push(e);
  }

  private dispatch(m: IncomingMessage, replies: Message<AnyFd>[]): boolean {
    const p = this.profile;
    let fds: AnyFd[] = [...m.fds];
    // read_fd_message: a control buffer for 8 fds. 22.11.0 fails the read on MSG_CTRUNC;
    // from 22.11.2 it logs and carries on with the fds that fitted (the kernel closes the rest).
    if (fds.length > p.maxFds) {
      for (const fd of fds.slice(p.maxFds)) fd.close();
      fds = fds.slice(0, p.maxFds);
      if (p.options.patch < 2) {
        this.ev(errorEvent('truncated-msg', 'truncated msg (fd -1)'));
        for (const fd of fds) fd.close();
        this.ev(errorEvent('read-failed', 'vhost read message failed'));
        return true;
      }
      this.ev(errorEvent('truncated-control-data', 'truncated control data (fd -1)'));
    }
    const payload = m.payload;
    const request = m.header.request;
    const handler = request > 0 && request < HANDLERS.length ? HANDLERS[request] : undefined;
    const name = handler?.name ?? '';
    const ctx: Ctx = {
      header: m.header,
      request,
      payload,
      dv: new DataView(payload.buffer, payload.byteOffset, payload.length),
      fds,
      name,
      needReply: (m.header.flags & FLAG_NEED_REPLY) !== 0,
    };
    if (this.postcopyAck !== undefined) return this.finishPostcopyAck(ctx, replies);
    if (handler !== undefined) {
      this.ev(configEvent(request === 22 ? 'DEBUG' : 'INFO', `read message ${name}`, { kind: 'message', name: name.replace(/^VHOST_USER_/, ''), request }));
    } else {
      this.ev(configEvent('DEBUG', `external request ${request}`, { kind: 'external-request', request }));
    }

    const vidx = vringIndexOf(request, ctx);
    if (vidx !== undefined) {
      if (vidx >= p.maxVrings) {
        this.ev(errorEvent('invalid-vring-index', `invalid vring index: ${vidx}`));
        this.ev(errorEvent('alloc-queue-failed', 'failed to alloc queue'));
        this.closeAll(ctx);
        return true;
      }
      this.allocVring(vidx);
    }

    let result: Result;
    let handled = false;
    if (handler === undefined) {
      result = ERR;
    } else {
      if (!handler.acceptsFd && !this.validateFds(ctx, 0)) result = ERR;
      else result = handler.fn(this, ctx);
      handled = true;
      if (this.postcopyAck !== undefined && result.type === 'reply') {
        // Postcopy SET_MEM_TABLE: the table goes out now; the handler is still waiting for the ack.
        replies.push(makeReply<AnyFd>(m.header, result.payload, result.fds ?? []));
        this.closeAll(ctx);
        return false;
      }
      switch (result.type) {
        case 'err':
          this.ev(errorEvent('processing-failed', `processing ${name} failed.`));
          break;
        case 'ok':
          this.ev(configEvent('DEBUG', `processing ${name} succeeded.`, { kind: 'processed', name: short(name), request, ok: true, needsReply: false }));
          break;
        case 'reply':
          this.ev(configEvent('DEBUG', `processing ${name} succeeded and needs reply.`, { kind: 'processed', name: short(name), request, ok: true, needsReply: true }));
          replies.push(makeReply<AnyFd>(m.header, result.payload, result.fds ?? []));
          ctx.needReply = false;
          break;
      }
    }
    if (!handled) {
      this.ev(errorEvent('not-handled', `vhost message (req: ${request}) was not handled.`));
      result = ERR;
    }
    this.closeAll(ctx);
    return this.finish(ctx, result, replies);
  }

  /** Steps 5 and 6 of the dispatch. Returns true when the connection must close. */
  private finish(ctx: Ctx, result: Result, replies: Message<AnyFd>[]): boolean {
    const failed = result.type === 'err';
    if (ctx.needReply) {
      replies.push(makeAck(ctx.header, !failed) as Message<AnyFd>);
    } else if (failed) {
      this.ev(errorEvent('handling-failed', 'vhost message handling failed.'));
      return true;
    }
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      const cur = vq.isReady();
      if (cur !== vq.ready) {
        vq.ready = cur;
        this.notifyQueueState(vq, cur);
      }
    }
    if (this.virtioIsReady() && !this.running) this.newDevice();
    return false;
  }

  private closeAll(ctx: Ctx): void {
    for (let i = 0; i < ctx.fds.length; i++) {
      const fd = ctx.fds[i];
      if (fd && !fd.closed) fd.close();
      ctx.fds[i] = null;
    }
  }

  /** `validate_msg_fds`: the wrong count closes every fd and fails the request. */
  private validateFds(ctx: Ctx, expected: number): boolean {
    if (ctx.fds.length === expected) return true;
    const n = ctx.name !== '' ? ctx.name : '(null)';
    this.ev(errorEvent('expect-fds', `expect ${expected} FDs for request ${n}, received ${ctx.fds.length}`));
    this.closeAll(ctx);
    return false;
  }

  /** A payload shorter than the handler reads: DPDK would read stale stack bytes. */
  need(ctx: Ctx, n: number): boolean {
    if (ctx.payload.length >= n) return true;
    this.ev(modelEvent('short-payload', `${ctx.name || `request ${ctx.request}`}: payload of ${ctx.payload.length} bytes, the handler reads ${n}`));
    return false;
  }

  private take(ctx: Ctx, i: number): AnyFd {
    const fd = ctx.fds[i]!;
    ctx.fds[i] = null;
    return fd;
  }

  // ---- device lifecycle ----------------------------------------------------------------

  /** `alloc_vring_queue`: allocates holes too; wrap counters start at 1. */
  private allocVring(idx: number): void {
    for (let i = 0; i <= idx; i++) {
      if (this.vrings[i] !== undefined) continue;
      const vq = new Vring(i);
      const kept = this.profile.options.keepVringStateAcrossConnections === true ? KEPT_POSITIONS.get(this.profile)?.[i] : undefined;
      if (kept !== undefined) {
        Object.assign(vq, kept);
        this.keptVrings.add(i);
      }
      this.vrings[i] = vq;
    }
    this.nrVring = Math.max(this.nrVring, idx + 1);
  }

  private translateCtx(): TranslateContext {
    return {
      mem: this.guestMem,
      features: this.features,
      events: this.events,
      iotlbMiss: (vq, iova, perm) => this.sendIotlbMiss(vq, iova, perm),
      ...(this.profile.options.skipUsedIdxResync === true || this.keptVrings.size > 0 ? { skipUsedIdxResync: true } : {}),
    };
  }

  private translate(vq: Vring): void {
    translateRingAddresses(this.translateCtx(), vq);
  }

  /** `vhost_user_iotlb_miss`: sent on the back-end channel without NEED_REPLY. */
  private sendIotlbMiss(vq: Vring, iova: bigint, perm: number): void {
    this.ev(modelEvent('iotlb-miss', `vring ${vq.index}: IOTLB miss for IOVA ${hex64(iova)}`));
    if (!(this.slaveReqFd instanceof SocketFd)) {
      this.ev(errorEvent('iotlb-miss-send-failed', 'failed to send IOTLB miss message (-1)'));
      return;
    }
    this.backendRequests.push({
      request: BackendRequest.SLAVE_IOTLB_MSG,
      flags: requestFlags(false),
      payload: { kind: 'iotlb', iova, size: 0n, uaddr: 0n, perm, type: IOTLB_MISS },
      fds: [],
    });
  }

  private virtioIsReady(): boolean {
    if (this.readyFlag) return true;
    if (this.nrVring === 0) return false;
    const n = this.profile.vringsToBeReady;
    if (this.nrVring < n) return false;
    for (let i = 0; i < n; i++) if (!this.vrings[i]!.isReady()) return false;
    if (hasProtocolFeature(this.protocolFeatures, PF.STATUS) && (this.status & DeviceStatus.DRIVER_OK) === 0) return false;
    this.readyFlag = true;
    if (!this.running) this.ev(configEvent('INFO', 'virtio is now ready for processing.', { kind: 'ready' }));
    return true;
  }

  /** new_device() of the net PMD: disables guest notifications on every vring, marks RUNNING. */
  private newDevice(): void {
    this.running = true;
    this.lifecycle.push('new-device');
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      vq.notifEnable = false;
      this.applyGuestNotification(vq, false);
    }
    this.ev(pmdEvent('INFO', `Vhost device ${this.vid} created`, { kind: 'device-created', vid: this.vid }));
  }

  /** `vhost_destroy_device_notify`. */
  private destroyNotify(): void {
    if (!this.running) return;
    this.running = false;
    this.lifecycle.push('destroy-device');
    this.ev(pmdEvent('INFO', `Vhost device ${this.vid} destroyed`, { kind: 'device-destroyed', vid: this.vid }));
  }

  /** `vhost_enable_guest_notification`: applied only to a ready ring (through its device half). */
  private applyGuestNotification(vq: Vring, enable: boolean): void {
    if (!vq.ready || vq.device === undefined) return;
    if (enable) vq.device.enableKicks();
    else vq.device.disableKicks();
  }

  /** `vhost_user_notify_queue_state` + the PMD's vring_state_changed. */
  private notifyQueueState(vq: Vring, enable: boolean): void {
    if (enable && vq.notifEnable !== 'uninit') this.applyGuestNotification(vq, vq.notifEnable);
    this.ev(pmdEvent('INFO', `vring${vq.index} is ${enable ? 'enabled' : 'disabled'}`, { kind: 'vring-state', index: vq.index, enable }));
  }

  /** Marks a ready vring not ready (SET_VRING_KICK/CALL do this before swapping fds). */
  private unready(vq: Vring): void {
    if (vq.ready) {
      vq.ready = false;
      this.notifyQueueState(vq, false);
    }
  }

  private updateDirtyLog(): void {
    if (this.guestMem === undefined) return;
    this.guestMem.setDirtyLog(this.log !== undefined && hasFeature(this.features, F.LOG_ALL) ? this.log.dirty : null);
  }

  /** `free_mem_region`: unmap and close every region fd. */
  private freeMemRegions(): void {
    for (const r of this.memTable ?? []) if (!r.fd.closed) r.fd.close();
    this.memTable = undefined;
    this.guestMem?.setDirtyLog(null);
    this.guestMem = undefined;
  }

  /** Device halves over unmapped memory are dropped (DPDK keeps the dangling pointers). */
  private dropDeviceHalves(reason: string, note = false): void {
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      if (vq.device === undefined) continue;
      vq.syncFromDevice();
      vq.device = undefined;
      vq.deviceError = reason;
      if (note) this.ev(modelEvent('ring-device-unavailable', `vring ${i}: ${reason}`));
    }
  }

  /** After a failed SET_MEM_TABLE DPDK's mapped rings point into unmapped memory; the model says so. */
  private noteDanglingRings(): void {
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      if (vq.anyRingSet()) this.ev(modelEvent('ring-device-unavailable', `vring ${i}: its rings point into a memory table that is gone`));
    }
  }

  private cleanupInflight(vq: Vring): void {
    if (!hasProtocolFeature(this.protocolFeatures, PF.INFLIGHT_SHMFD)) return;
    vq.inflight = undefined;
    vq.resubmit = undefined;
  }

  /** `vhost_backend_cleanup`. */
  private backendCleanup(): void {
    this.dropDeviceHalves('guest memory unmapped');
    this.freeMemRegions();
    this.log = undefined;
    if (this.inflightInfo !== undefined) {
      if (!this.inflightInfo.fd.closed) this.inflightInfo.fd.close();
      this.inflightInfo = undefined;
    }
    if (this.slaveReqFd !== undefined) {
      if (!this.slaveReqFd.closed) this.slaveReqFd.close();
      this.slaveReqFd = undefined;
    }
    this.postcopyListening = false;
  }

  /** `cleanup_device(dev, destroy)`: destroy=false keeps the call fds (RESET_OWNER). */
  private cleanupDevice(destroy: boolean): void {
    this.backendCleanup();
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      if (destroy) closeSlot(vq.call);
      closeSlot(vq.kick);
      this.cleanupInflight(vq);
    }
  }

  /**
   * The connection is gone (peer closed, fatal read error, or the handler failed): DPDK's
   * vhost_destroy_device. Closes every fd the device holds. Idempotent.
   */
  destroy(): VhostLogEvent[] {
    this.events = [];
    this.lifecycle = [];
    if (this.destroyed) return this.events;
    this.destroyNotify();
    this.cleanupDevice(true);
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      vq.invalidate();
      vq.kick = 'uninit';
      vq.call = 'uninit';
    }
    if (this.profile.options.keepVringStateAcrossConnections === true) {
      KEPT_POSITIONS.set(
        this.profile,
        this.vrings.slice(0, this.nrVring).map((vq) => ({ lastAvailIdx: vq!.lastAvailIdx, availWrap: vq!.availWrap, lastUsedIdx: vq!.lastUsedIdx, usedWrap: vq!.usedWrap })),
      );
    }
    this.postcopyAck = undefined;
    this.destroyed = true;
    return this.events;
  }

  /** SET_MEM_TABLE under postcopy is waiting for the front-end's ack: the next message is read as that ack. */
  get awaitingPostcopyAck(): boolean {
    return this.postcopyAck !== undefined;
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** Lifecycle calls made by the last `destroy()`. */
  get lastLifecycle(): readonly Lifecycle[] {
    return this.lifecycle;
  }

  // ---- handlers -----------------------------------------------------------------------------

  /** @internal */ h_getFeatures(): Result {
    return { type: 'reply', payload: { kind: 'features', features: this.profile.features } };
  }

  /** @internal */ h_setFeatures(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const features = c.dv.getBigUint64(0, true);
    if ((features & ~this.profile.features) !== 0n) {
      this.ev(errorEvent('invalid-features', 'received invalid negotiated features.'));
      this.featuresFailed = true;
      this.status &= ~DeviceStatus.FEATURES_OK;
      return ERR;
    }
    if (this.running) {
      if (this.features === features) return OK;
      // Only LOG_ALL may change while running (live migration starting).
      if (((this.features ^ features) & ~featureBit(F.LOG_ALL)) !== 0n) {
        this.ev(errorEvent('features-changed', 'features changed while device is running.'));
        return ERR;
      }
    }
    const before = this.features;
    this.features = features;
    this.ev(configEvent('INFO', `negotiated Virtio features: ${hex64(features)}`, { kind: 'features', value: features }));
    const mrg = hasFeature(features, F.NET_MRG_RXBUF);
    const v1 = hasFeature(features, F.VERSION_1);
    this.ev(configEvent('DEBUG', `mergeable RX buffers ${mrg ? 'on' : 'off'}, virtio 1 ${v1 ? 'on' : 'off'}`, { kind: 'mergeable', mrgRxbuf: mrg, virtio1: v1 }));
    if (!hasFeature(features, F.NET_MQ)) {
      // Only the first queue pair survives without MQ.
      while (this.nrVring > 2) {
        const vq = this.vrings[--this.nrVring];
        if (vq === undefined) continue;
        this.vrings[this.nrVring] = undefined;
        closeSlot(vq.call);
        closeSlot(vq.kick);
        this.cleanupInflight(vq);
        vq.invalidate();
      }
      this.vrings.length = Math.min(this.vrings.length, this.nrVring);
    }
    this.featuresFailed = false;
    if (before !== features) {
      // Ring features (EVENT_IDX, IN_ORDER, INDIRECT) are read live by DPDK: rebuild the device halves.
      const ctx = this.translateCtx();
      for (let i = 0; i < this.nrVring; i++) this.vrings[i]!.rebuildDevice(ctx);
    }
    this.updateDirtyLog();
    return OK;
  }

  /** @internal */ h_resetOwner(): Result {
    this.destroyNotify();
    this.cleanupDevice(false);
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.running = false;
    this.readyFlag = false;
    this.featuresFailed = false;
    for (let i = 0; i < this.nrVring; i++) {
      const old = this.vrings[i]!;
      old.invalidate();
      // reset_vring_queue: everything re-initialised (wrap counters 0, not 1) but the call fd.
      const vq = new Vring(i);
      vq.call = old.call;
      vq.availWrap = false;
      vq.usedWrap = false;
      this.vrings[i] = vq;
    }
    return OK;
  }

  /** @internal */ h_setMemTable(c: Ctx): Result {
    if (!this.need(c, 8)) {
      this.closeAll(c);
      return ERR;
    }
    const nregions = c.dv.getUint32(0, true);
    if (!this.validateFds(c, nregions)) return ERR;
    if (nregions > 8) {
      this.ev(errorEvent('too-many-regions', `too many memory regions (${nregions})`));
      this.closeAll(c);
      return ERR;
    }
    if (!this.need(c, 8 + 32 * nregions)) {
      this.closeAll(c);
      return ERR;
    }
    const regs: { gpa: bigint; size: bigint; uaddr: bigint; off: bigint }[] = [];
    for (let i = 0; i < nregions; i++) {
      const o = 8 + 32 * i;
      regs.push({
        gpa: c.dv.getBigUint64(o, true),
        size: c.dv.getBigUint64(o + 8, true),
        uaddr: c.dv.getBigUint64(o + 16, true),
        off: c.dv.getBigUint64(o + 24, true),
      });
    }
    if (this.memTable !== undefined && !this.memoryChanged(regs)) {
      this.ev(configEvent('INFO', 'memory regions not changed', { kind: 'memory-unchanged' }));
      this.closeAll(c);
      return OK;
    }
    if (this.memTable !== undefined) {
      this.dropDeviceHalves('guest memory replaced');
      this.freeMemRegions();
    }
    if (hasFeature(this.features, F.ACCESS_PLATFORM)) for (let i = 0; i < this.nrVring; i++) this.vrings[i]!.iotlb.flush();

    const mapped: MappedRegion[] = [];
    const fail = (): Result => {
      for (const r of mapped) if (!r.fd.closed) r.fd.close();
      this.memTable = undefined;
      this.guestMem = undefined;
      this.noteDanglingRings();
      this.closeAll(c);
      return ERR;
    };
    for (let i = 0; i < nregions; i++) {
      const r = regs[i]!;
      const fd = this.take(c, i);
      mapped.push({ gpa: r.gpa, size: r.size, uaddr: r.uaddr, mmapOffset: r.off, fd });
      if (!this.mmapRegion(fd, r.size, r.off, i, r)) {
        this.ev(errorEvent('mmap-failed', `failed to mmap region ${i}`));
        return fail();
      }
    }
    let mem: GuestMemory | undefined;
    if (nregions > 0) {
      try {
        mem = new GuestMemory(
          mapped.map((r) => ({
            gpa: Number(r.gpa),
            size: Number(r.size),
            uva: Number(r.uaddr),
            buffer: (r.fd as MemFd).buffer,
            offset: Number(r.mmapOffset),
          })),
        );
      } catch (e) {
        if (!(e instanceof GuestMemoryError)) throw e;
        this.ev(modelEvent('unsupported-memory-table', `memory table refused: ${e.message}`));
        return fail();
      }
    }
    this.memTable = mapped;
    this.guestMem = mem;
    if (this.postcopyListening) return this.postcopyRegister(c);
    // Mapped rings point into the old mapping: translate them again.
    for (let i = 0; i < this.nrVring; i++) {
      const vq = this.vrings[i]!;
      if (vq.anyRingSet()) {
        vq.invalidate();
        this.translate(vq);
      }
    }
    this.updateDirtyLog();
    return OK;
  }

  /** `vhost_memory_changed`: count, GPA, size and user address (not the mmap offset). */
  private memoryChanged(regs: readonly { gpa: bigint; size: bigint; uaddr: bigint }[]): boolean {
    const old = this.memTable!;
    if (old.length !== regs.length) return true;
    return regs.some((r, i) => r.gpa !== old[i]!.gpa || r.size !== old[i]!.size || r.uaddr !== old[i]!.uaddr);
  }

  /** `vhost_user_mmap_region`, plus the model's refusal of mappings it cannot back. */
  private mmapRegion(fd: AnyFd, size: bigint, off: bigint, i: number, r: { gpa: bigint; uaddr: bigint }): boolean {
    // -size is computed in u64: a 0-size region always "overflows".
    if (off >= ((U64_MAX + 1n - size) & U64_MAX)) {
      this.ev(errorEvent('mmap-overflow', `mmap_offset (${hex64(off)}) and memory_size (${hex64(size)}) overflow`));
      return false;
    }
    if (!(fd instanceof MemFd)) {
      this.ev(modelEvent('not-a-memfd', `region ${i}: fd ${fd.fd} is a ${fd.kind}, not a memfd`));
      this.ev(errorEvent('mmap-failed', 'mmap failed (No such device).'));
      return false;
    }
    const mmapSize = ((size + off + MEMFD_BLKSIZE - 1n) / MEMFD_BLKSIZE) * MEMFD_BLKSIZE;
    if (size + off > BigInt(fd.size)) {
      this.ev(modelEvent('mapping-beyond-file', `region ${i}: ${hex64(size)} bytes at offset ${hex64(off)} run past the ${hex64(fd.size)}-byte memfd`));
      return false;
    }
    const host = HOST_MAP_BASE + BigInt(i) * 0x10000000000n;
    this.ev(
      configEvent(
        'INFO',
        `guest memory region size: ${hex64(size)}`,
        { kind: 'memory-region', size, guestPhysAddr: r.gpa, guestVirtAddr: r.uaddr, mmapSize, mmapOffset: off },
        [
          `\t guest physical addr: ${hex64(r.gpa)}`,
          `\t guest virtual  addr: ${hex64(r.uaddr)}`,
          `\t host  virtual  addr: ${hex64(host + off)}`,
          `\t mmap addr : ${hex64(host)}`,
          `\t mmap size : ${hex64(mmapSize)}`,
          `\t mmap align: ${hex64(MEMFD_BLKSIZE)}`,
          `\t mmap off  : ${hex64(off)}`,
        ],
      ),
    );
    return true;
  }

  /**
   * `vhost_user_postcopy_register` with postcopy listening: the table goes back with the
   * back-end's addresses, then the handler blocks reading the front-end's ack.
   */
  private postcopyRegister(c: Ctx): Result {
    const regions = this.memTable!.map((r, i) => ({
      guestPhysAddr: r.gpa,
      memorySize: r.size,
      userspaceAddr: HOST_MAP_BASE + BigInt(i) * 0x10000000000n + r.mmapOffset,
      mmapOffset: r.mmapOffset,
    }));
    this.postcopyAck = { ctx: c };
    c.needReply = false;
    return { type: 'reply', payload: { kind: 'memoryTable', regions } };
  }

  /** The message read as the postcopy ack; registration then fails (no userfaultfd). */
  private finishPostcopyAck(ack: Ctx, replies: Message<AnyFd>[]): boolean {
    const orig = this.postcopyAck!.ctx;
    this.postcopyAck = undefined;
    const origName = 'VHOST_USER_SET_MEM_TABLE';
    const ackName = HANDLERS[ack.request]?.name ?? '(null)';
    if (ack.fds.length !== 0) {
      this.ev(errorEvent('expect-fds', `expect 0 FDs for request ${ackName}, received ${ack.fds.length}`));
    } else if (ack.request !== 5) {
      this.ev(errorEvent('postcopy-ack', `bad qemu ack on postcopy set-mem-table (${ack.request})`));
    } else {
      const r = this.memTable?.[0];
      const start = r ? HOST_MAP_BASE : 0n;
      const end = r ? start + r.size + r.mmapOffset - 1n : 0n;
      this.ev(errorEvent('userfaultfd', `failed to register ufd for region ${start.toString(16)} - ${end.toString(16)} (ufd = -1) Bad file descriptor`));
    }
    this.closeAll(ack);
    this.dropDeviceHalves('guest memory unmapped');
    this.freeMemRegions();
    this.ev(errorEvent('processing-failed', `processing ${origName} failed.`));
    return this.finish(orig, ERR, replies);
  }

  /** @internal */ h_setLogBase(c: Ctx): Result {
    if (!this.validateFds(c, 1)) return ERR;
    if (c.payload.length !== 16) {
      this.ev(errorEvent('invalid-log-size', `invalid log base msg size: ${c.payload.length} != 16`));
      this.closeAll(c);
      return ERR;
    }
    const size = c.dv.getBigUint64(0, true);
    const off = c.dv.getBigUint64(8, true);
    if (off >= ((U64_MAX + 1n - size) & U64_MAX)) {
      this.ev(errorEvent('log-overflow', `log offset ${hex64(off)} and log size ${hex64(size)} overflow`));
      this.closeAll(c);
      return ERR;
    }
    this.ev(configEvent('INFO', `log mmap size: ${BigInt.asIntN(64, size)}, offset: ${BigInt.asIntN(64, off)}`, { kind: 'log-base', size, offset: off }));
    const fd = this.take(c, 0);
    // 22.11.0 maps size+off from 0 (hugepage workaround); 22.11.7 maps size at off, which mmap refuses unless page aligned.
    const atOffset = this.profile.options.patch >= 7;
    let ok = fd instanceof MemFd && size > 0n;
    if (ok && atOffset && off % 4096n !== 0n) ok = false;
    if (ok && size + off > BigInt((fd as MemFd).size)) {
      this.ev(modelEvent('mapping-beyond-file', `log of ${size} bytes at ${off} runs past the ${(fd as MemFd).size}-byte memfd`));
      ok = false;
    }
    let buffer: ArrayBufferLike | undefined;
    if (ok) buffer = (fd as MemFd).buffer;
    fd.close();
    if (!ok || buffer === undefined) {
      this.ev(errorEvent('log-mmap-failed', 'mmap log base failed!'));
      return ERR;
    }
    this.log = { buffer, dirty: new DirtyLog(buffer, Number(off), Number(size)), size, offset: off };
    this.updateDirtyLog();
    return { type: 'reply' }; // size 0: QEMU expects no payload
  }

  /** @internal */ h_setLogFd(c: Ctx): Result {
    if (!this.validateFds(c, 1)) return ERR;
    this.closeAll(c);
    this.ev(configEvent(this.profile.options.patch >= 2 ? 'DEBUG' : 'INFO', 'not implemented.', { kind: 'not-implemented', request: 'SET_LOG_FD' }));
    return OK;
  }

  /** @internal */ h_setVringNum(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const idx = c.dv.getUint32(0, true);
    const num = c.dv.getUint32(4, true);
    const vq = this.vrings[idx]!;
    if (num > 32768) {
      this.ev(errorEvent('invalid-vring-size', `invalid virtqueue size ${num}`));
      return ERR;
    }
    vq.size = num;
    if (!this.isPacked && (num & (num - 1)) !== 0) {
      this.ev(errorEvent('invalid-vring-size', `invalid virtqueue size ${num}`));
      return ERR;
    }
    return OK;
  }

  /** @internal */ h_setVringAddr(c: Ctx): Result {
    if (this.memTable === undefined) return ERR;
    if (!this.need(c, 40)) return ERR;
    const idx = c.dv.getUint32(0, true);
    const vq = this.vrings[idx]!;
    const accessOk = vq.accessOk;
    vq.ringAddrs = {
      flags: c.dv.getUint32(4, true),
      desc: c.dv.getBigUint64(8, true),
      used: c.dv.getBigUint64(16, true),
      avail: c.dv.getBigUint64(24, true),
      log: c.dv.getBigUint64(32, true),
    };
    vq.invalidate();
    // Addresses are interpreted only for a started ring: enabled under PROTOCOL_FEATURES, or already mapped.
    if ((vq.enabled && hasFeature(this.features, F.PROTOCOL_FEATURES)) || accessOk) this.translate(vq);
    return OK;
  }

  /** @internal */ h_setVringBase(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const idx = c.dv.getUint32(0, true);
    const num = c.dv.getUint32(4, true);
    const vq = this.vrings[idx]!;
    vq.syncFromDevice();
    if (this.profile.options.ignoreSetVringBase === true || this.keptVrings.has(idx)) {
      // Broken on purpose: the ring stays where this record had it.
    } else if (this.isPacked) {
      // Bits 0-15 only; the used half is set equal to the avail half (fact sheet §5.6).
      const s = dpdkSetPackedBase(num);
      vq.lastAvailIdx = s.lastAvailIdx!;
      vq.availWrap = s.availWrap!;
      vq.lastUsedIdx = s.lastUsedIdx!;
      vq.usedWrap = s.usedWrap!;
    } else {
      vq.lastUsedIdx = num & 0xffff;
      vq.lastAvailIdx = num & 0xffff;
    }
    vq.pushToDevice(this.events);
    this.ev(
      configEvent('INFO', `vring base idx:${idx} last_used_idx:${vq.lastUsedIdx} last_avail_idx:${vq.lastAvailIdx}.`, {
        kind: 'set-vring-base',
        index: idx,
        lastUsedIdx: vq.lastUsedIdx,
        lastAvailIdx: vq.lastAvailIdx,
      }),
    );
    return OK;
  }

  /** @internal */ h_getVringBase(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const idx = c.dv.getUint32(0, true);
    const vq = this.vrings[idx]!;
    // The application stops polling before the ring is torn down.
    this.destroyNotify();
    this.readyFlag = false;
    vq.syncFromDevice();
    const num = this.isPacked ? dpdkGetPackedBase({ lastAvailIdx: vq.lastAvailIdx, availWrap: vq.availWrap }) : vq.lastAvailIdx & 0xffff;
    this.ev(configEvent('INFO', `vring base idx:${idx} file:${num}`, { kind: 'get-vring-base', index: idx, num }));
    closeSlot(vq.kick);
    vq.kick = 'uninit';
    closeSlot(vq.call);
    vq.call = 'uninit';
    vq.signalledUsedValid = false;
    vq.iotlb.flush();
    vq.invalidate();
    if (this.profile.options.patch >= 8) vq.ringAddrs = { ...ZERO_RING_ADDRS };
    return { type: 'reply', payload: { kind: 'vringState', index: idx, num } };
  }

  private vringFile(c: Ctx): { idx: number; noFd: boolean } | undefined {
    if (!this.need(c, 8)) {
      this.closeAll(c);
      return undefined;
    }
    return { idx: c.payload[0]!, noFd: (c.payload[1]! & 1) !== 0 };
  }

  /** @internal */ h_setVringKick(c: Ctx): Result {
    const f = this.vringFile(c);
    if (f === undefined) return ERR;
    if (!this.validateFds(c, f.noFd ? 0 : 1)) return ERR;
    const slot: FdSlot = f.noFd ? 'nofd' : this.take(c, 0);
    this.ev(configEvent('INFO', `vring kick idx:${f.idx} file:${fdNumber(slot)}`, { kind: 'vring-kick', index: f.idx, fd: fdNumber(slot) }));
    const vq = this.vrings[f.idx]!;
    // Ring addresses are interpreted only once the ring is started.
    this.translate(vq);
    if (!hasFeature(this.features, F.PROTOCOL_FEATURES)) vq.enabled = true;
    this.unready(vq);
    closeSlot(vq.kick);
    vq.kick = slot;
    this.checkInflights(vq);
    return OK;
  }

  /** `vhost_check_queue_inflights_split/packed`. */
  private checkInflights(vq: Vring): void {
    if (!hasProtocolFeature(this.protocolFeatures, PF.INFLIGHT_SHMFD) || vq.inflight === undefined) return;
    if (vq.resubmit !== undefined && vq.inflight.version !== 0) return;
    try {
      if (vq.inflight instanceof InflightSplitView) {
        if (vq.inflight.version !== 0 && vq.mapped.used === undefined) {
          // DPDK reads used->idx through a NULL pointer here.
          this.ev(modelEvent('inflight-region-outside-mapping', `vring ${vq.index}: inflight check on a ring whose used ring is not mapped`));
          return;
        }
        const usedIdx = vq.inflight.version === 0 ? 0 : this.guestMem!.readU16(vq.mapped.used! + 2);
        const r = checkInflightsSplit(vq.inflight, usedIdx);
        if (r.clipped) this.ev(modelEvent('inflight-region-outside-mapping', `vring ${vq.index}: desc_num ${vq.inflight.descNum} runs past the inflight mapping`));
        if (r.advanceAvail > 0) {
          vq.syncFromDevice();
          vq.lastAvailIdx = (vq.lastAvailIdx + r.advanceAvail) & 0xffff;
          vq.pushToDevice(this.events);
        }
        if (r.resubmit.length > 0) {
          vq.resubmit = r;
          vq.globalCounter = r.globalCounter;
        } else vq.globalCounter = 0n;
      } else {
        const r = checkInflightsPacked(vq.inflight);
        if (r.clipped) this.ev(modelEvent('inflight-region-outside-mapping', `vring ${vq.index}: desc_num ${vq.inflight.descNum} runs past the inflight mapping`));
        if (r.resubmit.length > 0) {
          vq.resubmit = r;
          vq.globalCounter = r.globalCounter;
        } else vq.globalCounter = 0n;
      }
    } catch (e) {
      if (!(e instanceof RangeError) && !(e instanceof GuestMemoryError)) throw e;
      this.ev(modelEvent('inflight-region-outside-mapping', `vring ${vq.index}: ${e.message}`));
    }
  }

  /** @internal */ h_setVringCall(c: Ctx): Result {
    const f = this.vringFile(c);
    if (f === undefined) return ERR;
    if (!this.validateFds(c, f.noFd ? 0 : 1)) return ERR;
    const slot: FdSlot = f.noFd ? 'nofd' : this.take(c, 0);
    this.ev(configEvent('INFO', `vring call idx:${f.idx} file:${fdNumber(slot)}`, { kind: 'vring-call', index: f.idx, fd: fdNumber(slot) }));
    const vq = this.vrings[f.idx]!;
    this.unready(vq);
    closeSlot(vq.call);
    vq.call = slot;
    return OK;
  }

  /** @internal */ h_setVringErr(c: Ctx): Result {
    const f = this.vringFile(c);
    if (f === undefined) return ERR;
    if (!this.validateFds(c, f.noFd ? 0 : 1)) return ERR;
    this.closeAll(c);
    this.ev(configEvent(this.profile.options.patch >= 2 ? 'DEBUG' : 'INFO', 'not implemented', { kind: 'not-implemented', request: 'SET_VRING_ERR' }));
    return OK;
  }

  /** @internal */ h_getProtocolFeatures(): Result {
    return { type: 'reply', payload: { kind: 'protocolFeatures', features: this.profile.protocolFeatures } };
  }

  /** @internal */ h_setProtocolFeatures(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const pf = c.dv.getBigUint64(0, true);
    if ((pf & ~this.profile.protocolFeatures) !== 0n) {
      this.ev(errorEvent('invalid-protocol-features', 'received invalid protocol features.'));
      return ERR;
    }
    this.protocolFeatures = pf;
    this.ev(configEvent('INFO', `negotiated Vhost-user protocol features: ${hex64(pf)}`, { kind: 'protocol-features', value: pf }));
    return OK;
  }

  /** @internal */ h_getQueueNum(): Result {
    return { type: 'reply', payload: { kind: 'u64', value: BigInt(this.profile.queueNum) } };
  }

  /** @internal */ h_setVringEnable(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const idx = c.dv.getUint32(0, true);
    const enable = c.dv.getUint32(4, true) !== 0;
    this.ev(configEvent('INFO', `set queue enable: ${enable ? 1 : 0} to qp idx: ${idx}`, { kind: 'enable', index: idx, enable }));
    this.vrings[idx]!.enabled = enable;
    return OK;
  }

  /** @internal */ h_sendRarp(c: Ctx): Result {
    if (!this.need(c, 6)) return ERR;
    const mac = Array.from(c.payload.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
    this.ev(configEvent('DEBUG', `MAC: ${mac.toUpperCase()}`, { kind: 'mac', mac }));
    this.mac = mac;
    this.rarpPending = true;
    return OK;
  }

  /** @internal */ h_netSetMtu(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const mtu = c.dv.getBigUint64(0, true);
    if (mtu < 68n || mtu > 65535n) {
      this.ev(errorEvent('invalid-mtu', `invalid MTU size (${mtu})`));
      return ERR;
    }
    this.mtu = Number(mtu);
    return OK;
  }

  /** @internal */ h_setSlaveReqFd(c: Ctx): Result {
    if (!this.validateFds(c, 1)) return ERR;
    if (this.slaveReqFd !== undefined && !this.slaveReqFd.closed) this.slaveReqFd.close();
    this.slaveReqFd = this.take(c, 0);
    return OK;
  }

  /** @internal */ h_iotlbMsg(c: Ctx): Result {
    if (!this.need(c, 26)) return ERR;
    const iova = c.dv.getBigUint64(0, true);
    const size = c.dv.getBigUint64(8, true);
    const uaddr = c.dv.getBigUint64(16, true);
    const perm = c.payload[24]!;
    const type = c.payload[25]!;
    switch (type) {
      case IOTLB_UPDATE: {
        // qva_to_vva: the start must be mapped; the entry is cut at the region's end.
        const t = size === 0n ? undefined : qvaToGpa(this.guestMem, uaddr, Number(size > BigInt(Number.MAX_SAFE_INTEGER) ? BigInt(Number.MAX_SAFE_INTEGER) : size));
        if (t === undefined) return ERR;
        const len = BigInt(t.len);
        for (let i = 0; i < this.nrVring; i++) {
          const vq = this.vrings[i]!;
          vq.iotlb.insert({ iova, uaddr, size: len, perm });
          if (this.isVringIotlb(vq, iova, size)) this.translate(vq);
        }
        return OK;
      }
      case IOTLB_INVALIDATE:
        for (let i = 0; i < this.nrVring; i++) {
          const vq = this.vrings[i]!;
          vq.iotlb.remove(iova, size);
          if (this.isVringIotlb(vq, iova, size)) vq.invalidate();
        }
        return OK;
      default:
        this.ev(errorEvent('invalid-iotlb-type', `invalid IOTLB message type (${type})`));
        return ERR;
    }
  }

  /** `is_vring_iotlb_split/packed`: does [iova, iova+size) touch one of the ring's parts? */
  private isVringIotlb(vq: Vring, iova: bigint, size: bigint): boolean {
    const start = iova;
    const end = (iova + size) & U64_MAX;
    const q = BigInt(vq.size);
    const ra = vq.ringAddrs;
    const hit = (a: bigint, len: bigint) => a < end && ((a + len) & U64_MAX) > start;
    const packed = this.isPacked;
    if (hit(ra.desc, 16n * q)) return true;
    if (hit(ra.avail, packed ? 4n : 4n + 2n * q)) return true;
    if (hit(ra.used, packed ? 4n : 4n + 8n * q)) return true;
    if ((ra.flags & 1) !== 0 && hit(ra.log, 8n)) return true;
    return false;
  }

  /** @internal */ h_getConfig(): Result {
    this.ev(errorEvent('not-vdpa', 'is not vDPA device!'));
    return ERR;
  }

  /** @internal */ h_setConfig(c: Ctx): Result {
    if (c.payload.length >= 8 && c.dv.getUint32(4, true) > 256) {
      this.ev(errorEvent('config-too-large', `vhost_user_config size: ${c.dv.getUint32(4, true)}, should not be larger than 256`));
      return ERR;
    }
    this.ev(errorEvent('not-vdpa', 'is not vDPA device!'));
    return ERR;
  }

  /** @internal */ h_postcopyAdvise(): Result {
    // Modelled without userfaultfd: the syscall fails.
    this.ev(errorEvent('userfaultfd', 'userfaultfd not available: Function not implemented'));
    return ERR;
  }

  /** @internal */ h_postcopyListen(): Result {
    if (this.memTable !== undefined && this.memTable.length > 0) {
      this.ev(errorEvent('postcopy-listen-regions', 'regions already registered at postcopy-listen'));
      return ERR;
    }
    this.postcopyListening = true;
    return OK;
  }

  /** @internal */ h_postcopyEnd(): Result {
    this.postcopyListening = false;
    return { type: 'reply', payload: { kind: 'ack', value: 0n } };
  }

  /** @internal */ h_getInflightFd(c: Ctx): Result {
    if (c.payload.length !== 24) {
      this.ev(errorEvent('invalid-inflight-size', `invalid get_inflight_fd message size is ${c.payload.length}`));
      return ERR;
    }
    const numQueues = c.dv.getUint16(16, true);
    const queueSize = c.dv.getUint16(18, true);
    this.ev(configEvent('INFO', `get_inflight_fd num_queues: ${numQueues}`, { kind: 'inflight', field: 'num_queues', value: numQueues }));
    this.ev(configEvent('INFO', `get_inflight_fd queue_size: ${queueSize}`, { kind: 'inflight', field: 'queue_size', value: queueSize }));
    const packed = this.isPacked;
    const per = inflightSizePerQueue(queueSize, packed);
    const size = numQueues * per;
    const limit = this.env.maxInflightBytes ?? 64 * 1024 * 1024;
    if (size === 0 || size > limit) {
      // mmap of 0 bytes fails with EINVAL; beyond the limit the model declines to allocate.
      if (size > limit) this.ev(modelEvent('inflight-too-large', `inflight area of ${size} bytes above the model's ${limit}-byte limit`));
      this.ev(errorEvent('inflight-alloc-failed', size === 0 ? 'failed to mmap inflight buffer' : 'failed to alloc inflight buffer'));
      this.ev(errorEvent('inflight-alloc-failed', 'failed to alloc vhost inflight area'));
      return ERR;
    }
    const fd = this.env.memfd('vhost-inflight', size);
    initInflightRegion(fd.buffer, numQueues, queueSize, packed);
    if (this.inflightInfo !== undefined && !this.inflightInfo.fd.closed) this.inflightInfo.fd.close();
    this.inflightInfo = { fd, buffer: fd.buffer, offset: 0, size };
    this.ev(configEvent('INFO', `send inflight mmap_size: ${size}`, { kind: 'inflight', field: 'mmap_size', value: size }));
    this.ev(configEvent('INFO', 'send inflight mmap_offset: 0', { kind: 'inflight', field: 'mmap_offset', value: 0 }));
    this.ev(configEvent('INFO', `send inflight fd: ${fd.fd}`, { kind: 'inflight', field: 'fd', value: fd.fd }));
    return { type: 'reply', payload: { kind: 'inflight', mmapSize: BigInt(size), mmapOffset: 0n, numQueues, queueSize }, fds: [fd] };
  }

  /** @internal */ h_setInflightFd(c: Ctx): Result {
    if (!this.validateFds(c, 1)) return ERR;
    if (c.payload.length !== 24) {
      // DPDK returns here without closing the fd (a leak); the model closes it.
      this.ev(errorEvent('invalid-inflight-size', `invalid set_inflight_fd message size is ${c.payload.length},fd is ${c.fds[0]!.fd}`));
      this.closeAll(c);
      return ERR;
    }
    const mmapSize = c.dv.getBigUint64(0, true);
    const mmapOffset = c.dv.getBigUint64(8, true);
    const numQueues = c.dv.getUint16(16, true);
    const queueSize = c.dv.getUint16(18, true);
    const packed = this.isPacked;
    const per = inflightSizePerQueue(queueSize, packed);
    const fd = this.take(c, 0);
    const info = (field: string, text: string, value: bigint | number) => this.ev(configEvent('INFO', text, { kind: 'inflight', field, value }));
    info('mmap_size', `set_inflight_fd mmap_size: ${mmapSize}`, mmapSize);
    info('mmap_offset', `set_inflight_fd mmap_offset: ${mmapOffset}`, mmapOffset);
    info('num_queues', `set_inflight_fd num_queues: ${numQueues}`, numQueues);
    info('queue_size', `set_inflight_fd queue_size: ${queueSize}`, queueSize);
    info('fd', `set_inflight_fd fd: ${fd.fd}`, fd.fd);
    info('pervq_inflight_size', `set_inflight_fd pervq_inflight_size: ${per}`, per);
    // The old mapping goes before the new one is tried (DPDK leaves the vrings' pointers dangling on failure).
    if (this.inflightInfo !== undefined) {
      for (let i = 0; i < this.nrVring; i++) this.vrings[i]!.inflight = undefined;
    }
    let ok = fd instanceof MemFd && mmapSize > 0n && mmapOffset % 4096n === 0n;
    if (ok && mmapSize + mmapOffset > BigInt((fd as MemFd).size)) {
      this.ev(modelEvent('mapping-beyond-file', `inflight area of ${mmapSize} bytes at ${mmapOffset} runs past the ${(fd as MemFd).size}-byte memfd`));
      ok = false;
    }
    if (!ok) {
      fd.close();
      this.ev(errorEvent('inflight-mmap-failed', 'failed to mmap share memory.'));
      return ERR;
    }
    const memfd = fd as MemFd;
    if (this.inflightInfo !== undefined && !this.inflightInfo.fd.closed) this.inflightInfo.fd.close();
    const base = Number(mmapOffset);
    const size = Number(mmapSize);
    this.inflightInfo = { fd: memfd, buffer: memfd.buffer, offset: base, size };
    for (let i = 0; i < numQueues; i++) {
      const vq = this.vrings[i];
      if (vq === undefined) continue;
      if (this.profile.options.patch >= 6) this.cleanupInflight(vq);
      if ((i + 1) * per > size) {
        // DPDK writes desc_num past its mapping here.
        this.ev(modelEvent('inflight-region-outside-mapping', `vring ${i}: inflight area ${i * per}+${per} outside the ${size}-byte mapping`));
        continue;
      }
      const view = packed ? new InflightPackedView(memfd.buffer, base + i * per, per) : new InflightSplitView(memfd.buffer, base + i * per, per);
      view.descNum = queueSize;
      vq.inflight = view;
    }
    return OK;
  }

  /** @internal */ h_setStatus(c: Ctx): Result {
    if (!this.need(c, 8)) return ERR;
    const v = c.dv.getBigUint64(0, true);
    if (v > 0xffn) {
      this.ev(errorEvent('invalid-status', `invalid VHOST_USER_SET_STATUS payload ${hex64(v)}`));
      return ERR;
    }
    this.status = Number(v);
    if ((this.status & DeviceStatus.FEATURES_OK) !== 0 && this.featuresFailed) {
      this.ev(errorEvent('features-ok-failed', 'FEATURES_OK bit is set but feature negotiation failed'));
      // GET_STATUS then shows the driver that negotiation failed.
      this.status &= ~DeviceStatus.FEATURES_OK;
    }
    this.ev(configEvent('INFO', `new device status(0x${this.status.toString(16).padStart(8, '0')}):`, { kind: 'status', value: this.status }, statusLines(this.status)));
    return OK;
  }

  /** @internal */ h_getStatus(): Result {
    return { type: 'reply', payload: { kind: 'status', status: this.status } };
  }
}

function short(name: string): string {
  return name.replace(/^VHOST_USER_/, '');
}

type HandlerFn = (d: VhostUserDevice, c: Ctx) => Result;
const h = (name: string, acceptsFd: boolean, fn: HandlerFn): Handler => ({ name: `VHOST_USER_${name}`, acceptsFd, fn });

/**
 * DPDK 22.11's `vhost_message_handlers[]`, indexed by request (0 and the codes without an
 * entry below 41 have no handler: "external request", then "was not handled").
 */
const HANDLERS: (Handler | undefined)[] = (() => {
  const t: (Handler | undefined)[] = new Array(41).fill(undefined);
  t[1] = h('GET_FEATURES', false, (d) => d.h_getFeatures());
  t[2] = h('SET_FEATURES', false, (d, c) => d.h_setFeatures(c));
  t[3] = h('SET_OWNER', false, () => OK);
  t[4] = h('RESET_OWNER', false, (d) => d.h_resetOwner());
  t[5] = h('SET_MEM_TABLE', true, (d, c) => d.h_setMemTable(c));
  t[6] = h('SET_LOG_BASE', true, (d, c) => d.h_setLogBase(c));
  t[7] = h('SET_LOG_FD', true, (d, c) => d.h_setLogFd(c));
  t[8] = h('SET_VRING_NUM', false, (d, c) => d.h_setVringNum(c));
  t[9] = h('SET_VRING_ADDR', false, (d, c) => d.h_setVringAddr(c));
  t[10] = h('SET_VRING_BASE', false, (d, c) => d.h_setVringBase(c));
  t[11] = h('GET_VRING_BASE', false, (d, c) => d.h_getVringBase(c));
  t[12] = h('SET_VRING_KICK', true, (d, c) => d.h_setVringKick(c));
  t[13] = h('SET_VRING_CALL', true, (d, c) => d.h_setVringCall(c));
  t[14] = h('SET_VRING_ERR', true, (d, c) => d.h_setVringErr(c));
  t[15] = h('GET_PROTOCOL_FEATURES', false, (d) => d.h_getProtocolFeatures());
  t[16] = h('SET_PROTOCOL_FEATURES', false, (d, c) => d.h_setProtocolFeatures(c));
  t[17] = h('GET_QUEUE_NUM', false, (d) => d.h_getQueueNum());
  t[18] = h('SET_VRING_ENABLE', false, (d, c) => d.h_setVringEnable(c));
  t[19] = h('SEND_RARP', false, (d, c) => d.h_sendRarp(c));
  t[20] = h('NET_SET_MTU', false, (d, c) => d.h_netSetMtu(c));
  t[21] = h('SET_SLAVE_REQ_FD', true, (d, c) => d.h_setSlaveReqFd(c));
  t[22] = h('IOTLB_MSG', false, (d, c) => d.h_iotlbMsg(c));
  t[24] = h('GET_CONFIG', false, (d) => d.h_getConfig());
  t[25] = h('SET_CONFIG', false, (d, c) => d.h_setConfig(c));
  t[28] = h('POSTCOPY_ADVISE', false, (d) => d.h_postcopyAdvise());
  t[29] = h('POSTCOPY_LISTEN', false, (d) => d.h_postcopyListen());
  t[30] = h('POSTCOPY_END', false, (d) => d.h_postcopyEnd());
  t[31] = h('GET_INFLIGHT_FD', false, (d, c) => d.h_getInflightFd(c));
  t[32] = h('SET_INFLIGHT_FD', true, (d, c) => d.h_setInflightFd(c));
  t[39] = h('SET_STATUS', false, (d, c) => d.h_setStatus(c));
  t[40] = h('GET_STATUS', false, (d) => d.h_getStatus());
  return t;
})();

/**
 * Wire bytes of a message the back-end sends. Acks are a bare u64 whatever the request, and
 * DPDK acks requests the catalogue does not know or whose reply forms are also 8 bytes (an
 * ack to SET_DEVICE_STATE_FD reads like its result): those are encoded without the codec's
 * per-request check. Everything else is checked.
 */
export function encodeBackendMessage(msg: Message<AnyFd>, space: 'frontend' | 'backend' = 'frontend', maxFds = 8): EncodedMessage<AnyFd> {
  const p = msg.payload;
  const isAck = p !== undefined && !(p instanceof Uint8Array) && p.kind === 'ack';
  return encode(msg, { space, maxFds, validate: !isAck && lookupRequest(msg.request, space) !== undefined });
}

/** The DPDK 22.11 name of a request with a handler (`VHOST_USER_GET_FEATURES`), else undefined. */
export function dpdkHandlerName(request: number): string | undefined {
  return request > 0 && request < HANDLERS.length ? HANDLERS[request]?.name : undefined;
}

/** Whether DPDK 22.11's handler for `request` accepts fds. */
export function dpdkHandlerAcceptsFd(request: number): boolean {
  return request > 0 && request < HANDLERS.length ? (HANDLERS[request]?.acceptsFd ?? false) : false;
}
