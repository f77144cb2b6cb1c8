/**
 * The model front-end `qemu-7.2` on a real AF_UNIX socket: QEMU 7.2 with
 * `-chardev socket,server=on` and a vhost-user netdev behind virtio-net-pci, serving a real
 * back-end (DPDK vhost `client=1`) in real time.
 *
 * The control path is the sans-IO `qemu-seq.ts`, the same sequences the in-process
 * `QemuFrontend` runs: the netdev init on each connection (§4.1), the guest's attach rounds
 * and DRIVER_OK on the first (vhost start, §4.2), `chr_closed_bh` when the back-end goes
 * (acked features kept; the stop fails on the dead socket, split rings restored from
 * used->idx, packed rings keep their base), link up on the next (vhost restarts with the kept
 * bases), and the VM stop at quit. Sequences run one at a time, as QEMU's main loop does.
 *
 * Guest memory is one memfd, as `memory-backend-memfd,share=on`, described in QEMU's PC
 * layout: two regions of the same fd, [0, 0xa0000) and [0xc0000, ram) at mmap offset
 * 0xc0000. Rings sit at the top of RAM and belong to the guest: they outlive back-ends.
 */
import { BackendRequest, MessageDecoder, encode, isReply, makeAck, wantsReply, type VhostUserRegion } from '../../../protocol/index.ts';
import type { AnyFd, EventFd } from '../../../transport/index.ts';
import { MappedGuestMemory, RealEventFd, realSocketpair, type RealFd, type RealFdRegistry, type RealSocketFd } from '../../../transport/real/index.ts';
import { FrontendError } from '../../frontend/errors.ts';
import { runSequence, type Sequence, type SequenceIo } from '../../frontend/handshake.ts';
import { PC_DEFAULT_BASE, PC_HIGH_START, PC_LOW_END } from '../../frontend/guest.ts';
import { DEFAULT_QUEUE_SIZE, GUEST_DRIVERS, ringFeaturesOf, ringKindOf, type GuestDriverName, type GuestDriverProfile, type QemuDeviceConfig } from '../../frontend/profiles.ts';
import { QEMU_7_2_MAX_REPLY_PAYLOAD, renewNotifiers } from '../../frontend/qemu.ts';
import {
  attachRounds,
  chrClosed,
  encodeVqBase,
  guestDriverOk,
  netdevInit,
  newQemuState,
  setStatus,
  vmStop,
  type QemuEnv,
  type QemuState,
  type StatusOutcome,
} from '../../frontend/qemu-seq.ts';
import { FrontendLink, type LinkConn } from './frontend-link.ts';
import { BUF_SIZE, ringStride, type RingDriver } from './guest-port.ts';
import type { RealFrontendSession } from './socket-io.ts';

/** Packet buffers start above the first MiB (clear of the PC hole and low RAM). */
const BUF_GPA = 0x100000;

export interface RealQemuFrontendOptions {
  readonly path: string;
  /** rx/tx_queue_size (default 256). */
  readonly queueSize?: number;
  /** virtio-net-pci `packed=on`. */
  readonly packed?: boolean;
  /** The guest driver (default 'virtio-net', a Linux guest). */
  readonly guestDriver?: GuestDriverName | GuestDriverProfile;
  /** Guest RAM bytes (default 4 MiB). */
  readonly ramSize?: number;
  /** The front-end VA that SET_MEM_TABLE and SET_VRING_ADDR describe RAM at (default as observed under QEMU 7.2). */
  readonly memBase?: number;
  /** Milliseconds from the first netdev init to the guest driver's start (default 0). */
  readonly bootDelayMs?: number;
  readonly registry?: RealFdRegistry;
}

interface Conn extends LinkConn {
  /** The netdev init succeeded on it (QEMU's s->watch): its close runs chr_closed_bh. */
  watched: boolean;
}

/** Sends fail: the io of a connection that is not there (QEMU's vhost_user_write on a closed chardev). */
const NO_CONNECTION: SequenceIo = {
  send: (msg) => new FrontendError('transport', `request ${msg.request}: no back-end connected`, msg.request, 'Failed to set msg fds.'),
  read: (spec) => ({ ok: false, error: new FrontendError('eof', 'no back-end connected', spec.request) }),
};

export class RealQemuFrontend extends FrontendLink<Conn> {
  readonly profile = 'qemu-7.2' as const;
  readonly cfg: QemuDeviceConfig;
  readonly driver: GuestDriverProfile;
  readonly state: QemuState;
  private readonly regions: VhostUserRegion[];
  private readonly notifiers = new Map<number, { masked: EventFd; err: EventFd }>();
  private readonly env: QemuEnv;
  private readonly bootDelayMs: number;
  private backendChannel: { mine: AnyFd; sock: RealSocketFd } | undefined;
  private booted = false;
  /** QEMU's main loop: one sequence at a time. */
  private readonly tasks: (() => void)[] = [];
  private busy = false;

  constructor(opts: RealQemuFrontendOptions) {
    const cfg: QemuDeviceConfig = { queuePairs: 1, queueSize: opts.queueSize ?? DEFAULT_QUEUE_SIZE, packed: opts.packed ?? false };
    const size = opts.ramSize ?? 4 << 20;
    const base = opts.memBase ?? PC_DEFAULT_BASE;
    const q = cfg.queueSize;
    const stride = ringStride(q);
    if (BUF_GPA + 2 * q * BUF_SIZE > size - 2 * stride) throw new RangeError(`${size} bytes of guest memory cannot hold the rings and ${2 * q} buffers above 1 MiB`);
    super({
      path: opts.path,
      registry: opts.registry,
      label: 'qemu front-end',
      memfdName: 'qemu-ram',
      ramSize: size,
      map: (memfd) => {
        // Two mappings of one file, as the guest sees RAM either side of the VGA/ROM hole.
        const low = memfd.map(0, PC_LOW_END, 'qemu ram below 0xa0000');
        let high;
        try {
          high = memfd.map(PC_HIGH_START, size - PC_HIGH_START, 'qemu ram from 0xc0000');
        } catch (e) {
          low.release();
          throw e;
        }
        return new MappedGuestMemory([
          { gpa: 0, uva: base, mapping: low },
          { gpa: PC_HIGH_START, uva: base + PC_HIGH_START, mapping: high },
        ]);
      },
      port: {
        queueSize: q,
        ringBase: [0, 1].map((i) => size - (i + 1) * stride),
        bufBase: BUF_GPA,
        // A QEMU guest's kernel virtio-net driver takes interrupts (NAPI turns them off only while it polls).
        usedNotifications: true,
      },
    });
    this.cfg = cfg;
    const d = opts.guestDriver ?? 'virtio-net';
    this.driver = typeof d === 'string' ? GUEST_DRIVERS[d] : d;
    this.bootDelayMs = opts.bootDelayMs ?? 0;
    this.state = newQemuState(this.cfg);
    this.regions = [
      { guestPhysAddr: 0n, memorySize: BigInt(PC_LOW_END), userspaceAddr: BigInt(base), mmapOffset: 0n },
      { guestPhysAddr: BigInt(PC_HIGH_START), memorySize: BigInt(size - PC_HIGH_START), userspaceAddr: BigInt(base + PC_HIGH_START), mmapOffset: BigInt(PC_HIGH_START) },
    ];
    this.env = this.makeEnv();
  }

  /** The features acked to the current (or last) back-end, bit 30 included. */
  get ackedFeatures(): bigint | undefined {
    return this.state.devs?.[0]?.ackedFeatures;
  }

  /** The acked features chr_closed_bh saved, which every later back-end must offer. */
  get savedAckedFeatures(): bigint {
    return this.state.savedAcked;
  }

  /** The base the next SET_VRING_BASE of vring `i` carries. */
  vringBase(i: number): number {
    return encodeVqBase(this.state.vqs[i]!, ringKindOf(this.state.guestAcked));
  }

  /** GPAs of vring `i`'s areas (packed: avail = driver event, used = device event area). */
  vringAreas(i: number): { desc: number; avail: number; used: number } {
    return this.port.areas(i);
  }

  /** The guest driver's ring `i` (its positions: split indices or packed slot and wrap). */
  ring(i: number): RingDriver | undefined {
    return this.port.drivers[i];
  }

  /** Listen ("QEMU waiting for connection on: disconnected:unix:…,server=on"). */
  protected listeningNote(): [string, string] {
    return ['info', `QEMU waiting for connection on: disconnected:unix:${this.path},server=on`];
  }

  /** Resolves once the back-end of session `n` is gone and chr_closed_bh has run. */
  async waitForLoss(n: number, timeoutMs = 10_000): Promise<RealFrontendSession> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = this.sessions[n - 1];
      if (s?.end !== undefined && !(this.conn?.session === s && this.conn.open)) return s;
      if (Date.now() > end) throw new Error(`${this.path}: session ${n} still open after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  // ---- shutdown ----------------------------------------------------------------------------

  /** QEMU quits: the VM stops (vhost stops on the live back-end), then the socket closes and its file goes. */
  protected farewell(done: () => void): boolean {
    this.enqueue(() => this.withPhase(vmStop(this.state, this.env)), done);
    return true;
  }

  protected dropAll(): void {
    this.tasks.length = 0;
    if (this.conn?.open) this.dropConnection(this.conn, 'closed-locally');
    this.dropBackendChannel();
    for (const n of this.notifiers.values()) {
      n.masked.close();
      n.err.close();
    }
    this.notifiers.clear();
  }

  // ---- the main loop -----------------------------------------------------------------------

  /** Queues a sequence; it runs on the connection current when it starts (or none: sends fail). */
  private enqueue<T>(make: () => Sequence<T>, done?: (r: T) => void): void {
    this.tasks.push(() => {
      const io = this.conn?.io ?? NO_CONNECTION;
      runSequence(make(), io, (r) => {
        done?.(r);
        // Let socket events land between tasks, as QEMU's main loop would.
        setImmediate(() => {
          this.busy = false;
          this.pump();
        });
      });
    });
    this.pump();
  }

  private pump(): void {
    if (this.busy || this.stopped) return;
    const t = this.tasks.shift();
    if (t === undefined) return;
    this.busy = true;
    t();
  }

  private *withPhase(seq: Sequence<StatusOutcome>): Sequence<StatusOutcome> {
    const r = yield* seq;
    if (r === 'failed') this.note('error', 'unable to start vhost net: falling back on userspace virtio');
    return r;
  }

  // ---- connections -------------------------------------------------------------------------

  /** The chardev takes one client at a time. */
  protected maybeAccept(): void {
    if (this.conn?.open || this.stopped) return;
    const c = this.connectNext((base) => ({ ...base, watched: false }), {
      maxPayload: QEMU_7_2_MAX_REPLY_PAYLOAD,
      // Unframeable bytes: QEMU's read fails and it disconnects, as for a closed peer.
      fatal: (c, e) => {
        this.note('error', `Failed to read msg header: ${e.message}`);
        setImmediate(() => this.onPeerClosed(c));
      },
      closed: (c) => this.onPeerClosed(c),
    });
    if (c === undefined) return;
    const session = c.session;
    this.enqueue(
      () => netdevInit(this.state, this.env),
      (err) => {
        if (err !== undefined) {
          // net_vhost_user_event: "failed to init vhost_net for queue 0", qemu_chr_fe_disconnect.
          this.note('error', `failed to init vhost_net for queue 0: ${err.message}`);
          session.outcome = 'failed';
          this.dropConnection(c, c.io.isGone ? 'peer-closed' : 'closed-locally');
          this.maybeAccept();
          return;
        }
        c.watched = true;
        if (!this.booted) {
          this.booted = true;
          setTimeout(() => this.bootGuest(), this.bootDelayMs);
        } else {
          this.enqueue(() => this.withPhase(setStatus(this.state, this.env)), (r) => this.settle(c, r));
        }
      },
    );
  }

  /** The guest's firmware and driver: attach rounds, then DRIVER_OK (vhost starts). */
  private bootGuest(): void {
    if (this.stopped) return;
    this.enqueue(() => attachRounds(this.state, this.driver.attachRounds.boot));
    this.enqueue(
      () =>
        this.withPhase(
          guestDriverOk(this.state, this.env, this.driver.wants, (acked) => {
            for (let i = 0; i < 2; i++) this.port.build(i, ringKindOf(acked) === 'packed', ringFeaturesOf(acked));
          }),
        ),
      (r) => {
        const c = this.conn;
        if (c !== undefined) this.settle(c, r);
      },
    );
  }

  private settle(c: Conn, r: StatusOutcome): void {
    if (c.session.outcome !== undefined) return;
    c.session.outcome = r === 'started' ? 'started' : 'failed';
  }

  /** CHR_EVENT_CLOSED: a watched connection gets chr_closed_bh (on the dead socket), then the next back-end. */
  private onPeerClosed(c: Conn): void {
    if (!c.open || this.stopped) return;
    c.session.end ??= 'peer-closed';
    c.session.running = false;
    this.note('info', 'vhost-user connection closed');
    if (!c.watched) {
      this.dropConnection(c, 'peer-closed');
      this.maybeAccept();
      return;
    }
    this.enqueue(
      () => chrClosed(this.state, this.env),
      (r) => {
        if (r === 'stopped') this.note('info', `rings restored after the lost back-end: ${[0, 1].map((i) => `vring ${i} base 0x${this.vringBase(i).toString(16)}`).join(', ')}`);
        this.dropConnection(c, 'peer-closed');
        this.maybeAccept();
      },
    );
  }

  private dropConnection(c: Conn, end: 'peer-closed' | 'closed-locally'): void {
    if (this.closeConn(c, end)) this.dropBackendChannel();
  }

  // ---- back-end channel (SET_SLAVE_REQ_FD) -------------------------------------------------

  /** vhost_setup_slave_channel: a socketpair; QEMU keeps one end and answers what asks for a reply. */
  private openBackendChannel(): [AnyFd, AnyFd] {
    this.dropBackendChannel();
    const [mine, theirs] = realSocketpair({ registry: this.registry });
    const decoder = new MessageDecoder<RealFd>({ space: 'backend', maxPayload: QEMU_7_2_MAX_REPLY_PAYLOAD });
    mine.onData((chunk, fds) => {
      try {
        decoder.push(chunk, fds);
        for (let m = decoder.next(); m !== undefined; m = decoder.next()) {
          for (const f of m.fds) f.close();
          this.note('info', `back-end request ${m.header.request} on the back-end channel`);
          if (isReply(m.header.flags) || !wantsReply(m.header.flags)) continue;
          // backend_read: only the host notifier is handled by virtio-net; the rest is refused.
          const handled = m.header.request === BackendRequest.SLAVE_VRING_HOST_NOTIFIER_MSG;
          mine.send(encode(makeAck({ request: m.header.request, flags: m.header.flags }, handled), { space: 'backend', validate: false }).bytes, []);
        }
      } catch (e) {
        this.note('error', `back-end channel: ${e instanceof Error ? e.message : String(e)}`);
        this.dropBackendChannel();
      }
    });
    mine.onClose(() => {
      this.note('error', 'Unexpected end-of-file before all data were read');
      this.dropBackendChannel();
    });
    const ch = { mine: this.adapters.adopt(mine), sock: mine };
    this.backendChannel = ch;
    return [ch.mine, this.adapters.adopt(theirs)];
  }

  private dropBackendChannel(): void {
    const ch = this.backendChannel;
    this.backendChannel = undefined;
    if (ch !== undefined && !ch.mine.closed) ch.mine.close();
  }

  private makeEnv(): QemuEnv {
    return {
      ringKind: () => ringKindOf(this.state.guestAcked),
      initNotifiers: (i) =>
        renewNotifiers(this.notifiers, i, () => ({
          masked: this.adapters.adopt(RealEventFd.create(0, { registry: this.registry })) as EventFd,
          err: this.adapters.adopt(RealEventFd.create(0, { registry: this.registry })) as EventFd,
        })),
      kickFd: (i) => this.kicks[i]!,
      callFd: (i) => this.calls[i]!,
      memoryTable: () => ({ regions: this.regions, fds: this.regions.map(() => this.memHandle) }),
      vringAddr: (i) => {
        const a = this.port.areas(i);
        const va = (gpa: number) => BigInt(this.memory.gpaToUva(gpa));
        return { desc: va(a.desc), avail: va(a.avail), used: va(a.used), usedGpa: BigInt(a.used) };
      },
      usedIdx: (i) => this.port.usedIdx(i),
      backendChannel: () => this.openBackendChannel(),
      dropBackendChannel: () => this.dropBackendChannel(),
      log: (level, text) => this.note(level, text),
      milestone: (kind, detail) => {
        this.note('info', detail === undefined ? kind : `${kind}: ${detail}`);
        const c = this.conn;
        if (c?.open && kind === 'started') c.session.running = true;
        if (kind === 'stopped' && c !== undefined) c.session.running = false;
      },
    };
  }
}
