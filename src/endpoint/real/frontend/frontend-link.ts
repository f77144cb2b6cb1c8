/**
 * What the real-socket model front-ends share: the fd registry, one memfd of guest RAM with
 * its mapping, the kick and call eventfds of two vrings, the guest data path, the listening
 * socket with its backlog of back-ends, and a connection's `SocketIo` and session record.
 * Each front-end keeps its own control-path policy (which sequences run, and when).
 */
import { TransportError, type EventFd, type MemFd } from '../../../transport/index.ts';
import { MappedGuestMemory, RealEventFd, RealFdRegistry, RealMemFd, RealUnixListener, type RealSocketFd } from '../../../transport/real/index.ts';
import { RealFdAdapters, epochSeconds, realFdOf } from '../fd-adapter.ts';
import { GuestPort, type GuestPortOptions } from './guest-port.ts';
import { SocketIo, type RealFrontendLogLine, type RealFrontendSession } from './socket-io.ts';

export interface LinkConn {
  readonly sock: RealSocketFd;
  readonly session: RealFrontendSession;
  readonly io: SocketIo;
  open: boolean;
}

export interface FrontendLinkInit {
  readonly path: string;
  readonly registry?: RealFdRegistry;
  /** Names the registry and adapters: `${label} ${path}`. */
  readonly label: string;
  readonly memfdName: string;
  readonly ramSize: number;
  /** Maps RAM from the memfd (the memfd is closed here if this throws). */
  readonly map: (memfd: RealMemFd) => MappedGuestMemory;
  readonly port: Omit<GuestPortOptions, 'memory' | 'kick' | 'running'>;
}

export interface AcceptHooks<C extends LinkConn> {
  readonly maxPayload?: number;
  /** The back-end's bytes could not be framed. */
  readonly fatal: (c: C, e: Error) => void;
  /** The peer closed: `eof` runs before pending reads see the EOF, `closed` on the next tick. */
  readonly eof?: (c: C) => void;
  readonly closed: (c: C) => void;
}

export abstract class FrontendLink<C extends LinkConn> {
  readonly path: string;
  readonly registry: RealFdRegistry;
  readonly adapters: RealFdAdapters;
  readonly sessions: RealFrontendSession[] = [];
  readonly log: RealFrontendLogLine[] = [];
  protected readonly mem: MappedGuestMemory;
  /** The handle the sequences send; it owns the memfd (it never maps it). */
  protected readonly memHandle: MemFd;
  protected readonly kicks: EventFd[] = [];
  protected readonly calls: EventFd[] = [];
  protected readonly port: GuestPort;
  protected listener: RealUnixListener | undefined;
  protected conn: C | undefined;
  protected readonly backlog: RealSocketFd[] = [];
  protected stopped = false;

  protected constructor(init: FrontendLinkInit) {
    this.path = init.path;
    this.registry = init.registry ?? new RealFdRegistry(`${init.label} ${init.path}`);
    this.adapters = new RealFdAdapters(`${init.label} ${init.path}`);
    const memfd = RealMemFd.create(init.memfdName, init.ramSize, this.registry);
    try {
      this.mem = init.map(memfd);
    } catch (e) {
      memfd.close();
      throw e;
    }
    this.memHandle = this.adapters.adopt(memfd) as MemFd;
    // The kick and call eventfds of each vring outlive connections.
    for (let i = 0; i < 2; i++) {
      this.kicks.push(this.adapters.adopt(RealEventFd.create(0, { registry: this.registry })) as EventFd);
      this.calls.push(this.adapters.adopt(RealEventFd.create(0, { registry: this.registry })) as EventFd);
    }
    this.port = new GuestPort({ ...init.port, memory: () => this.memory, kick: (i) => this.kicks[i]!.write(1n), running: () => this.running });
  }

  /** The log line written when listening starts. */
  protected abstract listeningNote(): [level: string, text: string];

  /** Takes up the next back-end of the backlog if none is connected. */
  protected abstract maybeAccept(): void;

  /** Starts what the front-end says to a back-end when it quits; calls `done` at its end. False: nothing to say. */
  protected abstract farewell(done: () => void): boolean;

  /** Drops the connection and what belongs to it before the common fds are closed. */
  protected abstract dropAll(): void;

  /** Takes each vring's call eventfd count: used-buffer notifications the back-end sent since the last take. */
  takeCalls(): bigint[] {
    return this.calls.map((c) => (realFdOf(c) as RealEventFd).read());
  }

  get memory() {
    return this.mem.memory;
  }

  get session(): RealFrontendSession | undefined {
    return this.conn?.open ? this.conn.session : undefined;
  }

  /** The rings run on the current back-end. */
  get running(): boolean {
    return this.conn?.open === true && this.conn.session.running;
  }

  /** The negotiated ring kind. */
  get packed(): boolean {
    return this.port.packed;
  }

  listen(): void {
    const l = RealUnixListener.listen(this.path, (s) => this.onAccept(s), { registry: this.registry });
    if (l instanceof TransportError) throw l;
    this.listener = l;
    this.note(...this.listeningNote());
  }

  /** Resolves when connection `n` (1, 2, …) has started; rejects if it failed. */
  async waitForRunning(n: number, timeoutMs = 15_000): Promise<RealFrontendSession> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = this.sessions[n - 1];
      if (s?.outcome === 'started') return s;
      if (s?.outcome === 'failed') throw new Error(`${this.path}: session ${n} did not start: ${this.log.map((l) => l.text).join(' | ')}`);
      if (Date.now() > end) throw new Error(`${this.path}: session ${n} not running within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  // ---- data path ---------------------------------------------------------------------------

  /** Posts empty RX buffers until `n` are posted or the ring is full; kicks if asked. */
  postRx(n: number): number {
    return this.port.postRx(n);
  }

  /** Transmits packets (virtio-net header included) one buffer each; returns how many fit. */
  send(packets: readonly Uint8Array[]): number {
    return this.port.send(packets);
  }

  /** TX buffers given back. */
  reclaimTx(): number {
    return this.port.reclaimTx();
  }

  /** Received packets (virtio-net header included), oldest first. */
  receive(): Uint8Array[] {
    return this.port.receive();
  }

  /** Buffers of vring `i` the back-end has not given back. */
  inFlight(i: number): number {
    return this.port.inFlight(i);
  }

  // ---- shutdown ----------------------------------------------------------------------------

  /** Quits: the farewell runs (for `timeoutMs` at most), then everything is closed and the socket file removed. */
  async quit(timeoutMs = 5_000): Promise<void> {
    if (this.stopped) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      if (!this.farewell(done)) done();
    });
    this.shutdown();
  }

  /** Closes every socket and fd and releases the mappings, each exactly once. */
  shutdown(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.dropAll();
    this.closeAll();
  }

  /** Open fds and live mappings: empty after `shutdown()`, or something leaked. */
  leaks(): string[] {
    const out = [...this.registry.describeOpen(), ...this.adapters.describeOpen()];
    if (!this.mem.released) out.push('guest memory still mapped');
    if (this.adapters.liveMappings > 0) out.push(`${this.adapters.liveMappings} adapter mapping(s) live`);
    return out;
  }

  // ---- internals ---------------------------------------------------------------------------

  protected note(level: string, text: string): void {
    this.log.push({ t: epochSeconds(), level, text });
  }

  /** Closes the backlog, the listener (removing its file), the mapping and the eventfds. */
  private closeAll(): void {
    for (const s of this.backlog.splice(0)) s.close();
    this.listener?.close({ unlink: true });
    this.listener = undefined;
    this.port.clear();
    this.mem.release();
    this.memHandle.close();
    for (const e of [...this.kicks, ...this.calls]) e.close();
  }

  private onAccept(sock: RealSocketFd): void {
    if (this.stopped) {
      sock.close();
      return;
    }
    this.backlog.push(sock);
    this.maybeAccept();
  }

  /** Makes the next back-end of the backlog the current connection (undefined if there is none). */
  protected connectNext(make: (base: LinkConn) => C, hooks: AcceptHooks<C>): C | undefined {
    const sock = this.backlog.shift();
    if (sock === undefined) return undefined;
    const session: RealFrontendSession = { n: this.sessions.length + 1, sent: [], connectedAt: epochSeconds(), running: false, outcome: undefined, end: undefined };
    this.sessions.push(session);
    const io = new SocketIo(
      sock,
      (name) => session.sent.push(name),
      (e) => hooks.fatal(c, e),
      hooks.maxPayload,
    );
    const c = make({ sock, session, io, open: true });
    this.conn = c;
    sock.onData((chunk, fds) => {
      if (!c.open) {
        for (const f of fds) f.close();
        return;
      }
      io.push(chunk, fds);
    });
    sock.onClose(() => {
      if (!c.open) return;
      hooks.eof?.(c);
      io.closed();
      // After the pending sequence has seen the EOF (same tick).
      setImmediate(() => hooks.closed(c));
    });
    return c;
  }

  /** Closes connection `c`; false if it was closed already. */
  protected closeConn(c: C, end: 'peer-closed' | 'closed-locally'): boolean {
    if (!c.open) return false;
    c.open = false;
    c.session.running = false;
    c.session.end ??= end;
    c.io.closed();
    c.sock.close();
    return true;
  }
}
