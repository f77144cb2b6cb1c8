import { Rng } from './rng.ts';

/**
 * A seeded discrete-event scheduler in virtual time.
 *
 * Everything concurrent in a simulation (a message in flight, a reconnect timer, a
 * guest posting buffers) is an event at a virtual time in seconds. Events run one at a
 * time in order of (time, tie-break, insertion). The tie-break is a number drawn from
 * a seeded stream when the event is scheduled, so events that fall on the same instant
 * run in an order the seed chooses: different seeds explore different interleavings
 * and one seed always replays the same one. Nothing here reads the wall clock or
 * uses real timers.
 *
 * Errors: an exception thrown by an event handler propagates out of `run`/`step` as a
 * `SchedulerEventError` carrying the event's label and time (the original is its
 * `cause`). The failing event is consumed and the clock stays at its time, so the
 * caller may inspect the state and call `run` again. Propagating (rather than
 * collecting) keeps a failure at the point it happened, which is what a replay from
 * the seed needs.
 */

export interface SchedulerOptions {
  /** Seed for `rng` and the tie-break; the same seed gives the same run. */
  seed: number | string;
  /** 'seeded' (default): simultaneous events in a seed-chosen order; 'fifo': in insertion order. */
  tieBreak?: 'seeded' | 'fifo';
  /** Record every executed event (seq, time, label) in `log`. */
  log?: boolean;
  /** Default for `run({ maxEvents })`. */
  maxEvents?: number;
}

export interface RunOptions {
  /** Run events at times ≤ until, then set the clock to `until` (if later than now). */
  until?: number;
  /** Fail with `SchedulerRunawayError` rather than execute more than this many events in this call. */
  maxEvents?: number;
  /** Checked after each event; a true result ends the run (reason 'stopped'). */
  stopWhen?: () => boolean;
}

export interface RunResult {
  /** Events executed by this call. */
  executed: number;
  /** 'idle': nothing left; 'until': the next event is after `until`; 'stopped': `stopWhen` or `stop()`. */
  reason: 'idle' | 'until' | 'stopped';
}

export interface LoggedEvent {
  /** Insertion number, unique per scheduler. */
  seq: number;
  time: number;
  label: string;
}

/** A scheduled event; `cancel()` removes it if it has not run yet. */
export interface EventHandle {
  readonly time: number;
  readonly label: string;
  readonly seq: number;
  /** True until the event runs or is cancelled. */
  readonly pending: boolean;
  /** Returns true when the event was still pending. */
  cancel(): boolean;
}

/**
 * Called after each event's handler returns, with the event itself (label, time, seq): the
 * place for checks that must run after every event. It runs inside the event, so an exception
 * from a hook is reported as that event's `SchedulerEventError`.
 */
export type EventHook = (ev: EventHandle) => void;

export class SchedulerEventError extends Error {
  override readonly name = 'SchedulerEventError';
  constructor(
    readonly label: string,
    readonly time: number,
    readonly seq: number,
    override readonly cause: unknown,
  ) {
    super(`event ${label === '' ? `#${seq}` : `'${label}'`} at t=${time} threw: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

export class SchedulerRunawayError extends Error {
  override readonly name = 'SchedulerRunawayError';
  constructor(
    readonly maxEvents: number,
    readonly time: number,
    /** Labels of the next few pending events, to show what keeps the run going. */
    readonly nextLabels: readonly string[],
  ) {
    super(
      `run stopped after ${maxEvents} events at t=${time} with events still pending` +
        (nextLabels.length > 0 ? ` (next: ${nextLabels.map((l) => `'${l}'`).join(', ')})` : ''),
    );
  }
}

class ScheduledEvent implements EventHandle {
  // `declare`d and assigned in the constructor rather than class fields (which start undefined
  // and are defined one by one): one is allocated per event, so its construction is kept plain.
  declare readonly owner: Scheduler;
  declare readonly time: number;
  declare readonly tie: number;
  declare readonly seq: number;
  declare readonly fn: () => void;
  declare readonly label: string;
  /** Position in the heap array; -1 once it has left the heap. */
  declare index: number;
  constructor(owner: Scheduler, time: number, tie: number, seq: number, fn: () => void, label: string) {
    this.owner = owner;
    this.time = time;
    this.tie = tie;
    this.seq = seq;
    this.fn = fn;
    this.label = label;
    this.index = -1;
  }

  get pending(): boolean {
    return this.index >= 0;
  }

  cancel(): boolean {
    return this.owner.cancel(this);
  }
}

function before(a: ScheduledEvent, b: ScheduledEvent): boolean {
  if (a.time !== b.time) return a.time < b.time;
  if (a.tie !== b.tie) return a.tie < b.tie;
  return a.seq < b.seq;
}

const DEFAULT_MAX_EVENTS = 10_000_000;

export class Scheduler {
  /** The root random stream; components should `fork` their own stream from it by name. */
  readonly rng: Rng;
  readonly seed: number | string;
  /** Executed events, when constructed with `log: true`. */
  readonly log: LoggedEvent[] = [];

  private readonly tieRng: Rng | null;
  private readonly logging: boolean;
  private readonly defaultMaxEvents: number;
  private readonly heap: ScheduledEvent[] = [];
  private clock = 0;
  private nextSeq = 0;
  private executedTotal = 0;
  private running = false;
  private stopRequested = false;
  private hooks: EventHook[] = [];

  constructor(opts: SchedulerOptions) {
    this.seed = opts.seed;
    this.rng = new Rng(opts.seed);
    this.tieRng = (opts.tieBreak ?? 'seeded') === 'seeded' ? this.rng.fork('scheduler/tie-break') : null;
    this.logging = opts.log ?? false;
    this.defaultMaxEvents = opts.maxEvents ?? DEFAULT_MAX_EVENTS;
  }

  /** Current virtual time in seconds. */
  get now(): number {
    return this.clock;
  }

  /** True when no event is pending. */
  get idle(): boolean {
    return this.heap.length === 0;
  }

  /** Number of pending events. */
  get pending(): number {
    return this.heap.length;
  }

  /** Events executed since construction. */
  get executed(): number {
    return this.executedTotal;
  }

  /** Time of the next pending event, or undefined when idle. */
  get nextTime(): number | undefined {
    return this.heap.length > 0 ? this.heap[0].time : undefined;
  }

  /** Schedules `fn` at absolute virtual time `t` (≥ now). */
  at(t: number, fn: () => void, label = ''): EventHandle {
    if (!Number.isFinite(t)) throw new RangeError(`scheduler.at: time ${t} is not finite${label ? ` ('${label}')` : ''}`);
    if (t < this.clock) throw new RangeError(`scheduler.at: time ${t} is before now (${this.clock})${label ? ` ('${label}')` : ''}`);
    const tie = this.tieRng === null ? 0 : this.tieRng.nextU32();
    const ev = new ScheduledEvent(this, t, tie, this.nextSeq++, fn, label);
    this.push(ev);
    return ev;
  }

  /** Schedules `fn` after `dt` (≥ 0) virtual seconds. */
  after(dt: number, fn: () => void, label = ''): EventHandle {
    if (!(dt >= 0) || !Number.isFinite(dt)) throw new RangeError(`scheduler.after: delay ${dt} is not a finite non-negative number${label ? ` ('${label}')` : ''}`);
    const t = this.clock + dt;
    // The poll loops' path: t ≥ now already holds, so only overflow needs `at`'s checks.
    if (t === Infinity) return this.at(t, fn, label);
    const tie = this.tieRng === null ? 0 : this.tieRng.nextU32();
    const ev = new ScheduledEvent(this, t, tie, this.nextSeq++, fn, label);
    this.push(ev);
    return ev;
  }

  /** Adds a hook run after every event (in the order added); returns its remover. */
  afterEach(hook: EventHook): () => void {
    this.hooks = [...this.hooks, hook];
    return () => {
      this.hooks = this.hooks.filter((h) => h !== hook);
    };
  }

  /** Makes the current `run` return (reason 'stopped') after the event that calls it. */
  stop(): void {
    this.stopRequested = true;
  }

  /** Runs the next event, if any; returns it (already executed) or undefined when idle. */
  step(): EventHandle | undefined {
    this.enter('step');
    try {
      if (this.heap.length === 0) return undefined;
      const ev = this.popMin();
      this.execute(ev);
      return ev;
    } finally {
      this.running = false;
    }
  }

  run(opts: RunOptions = {}): RunResult {
    const until = opts.until ?? Infinity;
    const maxEvents = opts.maxEvents ?? this.defaultMaxEvents;
    if (Number.isNaN(until)) throw new RangeError('scheduler.run: until is NaN');
    this.enter('run');
    this.stopRequested = false;
    let executed = 0;
    let reason: RunResult['reason'];
    try {
      for (;;) {
        if (this.heap.length === 0) {
          reason = 'idle';
          break;
        }
        if (this.heap[0].time > until) {
          reason = 'until';
          break;
        }
        if (executed >= maxEvents) {
          throw new SchedulerRunawayError(maxEvents, this.clock, this.peekLabels(5));
        }
        const ev = this.popMin();
        executed++;
        this.execute(ev);
        if (this.stopRequested || (opts.stopWhen !== undefined && opts.stopWhen())) {
          reason = 'stopped';
          break;
        }
      }
      if (reason !== 'stopped' && until !== Infinity && until > this.clock) this.clock = until;
      return { executed, reason };
    } finally {
      this.running = false;
      this.stopRequested = false;
    }
  }

  /** Removes a pending event (same as `handle.cancel()`); true when it was still pending. */
  cancel(handle: EventHandle): boolean {
    if (!(handle instanceof ScheduledEvent) || handle.owner !== this) return false;
    const ev = handle;
    const i = ev.index;
    if (i < 0 || this.heap[i] !== ev) return false;
    const last = this.heap.pop()!;
    ev.index = -1;
    if (last !== ev) {
      this.heap[i] = last;
      last.index = i;
      this.siftDown(i);
      this.siftUp(last.index);
    }
    return true;
  }

  private enter(what: string): void {
    if (this.running) throw new Error(`scheduler.${what} called from inside an event handler`);
    this.running = true;
  }

  private execute(ev: ScheduledEvent): void {
    this.clock = ev.time;
    this.executedTotal++;
    if (this.logging) this.log.push({ seq: ev.seq, time: ev.time, label: ev.label });
    try {
      ev.fn();
      // The array is replaced, never mutated, so a hook removing itself is safe here.
      const hooks = this.hooks;
      for (let i = 0; i < hooks.length; i++) hooks[i]!(ev);
    } catch (e) {
      throw new SchedulerEventError(ev.label, ev.time, ev.seq, e);
    }
  }

  private peekLabels(n: number): string[] {
    return [...this.heap]
      .sort((a, b) => (before(a, b) ? -1 : 1))
      .slice(0, n)
      .map((e) => e.label || `#${e.seq}`);
  }

  // ---- binary min-heap ---------------------------------------------------

  private push(ev: ScheduledEvent): void {
    ev.index = this.heap.length;
    this.heap.push(ev);
    this.siftUp(ev.index);
  }

  private popMin(): ScheduledEvent {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop()!;
    top.index = -1;
    if (last !== top) {
      heap[0] = last;
      last.index = 0;
      this.siftDown(0);
    }
    return top;
  }

  private siftUp(i: number): void {
    const heap = this.heap;
    const ev = heap[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p];
      if (!before(ev, parent)) break;
      heap[i] = parent;
      parent.index = i;
      i = p;
    }
    heap[i] = ev;
    ev.index = i;
  }

  private siftDown(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const ev = heap[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && before(heap[r], heap[l]) ? r : l;
      const child = heap[c];
      if (!before(child, ev)) break;
      heap[i] = child;
      child.index = i;
      i = c;
    }
    heap[i] = ev;
    ev.index = i;
  }
}
