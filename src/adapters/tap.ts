/**
 * A vhost-user interposer that records real traffic.
 *
 *   front-end (listens on `frontend`)  <── tap ──>  back-end (client, connects to `listen`)
 *
 * The tap listens on `listen`. For each back-end connection it accepts it connects to the
 * front-end's socket, then relays every message both ways with its fds and writes each one
 * to the trace (DESIGN.md "Formats: Trace"): `dir` is `f2b` for what the front-end sent and
 * `b2f` for what the back-end sent, `t` is seconds since the tap started. A connection pair
 * is a session: `{"event":"session","n":N}` when it starts, `{"event":"closed","n":N}` when
 * either side closes (the tap then closes the other side, so each real peer sees the close as
 * if it were directly connected). The listener stays up, so a relaunched back-end starts
 * session N+1.
 *
 * Messages are relayed whole: the socket reads header-first (vhost-user framing), so fds
 * arrive with the chunk that starts their message; the tap collects the message's bytes,
 * records it, sends bytes and fds with one sendmsg, then closes its own copies of the fds.
 * The tap does not validate what it relays: a malformed message goes through as it came,
 * which is the point of a recorder. If a side closes in the middle of a message, the partial
 * bytes are passed on unrecorded, as the peer would have seen them.
 *
 * Extra fields on the records (readers ignore them): `session` on messages (the pair it
 * belongs to), `by` on `closed` (`frontend`, `backend` or `tap` at stop()).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { HEADER_SIZE } from '../protocol/index.ts';
import { formatTraceRecord, traceMessageFromBytes, type Direction, type TraceRecord } from '../sim/trace.ts';
import { TransportError } from '../transport/errors.ts';
import { RealUnixListener, SCM_MAX_FD, connectUnix, type RealFd, type RealFdRegistry, type RealSocketFd } from '../transport/real/index.ts';

export interface TapOptions {
  /** Socket the real front-end listens on (virtio-user `server=1`, QEMU chardev `server=on`). */
  frontend: string;
  /** Socket the tap listens on; the back-end (`client=1`) connects here. */
  listen: string;
  /** JSONL trace file, written line by line as messages pass. */
  out?: string;
  /** Called with every record and its extra fields, in order (tests, live display). */
  onRecord?: (record: TraceRecord, extra: Readonly<Record<string, unknown>>) => void;
  /** Problems that do not stop the tap (front-end not there, a failed send). */
  onWarning?: (message: string) => void;
  registry?: RealFdRegistry;
}

type Side = 'frontend' | 'backend';

/** Reassembles whole messages from header-first chunks. */
class Assembler {
  private parts: Uint8Array[] = [];
  private have = 0;
  private fds: RealFd[] = [];

  /** Adds a chunk; returns the messages it completes, each with the fds that came with it. */
  push(chunk: Uint8Array, fds: RealFd[]): Array<{ bytes: Uint8Array; fds: RealFd[] }> {
    this.parts.push(chunk);
    this.have += chunk.length;
    this.fds.push(...fds);
    const out: Array<{ bytes: Uint8Array; fds: RealFd[] }> = [];
    for (;;) {
      if (this.have < HEADER_SIZE) return out;
      const all = this.take();
      const size = (all[8]! | (all[9]! << 8) | (all[10]! << 16) | (all[11]! << 24)) >>> 0;
      const total = HEADER_SIZE + size;
      if (all.length < total) {
        this.parts = [all];
        return out;
      }
      out.push({ bytes: all.subarray(0, total), fds: this.fds });
      this.fds = [];
      const rest = all.subarray(total);
      this.parts = rest.length > 0 ? [rest] : [];
      this.have = rest.length;
    }
  }

  /** Whatever is buffered (an incomplete message), handed over and forgotten. */
  drain(): { bytes: Uint8Array; fds: RealFd[] } {
    const r = { bytes: this.take(), fds: this.fds };
    this.parts = [];
    this.have = 0;
    this.fds = [];
    return r;
  }

  private take(): Uint8Array {
    if (this.parts.length === 1) return this.parts[0]!;
    const b = new Uint8Array(this.have);
    let o = 0;
    for (const p of this.parts) {
      b.set(p, o);
      o += p.length;
    }
    return b;
  }
}

interface Pair {
  n: number;
  backend: RealSocketFd;
  frontend: RealSocketFd;
  open: boolean;
}

export class VhostUserTap {
  private readonly started = performance.now();
  private readonly pairs = new Set<Pair>();
  private sessionCount = 0;
  private outFd: number | undefined;
  private stopped = false;
  private listener!: RealUnixListener;
  /** Messages relayed, both directions. */
  messages = 0;

  private constructor(private readonly opts: TapOptions) {}

  /**
   * Starts listening (EADDRINUSE if something exists at `listen`: the tap does not remove
   * files it did not create). The trace file is created (truncated) at once.
   */
  static start(opts: TapOptions): VhostUserTap | TransportError {
    const tap = new VhostUserTap(opts);
    const l = RealUnixListener.listen(opts.listen, (ch) => tap.accept(ch), { ...(opts.registry ? { registry: opts.registry } : {}) });
    if (l instanceof TransportError) return l;
    tap.listener = l;
    if (opts.out !== undefined) {
      try {
        tap.outFd = openSync(opts.out, 'w');
      } catch (e) {
        l.close({ unlink: true });
        throw e;
      }
    }
    return tap;
  }

  /** Sessions started so far. */
  get sessions(): number {
    return this.sessionCount;
  }

  /** Sessions whose two connections are both still up. */
  get openSessions(): number {
    return [...this.pairs].filter((p) => p.open).length;
  }

  /** Stops listening (removing the socket file), cuts every open pair, closes the trace. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.listener.close({ unlink: true });
    for (const p of [...this.pairs]) this.end(p, 'tap');
    if (this.outFd !== undefined) {
      closeSync(this.outFd);
      this.outFd = undefined;
    }
  }

  private now(): number {
    // Microseconds are plenty for message ordering and keep the lines short.
    return Math.round((performance.now() - this.started) * 1000) / 1e6;
  }

  private emit(record: TraceRecord, extra: Record<string, unknown> = {}): void {
    // One write per line, straight to the kernel: a killed tap loses nothing already relayed.
    if (this.outFd !== undefined) writeSync(this.outFd, formatTraceRecord(record, extra) + '\n');
    this.opts.onRecord?.(record, extra);
  }

  private warn(msg: string): void {
    this.opts.onWarning?.(msg);
  }

  private accept(backend: RealSocketFd): void {
    if (this.stopped) {
      backend.close();
      return;
    }
    const opts = { maxRecvFds: SCM_MAX_FD, ...(this.opts.registry ? { registry: this.opts.registry } : {}) };
    const frontend = connectUnix(this.opts.frontend, opts);
    if (frontend instanceof TransportError) {
      // Without a front-end there is nothing to relay to; the back-end sees a close and retries.
      this.warn(`back-end connected but the front-end is not reachable: ${frontend.message}`);
      backend.close();
      return;
    }
    const pair: Pair = { n: ++this.sessionCount, backend, frontend, open: true };
    this.pairs.add(pair);
    this.emit({ t: this.now(), event: 'session', n: pair.n });
    this.relay(pair, 'frontend');
    this.relay(pair, 'backend');
  }

  /** Wires what `from` sends to the other side of the pair. */
  private relay(pair: Pair, from: Side): void {
    const src = from === 'frontend' ? pair.frontend : pair.backend;
    const dst = from === 'frontend' ? pair.backend : pair.frontend;
    const dir: Direction = from === 'frontend' ? 'f2b' : 'b2f';
    const asm = new Assembler();
    src.onData((chunk, fds) => {
      if (!pair.open) {
        for (const f of fds) f.close();
        return;
      }
      for (const m of asm.push(chunk, fds)) {
        this.messages++;
        this.emit(traceMessageFromBytes(this.now(), dir, m.bytes, m.fds.length), { session: pair.n });
        this.forward(dst, m.bytes, m.fds, dir);
      }
    });
    src.onClose(() => {
      const rest = asm.drain();
      if (pair.open && rest.bytes.length > 0) this.forward(dst, rest.bytes, rest.fds, dir);
      else for (const f of rest.fds) f.close();
      this.end(pair, from);
    });
  }

  private forward(dst: RealSocketFd, bytes: Uint8Array, fds: RealFd[], dir: Direction): void {
    const err = dst.send(bytes, fds);
    // The receiver owns what it was sent; the tap's handles were only in transit.
    for (const f of fds) f.close();
    // EPIPE: the other side is gone; its close event ends the pair.
    if (err) this.warn(`${dir} message not relayed: ${err.message}`);
  }

  private end(pair: Pair, by: Side | 'tap'): void {
    if (!pair.open) return;
    pair.open = false;
    this.pairs.delete(pair);
    pair.backend.close();
    pair.frontend.close();
    this.emit({ t: this.now(), event: 'closed', n: pair.n }, { by });
  }
}
