/**
 * The model front-end `virtio-user-22.11` with `server=1` on a real AF_UNIX socket, serving a
 * real back-end (DPDK vhost `client=1`) in real time.
 *
 * The control path is the sans-IO `virtioUserSeq` (probe on the first connection, the server
 * reconnect sequence on each later one), run over the accepted socket by a small
 * `SequenceIo`. Guest memory is one sealed memfd (`RealMemFd`), mapped once for the life of
 * the front-end; the rings live in it and, as in virtio-user, outlive connections (split rings
 * keep their indices, packed rings are reset by the reconnect sequence). Kick and call are
 * real eventfds. The sequences hand out model handles (`RealBackedEventFd/MemFd` from
 * `RealFdAdapters`), which go on the wire as the real fds they wrap.
 *
 * The guest data path (post TX frames, kick when the ring asks, reclaim; post RX buffers and
 * read what comes back) is driven by the caller on the Node event loop.
 */
import { MappedGuestMemory, type RealFdRegistry } from '../../../transport/real/index.ts';
import { runSequence } from '../../frontend/handshake.ts';
import { VIRTIO_USER_DEFAULTS, ringFeaturesOf, ringKindOf, type VirtioUserConfig } from '../../frontend/profiles.ts';
import { close as closeSeq, newVirtioUserState, probe, serverReconnect, type VirtioUserEnv, type VirtioUserState } from '../../frontend/virtio-user-seq.ts';
import { FrontendLink, type LinkConn } from './frontend-link.ts';
import { BUF_SIZE, ringStride } from './guest-port.ts';

export { BUF_SIZE };
export { SocketIo, type RealFrontendSession, type RealFrontendLogLine } from './socket-io.ts';

/** GPA = VA of the memory, as in the reference capture (virtio-user describes memsegs flat). */
const BASE = 0x100c3e000;

export interface RealModelFrontendOptions extends Partial<VirtioUserConfig> {
  readonly path: string;
  /** Guest memory bytes (default 4 MiB). */
  readonly ramSize?: number;
  readonly registry?: RealFdRegistry;
}

export class RealModelFrontend extends FrontendLink<LinkConn> {
  readonly cfg: VirtioUserConfig;
  readonly state: VirtioUserState;
  /** Buffers in flight dropped by packed-ring resets on reconnect. */
  droppedOnReset = 0;
  private readonly env: VirtioUserEnv;
  private probed = false;

  constructor(opts: RealModelFrontendOptions) {
    const { path, ramSize, registry, ...rest } = opts;
    const cfg: VirtioUserConfig = { ...VIRTIO_USER_DEFAULTS, ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) };
    if (cfg.queues !== 1) throw new RangeError('RealModelFrontend serves one queue pair');
    const size = ramSize ?? 4 << 20;
    const q = cfg.queueSize;
    // Every vring gets a page-rounded slot at the top of RAM (big enough for either ring kind).
    const stride = ringStride(q);
    if (2 * stride + 2 * q * BUF_SIZE > size) throw new RangeError(`${size} bytes of guest memory cannot hold the rings and ${2 * q} buffers`);
    super({
      path,
      registry,
      label: 'model front-end',
      memfdName: 'virtio-user-ram',
      ramSize: size,
      map: (memfd) => new MappedGuestMemory([{ gpa: BASE, uva: BASE, mapping: memfd.map(0, size, 'model front-end guest memory') }]),
      port: {
        queueSize: q,
        ringBase: [0, 1].map((i) => BASE + size - (i + 1) * stride),
        bufBase: BASE,
        // DPDK's virtio PMD polls: virtio_init_vring() calls virtqueue_disable_intr() on every
        // vring (drivers/net/virtio, 22.11), split VRING_AVAIL_F_NO_INTERRUPT / packed DISABLE.
        usedNotifications: false,
      },
    });
    this.cfg = cfg;
    this.state = newVirtioUserState(this.cfg, 0);
    this.env = this.makeEnv(size);
  }

  /** Listen: "waiting for client connection...". */
  protected listeningNote(): [string, string] {
    return ['NOTICE', `(${this.path}) waiting for client connection...`];
  }

  // ---- shutdown ----------------------------------------------------------------------------

  /** testpmd `quit` of virtio-user: the port's close sends the reset (ENABLE 0, GET_VRING_BASE) when a back-end is held. */
  protected farewell(done: () => void): boolean {
    const c = this.conn;
    if (!c?.open) return false;
    runSequence(closeSeq(this.state, this.env), c.io, done);
    return true;
  }

  protected dropAll(): void {
    if (this.conn?.open) this.dropConnection('closed-locally');
  }

  // ---- internals ---------------------------------------------------------------------------

  /** One back-end at a time: the next is taken up only once the current one is gone. */
  protected maybeAccept(): void {
    if (this.conn?.open || this.stopped) return;
    const c = this.connectNext((base) => base, {
      // Unframeable garbage: drop this back-end and wait for the next, as the in-process model does.
      fatal: (c, e) => {
        this.note('ERR', `back-end stream cannot be framed: ${e.message}`);
        setImmediate(() => {
          if (this.conn === c && c.open) this.dropConnection('closed-locally');
          this.maybeAccept();
        });
      },
      eof: () => this.note('ERR', 'virtio-user port is down'),
      closed: (c) => {
        // Let the fd go.
        if (this.conn === c && c.open) this.dropConnection('peer-closed');
        this.maybeAccept();
      },
    });
    if (c === undefined) return;
    const { session, io } = c;
    const finish = (ok: boolean): void => {
      session.outcome = ok ? 'started' : 'failed';
      session.running = ok && c.open;
    };
    if (!this.probed) {
      runSequence(probe(this.state, this.env), io, (r) => {
        // The real PMD's port would not exist after a failed probe; here the next back-end is probed afresh.
        if (r.probed) this.probed = true;
        else Object.assign(this.state, newVirtioUserState(this.cfg, this.state.staleVringNum));
        finish(r.probed && r.started);
      });
    } else {
      runSequence(serverReconnect(this.state, this.env), io, finish);
    }
  }

  private dropConnection(end: 'peer-closed' | 'closed-locally'): void {
    const c = this.conn;
    if (c !== undefined) this.closeConn(c, end);
  }

  private makeEnv(size: number): VirtioUserEnv {
    const region = { guestPhysAddr: BigInt(BASE), memorySize: BigInt(size), userspaceAddr: BigInt(BASE), mmapOffset: 0n };
    return {
      cfg: this.cfg,
      connected: () => this.conn?.open === true,
      callFd: (i) => this.calls[i]!,
      kickFd: (i) => this.kicks[i]!,
      memoryTable: () => ({ regions: [region], fds: [this.memHandle] }),
      // GPA = VA here, so the areas' GPAs are the addresses virtio-user sends.
      vringAddr: (i) => {
        const a = this.port.areas(i);
        return { desc: BigInt(a.desc), avail: BigInt(a.avail), used: BigInt(a.used) };
      },
      allocQueues: (features) => {
        for (let i = 0; i < 2; i++) this.port.build(i, ringKindOf(features) === 'packed', ringFeaturesOf(features));
      },
      resetPackedQueues: () => {
        const packed = this.port.packed;
        const f = ringFeaturesOf(this.state.guestFeatures);
        for (let i = 0; i < 2; i++) this.droppedOnReset += this.port.build(i, packed, f);
      },
      log: (level, text) => this.note(level, text),
      milestone: (kind) => {
        this.note('INFO', kind);
        const c = this.conn;
        if (c?.open && kind === 'started') c.session.running = true;
        if (c?.open && kind === 'stopped') c.session.running = false;
      },
    };
  }
}
