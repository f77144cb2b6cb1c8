import type { TraceRecord, Direction } from '../sim/trace.ts';
import { traceMessageFromBytes } from '../sim/trace.ts';

/**
 * Collects trace records (the JSON Lines format of DESIGN.md) as messages cross a
 * connection. One recorder per front-end/back-end pair numbers the sessions, so a
 * model run's trace has the same shape as a real capture and the two can be diffed.
 */
export class TraceRecorder {
  readonly records: TraceRecord[] = [];
  private sessions = 0;

  constructor(private readonly clock: { readonly now: number }) {}

  /** A new connection: returns its session number (1, 2, …). */
  openSession(): number {
    this.sessions += 1;
    this.records.push({ t: this.clock.now, event: 'session', n: this.sessions });
    return this.sessions;
  }

  closeSession(n: number): void {
    this.records.push({ t: this.clock.now, event: 'closed', n });
  }

  message(dir: Direction, bytes: Uint8Array, nfds: number): void {
    this.records.push(traceMessageFromBytes(this.clock.now, dir, bytes, nfds));
  }
}
