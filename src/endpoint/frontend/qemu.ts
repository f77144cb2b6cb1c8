/**
 * The `qemu-7.2` front-end: a QEMU 7.2 VM with a vhost-user netdev and a virtio-net-pci
 * device, on the simulated transport. The guest driver is a parameter.
 *
 * Chardev server (`-chardev socket,server=on`, the default): QEMU listens and does not start
 * the guest until a back-end has connected and the netdev initialised on it
 * (`net_vhost_user_init` loops until `started`). After a back-end crash the socket keeps
 * listening and any number of later back-ends are taken, one at a time.
 * Chardev client (`reconnect=N`): QEMU connects, retrying every N seconds while it fails, and
 * again N seconds after every disconnect.
 *
 * On a new connection the whole netdev init runs again; if the guest driver is up, the link
 * comes up and vhost starts with the saved acked features and the saved ring indices.
 */
import { BackendRequest, isReply, makeAck, wantsReply } from '../../protocol/index.ts';
import { TransportError, type AnyFd, type EventFd, type Listener, type SocketFd, type SocketNamespace } from '../../transport/index.ts';
import { DeviceStatus as S } from '../../virtio/index.ts';
import { MessageChannel } from '../message-channel.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { FrontendBase, type Connection } from './base.ts';
import { FrontendError } from './errors.ts';
import { Guest } from './guest.ts';
import {
  DEFAULT_QUEUE_SIZE,
  GUEST_DRIVERS,
  ringFeaturesOf,
  ringKindOf,
  type GuestDriverName,
  type GuestDriverProfile,
  type QemuDeviceConfig,
} from './profiles.ts';
import {
  attachRounds,
  chrClosed,
  encodeVqBase,
  guestDriverOk,
  guestReset,
  netdevInit,
  newQemuState,
  setStatus,
  setVringEnable,
  vmStop,
  type QemuBrokenMechanisms,
  type QemuEnv,
  type QemuInflight,
  type QemuState,
  type StatusOutcome,
} from './qemu-seq.ts';
import type { Sequence } from './handshake.ts';

/** QEMU 7.2's VhostUserPayload is 632 bytes; a larger reply size is refused. */
export const QEMU_7_2_MAX_REPLY_PAYLOAD = 632;

/** vhost_virtqueue_init's masked and error notifiers of vring `i`: the old pair is closed, a new one made. */
export function renewNotifiers<N extends { readonly masked: EventFd; readonly err: EventFd }>(notifiers: Map<number, N>, i: number, make: () => N): N {
  const old = notifiers.get(i);
  old?.masked.close();
  old?.err.close();
  const n = make();
  notifiers.set(i, n);
  return n;
}

export type QemuChardev = { readonly mode: 'server' } | { readonly mode: 'client'; readonly reconnect?: number };

export interface QemuFrontendOptions {
  readonly ns: SocketNamespace;
  readonly path: string;
  /** Default: server. */
  readonly chardev?: QemuChardev;
  readonly queuePairs?: number;
  readonly queueSize?: number;
  /** virtio-net-pci `packed=on`. */
  readonly packed?: boolean;
  /**
   * Use inflight I/O tracking as a vhost-user-blk-like device model does (GET_INFLIGHT_FD
   * once, SET_INFLIGHT_FD on every start). Default false: virtio-net never does.
   */
  readonly inflight?: boolean;
  /** Default 'virtio-net' (a Linux guest); 'ipxe' reproduces the reference runs; 'virtio-pmd' is DPDK in the guest. */
  readonly guestDriver?: GuestDriverName | GuestDriverProfile;
  /** Guest RAM (default 128 MiB, as in the reference runs). */
  readonly ramSize?: number;
  /** Host VA of guest RAM (default as observed). */
  readonly memBase?: number;
  readonly recorder?: TraceRecorder;
  /** Virtual seconds before the bottom half that handles a closed chardev runs (default 1 µs: the next main-loop turn). */
  readonly closedBhDelay?: number;
  /** Overrides the guest driver's boot delay. */
  readonly bootDelay?: number;
  readonly name?: string;
  /**
   * Reconnect mechanisms broken on purpose, for tests that show a verdict depends on them
   * (src/sim/profile-hooks.ts). Default: none.
   */
  readonly broken?: QemuBrokenMechanisms;
}

export type QemuPhase =
  | 'created'
  /** Waiting for the first back-end; the guest is held. */
  | 'waiting'
  /** The netdev is up; the guest is booting. */
  | 'booting'
  | 'running'
  /** vhost failed to start: QEMU fell back to userspace virtio. */
  | 'fallback'
  /** The guest driver is not (yet) using the device. */
  | 'idle'
  /** The back-end is gone; link down until a new one initialises. */
  | 'link-down'
  | 'closed';

export class QemuFrontend extends FrontendBase {
  readonly profile = 'qemu-7.2' as const;
  readonly cfg: QemuDeviceConfig;
  readonly guest: Guest;
  readonly state: QemuState;
  readonly driver: GuestDriverProfile;
  readonly chardev: QemuChardev;
  private phaseValue: QemuPhase = 'created';
  private listener: Listener | undefined;
  private guestBooted = false;
  /** Connections whose netdev init succeeded (s->watch set): only their close is handled. */
  private readonly watched = new WeakSet<Connection>();
  private readonly env: QemuEnv;
  private readonly notifiers = new Map<number, { masked: EventFd; err: EventFd }>();
  private backendChannel: MessageChannel | undefined;
  private readonly closedBhDelay: number;
  private readonly bootDelay: number;
  private readonly broken: QemuBrokenMechanisms;
  private reconnectTimer: { cancel(): boolean } | undefined;
  /** The last failure a sequence logged. */
  private lastSequenceError: FrontendError | undefined;

  constructor(opts: QemuFrontendOptions) {
    super({ ns: opts.ns, path: opts.path, recorder: opts.recorder, maxPayload: QEMU_7_2_MAX_REPLY_PAYLOAD });
    this.cfg = { queuePairs: opts.queuePairs ?? 1, queueSize: opts.queueSize ?? DEFAULT_QUEUE_SIZE, packed: opts.packed ?? false, ...(opts.inflight === true ? { inflight: true } : {}) };
    const d = opts.guestDriver ?? 'virtio-net';
    this.driver = typeof d === 'string' ? GUEST_DRIVERS[d] : d;
    this.chardev = opts.chardev ?? { mode: 'server' };
    this.closedBhDelay = opts.closedBhDelay ?? 1e-6;
    this.bootDelay = opts.bootDelay ?? this.driver.bootDelay;
    this.broken = opts.broken ?? {};
    this.state = newQemuState(this.cfg);
    this.guest = new Guest({
      ns: opts.ns,
      name: opts.name ?? 'qemu',
      layout: 'pc',
      ramSize: opts.ramSize ?? 128 * 1024 * 1024,
      ...(opts.memBase !== undefined ? { base: opts.memBase } : {}),
      queuePairs: this.cfg.queuePairs,
      queueSize: this.cfg.queueSize,
    });
    this.env = this.makeEnv();
  }

  get phase(): QemuPhase {
    return this.phaseValue;
  }

  /** The features acked to the current (or last) back-end, bit 30 included. */
  get ackedFeatures(): bigint | undefined {
    return this.state.devs?.[0]?.ackedFeatures;
  }

  /** The acked features saved when the last connection closed. */
  get savedAckedFeatures(): bigint {
    return this.state.savedAcked;
  }

  /** The inflight area kept since the first GET_INFLIGHT_FD (inflight on), across reconnects. */
  get inflightArea(): QemuInflight | undefined {
    return this.state.inflight;
  }

  get protocolFeatures(): bigint {
    return this.state.devs?.[0]?.protocolFeatures ?? 0n;
  }

  /** The base the next SET_VRING_BASE of vring `i` carries. */
  vringBase(i: number): number {
    return encodeVqBase(this.state.vqs[i], ringKindOf(this.state.guestAcked));
  }

  start(): void {
    if (this.phaseValue !== 'created') throw new Error('QemuFrontend.start: already started');
    this.phaseValue = 'waiting';
    if (this.chardev.mode === 'server') {
      // QEMU removes a stale socket file before binding.
      this.ns.unlink(this.path);
      const l = this.ns.listen(this.path, (fd) => this.onAccept(fd));
      if (l instanceof TransportError) {
        this.fatal(new FrontendError('socket', `Failed to bind socket to ${this.path}: ${l.message}`));
        return;
      }
      this.listener = l;
      this.log('info', `QEMU waiting for connection on: disconnected:unix:${this.path},server=on`);
      this.emit('listening');
    } else {
      this.emit('listening');
      this.connectAttempt();
    }
  }

  /**
   * Guest reboot: the driver resets the device (vhost stops: SET_STATUS 0, GET_VRING_BASE),
   * QEMU resets the queues, the device re-attaches its queue pair, and (unless `restart` is
   * false, as when iPXE exits and nothing drives the NIC afterwards) the driver starts again:
   * new rings, features, DRIVER_OK, vhost start with base 0.
   */
  rebootGuest(opts: { restart?: boolean } = {}): void {
    if (this.phaseValue === 'closed') return;
    this.runSeq('guest reset', () => this.afterStatusOf(guestReset(this.state, this.env)), () => {
      this.guest.reset();
      this.emit('guest-reset');
    });
    this.runSeq('attach after reset', () => attachRounds(this.state, this.driver.attachRounds.afterReset));
    if (opts.restart ?? true) this.runAction('schedule boot', () => this.scheduleBoot());
  }

  /**
   * The guest driver's VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (virtio_net_handle_mq →
   * virtio_net_set_queue_pairs): pairs below `n` are attached (SET_VRING_ENABLE 1), the others
   * detached (SET_VRING_ENABLE 0). Without it only pair 0 is ever enabled.
   */
  guestSetQueuePairs(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > this.cfg.queuePairs) throw new RangeError(`queue pairs ${n} outside 1..${this.cfg.queuePairs}`);
    const st = this.state;
    this.runSeq('virtio_net_set_queue_pairs', function* () {
      for (let p = 0; p < st.cfg.queuePairs; p++) yield* setVringEnable(st, p, p < n);
    });
  }

  /** QEMU quits: the VM stops (vhost stops), the socket closes and its file is removed. */
  quit(): void {
    if (this.phaseValue === 'closed') return;
    this.runSeq('vm stop', () => this.afterStatusOf(vmStop(this.state, this.env)), () => this.shutdown(true));
  }

  /** QEMU is killed: the socket closes, nothing is sent, the socket file stays. */
  kill(): void {
    this.shutdown(false);
  }

  dispose(): void {
    this.shutdown(false);
    for (const n of this.notifiers.values()) {
      n.masked.close();
      n.err.close();
    }
    this.notifiers.clear();
    const inf = this.state.inflight;
    if (inf !== undefined && !inf.fd.closed) inf.fd.close();
    this.guest.dispose();
  }

  private shutdown(unlink: boolean): void {
    if (this.phaseValue === 'closed') return;
    this.phaseValue = 'closed';
    this.reconnectTimer?.cancel();
    this.detach();
    this.dropBackendChannel();
    for (const fd of this.backlog.splice(0)) fd.close();
    this.listener?.close({ unlink });
    this.listener = undefined;
    this.emit('quit');
  }

  private fatal(e: FrontendError): void {
    this.log('error', e.message);
    this.emit('error', { error: e });
    this.shutdown(false);
  }

  // ---- connections ----------------------------------------------------------------------

  private connectAttempt(): void {
    this.reconnectTimer = undefined;
    if (this.phaseValue === 'closed' || this.conn !== undefined) return;
    this.ns.connect(this.path, (r) => {
      if (this.phaseValue === 'closed') {
        if (!(r instanceof TransportError)) r.close();
        return;
      }
      if (r instanceof TransportError) {
        const e = new FrontendError('socket', `Failed to connect to '${this.path}': ${r.message}`);
        this.log('error', e.message);
        const n = this.chardev.mode === 'client' ? this.chardev.reconnect ?? 0 : 0;
        if (n > 0) this.reconnectTimer = this.ns.scheduler.after(n, () => this.connectAttempt(), `${this.path} qemu reconnect`);
        else if (!this.guestBooted) this.fatal(e);
        else this.emit('error', { error: e });
        return;
      }
      this.onConnection(r);
    });
  }

  protected get closed(): boolean {
    return this.phaseValue === 'closed';
  }

  /** The chardev takes one client at a time; others wait unaccepted. */
  protected override maybeAccept(): void {
    super.maybeAccept(0, 'qemu accept');
  }

  protected acceptConnection(fd: SocketFd): void {
    this.onConnection(fd);
  }

  /** CHR_EVENT_OPENED: the netdev init on the new connection. */
  private onConnection(fd: SocketFd): void {
    const conn = this.attach(fd);
    // A refused reply ("Failed to read msg header…") is treated as a disconnect once the
    // running sequence has finished failing.
    let poisoned = false;
    conn.conv.onReplyError((e) => {
      if (poisoned) return;
      poisoned = true;
      this.log('error', e.upstream ?? e.message);
      this.emit('error', { error: e, detail: 'treated as a disconnect' });
      this.runAction('disconnect after protocol error', () => {
        if (this.conn !== conn || conn.conv.peerClosed) return;
        conn.conv.close();
        this.onPeerClosed(conn, { midMessage: false });
      });
    });
    this.runSeq('vhost_user_start', () => netdevInit(this.state, this.env), (err) => {
      if (err !== undefined) {
        this.emit(err.code === 'features-lacking' ? 'refused' : 'error', { error: err, detail: 'failed to init vhost_net for queue 0' });
        // qemu_chr_fe_disconnect: the connection goes, the chardev waits for (or retries) the next.
        this.runAction('qemu_chr_fe_disconnect', () => this.dropConnection(conn));
        return;
      }
      this.watched.add(conn);
      if (!this.guestBooted) {
        this.guestBooted = true;
        this.phaseValue = 'booting';
        this.scheduleBoot();
        return;
      }
      this.runSeq('set_link on', () => setStatus(this.state, this.env), (r) => {
        this.afterStatus(r);
        if (r === 'started') this.emit('reconnected', { features: this.ackedFeatures });
      });
    });
  }

  protected onPeerClosed(conn: Connection, info: { midMessage: boolean }): void {
    this.log('info', info.midMessage ? 'vhost-user connection closed inside a message' : 'vhost-user connection closed');
    if (!this.watched.has(conn)) {
      // Closed before its init completed: nothing was started on it.
      this.runAction('closed before init', () => this.dropConnection(conn));
      return;
    }
    this.emit('backend-lost', { detail: info.midMessage ? 'closed inside a message' : 'closed' });
    this.ns.scheduler.after(
      this.closedBhDelay,
      () => {
        if (this.phaseValue === 'closed') return;
        this.runSeq('chr_closed_bh', () => this.closedBh(), () => {
          this.phaseValue = 'link-down';
          this.dropConnection(conn);
        });
      },
      `${this.path} chr_closed_bh`,
    );
  }

  /** chr_closed_bh: keep the acked features, set the link down (which stops vhost on the dead socket). */
  private *closedBh(): Sequence<void> {
    const r = yield* chrClosed(this.state, this.env);
    if (r === 'stopped') {
      const bases = this.state.vqs.map((_, i) => `vring ${i} base ${this.vringBase(i)}`).join(', ');
      this.log('info', `rings restored after the lost back-end: ${bases}`);
    }
  }

  private dropConnection(conn: Connection): void {
    if (this.conn !== conn) return;
    this.detach();
    this.dropBackendChannel();
    if (this.phaseValue === 'closed') return;
    if (this.chardev.mode === 'server') {
      this.maybeAccept();
    } else if ((this.chardev.reconnect ?? 0) > 0) {
      this.reconnectTimer = this.ns.scheduler.after(this.chardev.reconnect!, () => this.connectAttempt(), `${this.path} qemu reconnect`);
    }
  }

  // ---- guest --------------------------------------------------------------------------

  private scheduleBoot(): void {
    this.ns.scheduler.after(this.bootDelay, () => this.bootGuest(), `${this.path} guest driver start`);
  }

  /** The guest's firmware and driver: attach rounds, feature negotiation, rings, DRIVER_OK. */
  private bootGuest(): void {
    if (this.phaseValue === 'closed') return;
    this.runSeq('guest attach rounds', () => attachRounds(this.state, this.driver.attachRounds.boot));
    this.runSeq('guest DRIVER_OK', () =>
      this.afterStatusOf(
        guestDriverOk(this.state, this.env, this.driver.wants, (acked) => {
          this.guest.features = acked;
          this.guest.setupRings(ringKindOf(acked), ringFeaturesOf(acked));
          this.guest.status = S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK;
        }),
      ),
    );
  }

  /** Runs a status-changing sequence, then updates the phase from its outcome. */
  private *afterStatusOf(seq: Sequence<StatusOutcome>): Sequence<void> {
    this.afterStatus(yield* seq);
  }

  private afterStatus(r: StatusOutcome): void {
    if (this.phaseValue === 'closed') return;
    if (r === 'started') this.phaseValue = 'running';
    else if (r === 'failed') {
      this.phaseValue = 'fallback';
      this.emit('error', { error: this.lastSequenceError ?? new FrontendError('transport', 'unable to start vhost net'), detail: 'unable to start vhost net: falling back on userspace virtio' });
    } else if (!this.state.driverOk) this.phaseValue = 'idle';
    else if (!this.state.linkUp) this.phaseValue = 'link-down';
  }

  // ---- back-end channel -----------------------------------------------------------------

  private openBackendChannel(): [AnyFd, AnyFd] {
    this.dropBackendChannel();
    const [mine, theirs] = this.ns.socketpair();
    const mc = new MessageChannel(mine, { role: 'frontend', space: 'backend', maxPayload: QEMU_7_2_MAX_REPLY_PAYLOAD, recorder: this.recorder });
    mc.on({
      // backend_read: handle the request; with NEED_REPLY answer u64 = !!ret.
      message: (m) => {
        for (const fd of m.fds) fd.close();
        if (isReply(m.header.flags) || !wantsReply(m.header.flags)) return;
        const handled = m.error === undefined && m.header.request === BackendRequest.SLAVE_VRING_HOST_NOTIFIER_MSG;
        mc.send(makeAck({ request: m.header.request, flags: m.header.flags }, handled), { space: 'backend', validate: false });
      },
      fatal: () => mc.close(),
      // backend_read fails on the EOF and close_backend_channel drops it; this is the line
      // QEMU prints when a back-end dies (qemu4.log).
      closed: () => {
        this.log('error', 'Unexpected end-of-file before all data were read');
        mc.close();
      },
    });
    this.backendChannel = mc;
    return [mine, theirs];
  }

  private dropBackendChannel(): void {
    this.backendChannel?.close();
    this.backendChannel = undefined;
  }

  private makeEnv(): QemuEnv {
    const g = this.guest;
    return {
      ringKind: () => ringKindOf(this.state.guestAcked),
      initNotifiers: (i) => renewNotifiers(this.notifiers, i, () => ({ masked: this.ns.eventfd(`${g.name}:masked${i}`), err: this.ns.eventfd(`${g.name}:err${i}`) })),
      kickFd: (i) => g.vring(i).kick,
      callFd: (i) => g.vring(i).call,
      memoryTable: () => ({ regions: g.memoryRegions, fds: g.memoryRegionFds }),
      vringAddr: (i) => g.vringAddr(i),
      usedIdx: (i) => g.usedIdx(i),
      broken: this.broken,
      packedDriverUsed: (i) => g.packedUsedPosition(i),
      backendChannel: () => this.openBackendChannel(),
      dropBackendChannel: () => this.dropBackendChannel(),
      log: (level, text, error) => {
        this.log(level, text);
        if (error !== undefined) this.lastSequenceError = error;
      },
      milestone: (kind, detail) => {
        if (kind === 'negotiated') this.emit('negotiated', { ...(detail !== undefined ? { detail } : {}) });
        else this.emit(kind, { features: this.ackedFeatures });
      },
    };
  }
}
