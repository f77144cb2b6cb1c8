/**
 * The `virtio-user-22.11` front-end: DPDK's net_virtio_user PMD on the simulated transport.
 *
 * Server mode (`server=1`, the default here): the PMD listens and blocks its probe until a
 * back-end connects ("waiting for client connection..."). The first back-end gets the probe
 * sequence; each later one, accepted once the previous one has gone, gets the server
 * reconnect sequence. Only one back-end is served at a time (listen backlog 1): a second
 * connection waits, unaccepted, until the current one closes.
 *
 * Client mode (`server=0`) connects once at probe; a lost back-end is not reconnected.
 */
import type { SocketFd, SocketNamespace, Listener } from '../../transport/index.ts';
import { TransportError } from '../../transport/index.ts';
import { formatFeatures } from '../../virtio/index.ts';
import type { TraceRecorder } from '../trace-recorder.ts';
import { FrontendBase, type Connection } from './base.ts';
import { FrontendError } from './errors.ts';
import { Guest } from './guest.ts';
import { VIRTIO_USER_DEFAULTS, ringFeaturesOf, ringKindOf, type VirtioUserConfig } from './profiles.ts';
import { close, handleMq, newVirtioUserState, probe, serverReconnect, type ProbeResult, type VirtioUserBrokenMechanisms, type VirtioUserEnv, type VirtioUserState } from './virtio-user-seq.ts';

/** virtio-user reads replies into `struct vhost_user_msg`, whose payload union is 264 bytes (the memory table). */
export const VIRTIO_USER_MAX_REPLY_PAYLOAD = 264;

export interface VirtioUserFrontendOptions extends Partial<VirtioUserConfig> {
  readonly ns: SocketNamespace;
  readonly path: string;
  /** `server=1` (default here; DPDK's own default is 0). */
  readonly server?: boolean;
  /** Guest memory size (default 64 MiB; the reference run had 1 GiB of `--no-huge` memory). */
  readonly ramSize?: number;
  /** GPA = VA of the memory (default 0x100c3e000, as in the reference capture). */
  readonly memBase?: number;
  readonly recorder?: TraceRecorder;
  /** The uninitialised `num` the first GET_VRING_BASE of a stop carries (default 0). */
  readonly staleVringNum?: number;
  /** Virtual seconds from a back-end's connect to the PMD taking it up (the LSC interrupt on the listen fd; default 0). */
  readonly acceptLatency?: number;
  /** Virtual seconds from the back-end closing to the PMD closing its fd (the 1 µs alarm of the disconnect handler). */
  readonly disconnectLatency?: number;
  readonly name?: string;
  /** Reconnect mechanisms broken on purpose, for tests (src/sim/profile-hooks.ts). Default: none. */
  readonly broken?: VirtioUserBrokenMechanisms;
}

export type VirtioUserPhase =
  | 'created'
  /** Listening, no back-end (or waiting for the next one). */
  | 'waiting'
  /** Running the probe or a reconnect. */
  | 'negotiating'
  /** DRIVER_OK reached on the current back-end. */
  | 'running'
  /** Connected, but the last sequence did not bring the device up. */
  | 'degraded'
  /** Client mode lost its back-end, or the socket could not be set up. */
  | 'disconnected'
  | 'closed';

export class VirtioUserFrontend extends FrontendBase {
  readonly profile = 'virtio-user-22.11' as const;
  readonly cfg: VirtioUserConfig;
  readonly guest: Guest;
  readonly state: VirtioUserState;
  readonly server: boolean;
  private phaseValue: VirtioUserPhase = 'created';
  private probed = false;
  private listener: Listener | undefined;
  private readonly env: VirtioUserEnv;
  private readonly acceptLatency: number;
  private readonly disconnectLatency: number;
  private readonly broken: VirtioUserBrokenMechanisms;
  /** A connection is being taken up (between its accept and the start of its sequence). */
  /** The last failure a sequence logged. */
  private lastSequenceError: FrontendError | undefined;

  constructor(opts: VirtioUserFrontendOptions) {
    super({ ns: opts.ns, path: opts.path, recorder: opts.recorder, maxPayload: VIRTIO_USER_MAX_REPLY_PAYLOAD });
    const { ns: _ns, path: _path, server, ramSize, memBase, recorder: _r, staleVringNum, acceptLatency, disconnectLatency, name, broken, ...cfg } = opts;
    // virtio_user_ethdev.c: more than one queue pair turns the control queue on unless `cq` is
    // given, and `cq=0` with several pairs fails the probe ("multi-q requires ctrl-q").
    const mq = (cfg.queues ?? VIRTIO_USER_DEFAULTS.queues) > 1;
    if (mq && cfg.cq === false) throw new RangeError('virtio-user: multi-q requires ctrl-q (queues > 1 with cq=0)');
    this.cfg = { ...VIRTIO_USER_DEFAULTS, ...(mq ? { cq: true } : {}), ...stripUndefined(cfg) };
    this.server = server ?? true;
    this.acceptLatency = acceptLatency ?? 0;
    this.disconnectLatency = disconnectLatency ?? 1e-6;
    this.broken = broken ?? {};
    this.state = newVirtioUserState(this.cfg, staleVringNum ?? 0);
    this.guest = new Guest({
      ns: opts.ns,
      name: name ?? 'virtio-user',
      layout: 'flat',
      ramSize: ramSize ?? 64 * 1024 * 1024,
      ...(memBase !== undefined ? { base: memBase } : {}),
      queuePairs: this.cfg.queues,
      queueSize: this.cfg.queueSize,
    });
    this.env = this.makeEnv();
  }

  get phase(): VirtioUserPhase {
    return this.phaseValue;
  }

  /** The value of the last SET_FEATURES. */
  get ackedFeatures(): bigint | undefined {
    return this.state.lastSetFeatures;
  }

  get protocolFeatures(): bigint {
    return this.state.protocolFeatures;
  }

  /** Sets up the socket: listen (server) or connect and probe (client). */
  start(): void {
    if (this.phaseValue !== 'created') throw new Error('VirtioUserFrontend.start: already started');
    if (this.server) {
      const l = this.ns.listen(this.path, (fd) => this.onAccept(fd));
      if (l instanceof TransportError) {
        this.fail(new FrontendError('socket', `failed to bind to ${this.path}: ${l.message}; remove it and try again`, undefined, 'virtio-user startup fails in server mode'));
        return;
      }
      this.listener = l;
      this.phaseValue = 'waiting';
      this.log('NOTICE', `(${this.path}) waiting for client connection...`);
      this.emit('listening');
    } else {
      this.phaseValue = 'waiting';
      this.emit('listening');
      this.ns.connect(this.path, (r) => {
        if (r instanceof TransportError) {
          this.fail(new FrontendError('socket', `connect error, ${r.message}`, undefined, `connect error, ${r.message}`));
          return;
        }
        this.takeUp(r);
      });
    }
  }

  /**
   * testpmd's `quit`: close the port (virtio_dev_close → reset: ENABLE 0 per pair,
   * GET_VRING_BASE per vring), then the PMD closes the socket and unlinks its path.
   */
  quit(): void {
    if (this.phaseValue === 'closed') return;
    this.runSeq('virtio_dev_close', () => close(this.state, this.env), () => {
      this.guest.status = this.state.status;
      this.shutdown(true);
    });
  }

  /**
   * The application starts the port with `n` queue pairs (testpmd `--rxq=n --txq=n`):
   * virtio_dev_start sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET on the control queue, which
   * virtio-user serves itself (virtio_user_handle_mq: SET_VRING_ENABLE per pair that changes).
   * Needs MQ negotiated; later server reconnects re-enable the same pairs.
   */
  guestSetQueuePairs(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > this.cfg.queues) throw new RangeError(`queue pairs ${n} outside 1..${this.cfg.queues}`);
    const st = this.state;
    const env = this.env;
    this.runSeq('virtio_user_handle_mq', () => handleMq(st, env, n));
  }

  /** The process dies: sockets close, nothing is sent, the socket file stays. */
  kill(): void {
    if (this.phaseValue === 'closed') return;
    this.shutdown(false);
  }

  /** Releases every fd (guest memory, eventfds, sockets). */
  dispose(): void {
    this.shutdown(false);
    this.guest.dispose();
  }

  private shutdown(unlink: boolean): void {
    if (this.phaseValue === 'closed') return;
    this.detach();
    for (const fd of this.backlog.splice(0)) fd.close();
    this.listener?.close({ unlink });
    this.listener = undefined;
    this.phaseValue = 'closed';
    this.emit('quit');
  }

  private fail(e: FrontendError): void {
    this.phaseValue = 'disconnected';
    this.log('ERR', e.message);
    this.emit('error', { error: e });
  }

  protected get closed(): boolean {
    return this.phaseValue === 'closed';
  }

  /** accept() runs only while no back-end is held (the listen fd is the interrupt source only then). */
  protected override maybeAccept(): void {
    super.maybeAccept(this.acceptLatency, 'virtio-user accept');
  }

  protected acceptConnection(fd: SocketFd): void {
    this.takeUp(fd);
  }

  private takeUp(fd: SocketFd): void {
    const conn = this.attach(fd);
    // Garbage that cannot be framed leaves no way to read on: drop the back-end, wait for the next.
    conn.conv.onFatal((e) => {
      this.emit('error', { error: e, detail: 'back-end stream unusable' });
      this.runAction('drop unframeable back-end', () => {
        if (this.conn === conn) this.dropConnection();
      });
    });
    this.phaseValue = 'negotiating';
    if (!this.probed) {
      this.runSeq('virtio_user_dev_init', () => probe(this.state, this.env), (r) => this.afterProbe(r));
    } else {
      this.runSeq('virtio_user_dev_server_reconnect', () => serverReconnect(this.state, this.env), (ok) => this.afterReconnect(ok));
    }
  }

  private afterProbe(r: ProbeResult): void {
    this.guest.status = this.state.status;
    if (!r.probed) {
      // The real PMD's probe fails and the port never exists. Modelled: report it, drop the
      // back-end, and probe again on the next one, so the model stays usable.
      this.emit('error', { error: r.error, detail: 'probe failed' });
      this.runAction('drop after failed probe', () => {
        Object.assign(this.state, newVirtioUserState(this.cfg, this.state.staleVringNum));
        this.dropConnection();
      });
      return;
    }
    this.probed = true;
    if (r.started) {
      this.phaseValue = 'running';
    } else {
      this.phaseValue = this.conn !== undefined ? 'degraded' : 'waiting';
      this.emit('error', { error: new FrontendError('transport', 'device not started on this back-end'), detail: 'start failed' });
    }
  }

  private afterReconnect(ok: boolean): void {
    this.guest.status = this.state.status;
    if (ok) {
      this.phaseValue = 'running';
      this.emit('reconnected', { features: this.state.lastSetFeatures });
    } else {
      // The connection stays until the back-end closes it; then the next one is accepted.
      this.phaseValue = this.conn !== undefined ? 'degraded' : 'waiting';
      this.emit('error', { error: this.lastSequenceError ?? new FrontendError('transport', 'reconnect failed'), detail: 'reconnect failed' });
    }
  }

  protected onPeerClosed(conn: Connection, info: { midMessage: boolean }): void {
    this.emit('backend-lost', { detail: info.midMessage ? 'closed inside a message' : 'vhost-user connection closed' });
    this.log('ERR', `virtio-user port is down`);
    // vhost_user_update_link_state sees EOF and arms virtio_user_dev_delayed_disconnect_handler.
    this.ns.scheduler.after(
      this.disconnectLatency,
      () => this.runAction('virtio_user_dev_delayed_disconnect_handler', () => {
        if (this.conn === conn) this.dropConnection();
      }),
      `${this.path} virtio-user disconnect`,
    );
  }

  /** vhost_user_server_disconnect: close the fd; in server mode the listen fd becomes the interrupt source again. */
  private dropConnection(): void {
    this.detach();
    if (this.phaseValue === 'closed') return;
    if (this.server) {
      this.phaseValue = 'waiting';
      this.maybeAccept();
    } else {
      this.phaseValue = 'disconnected';
    }
  }

  private makeEnv(): VirtioUserEnv {
    const g = this.guest;
    return {
      cfg: this.cfg,
      connected: () => this.conn !== undefined,
      callFd: (i) => g.vring(i).call,
      kickFd: (i) => g.vring(i).kick,
      memoryTable: () => ({ regions: g.memoryRegions, fds: g.memoryRegionFds }),
      vringAddr: (i) => g.vringAddr(i),
      allocQueues: (features) => {
        g.features = features;
        g.setupRings(ringKindOf(features), ringFeaturesOf(features));
      },
      broken: this.broken,
      resetPackedQueues: () => {
        let dropped = 0;
        for (let i = 0; i < g.vringCount; i++) dropped += g.resetRing(i);
        this.emit('rings-reset', { dropped, detail: 'Packets on the fly will be dropped when packed ring reconnecting.' });
      },
      log: (level, text, error) => {
        this.log(level, text);
        if (error !== undefined) this.lastSequenceError = error;
      },
      milestone: (kind) => {
        if (kind === 'negotiated') {
          const f = this.state.lastSetFeatures ?? 0n;
          this.emit('negotiated', { features: f, detail: `features 0x${f.toString(16)} (${formatFeatures(f)}), protocol features 0x${this.state.protocolFeatures.toString(16)}` });
        } else {
          this.emit(kind);
        }
      },
    };
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
