/**
 * Checks that run after every scheduler event (and after every step action the runner does
 * outside an event), each keeping the FIRST violation with the event that caused it (DESIGN.md
 * "Invariants and properties"):
 *
 * - model invariants: memory safety (a ring / guest-memory error escaping model code), every new
 *   wire message well-formed (only the trace records added since the last check are read),
 *   trace complete (sessions open and close in pairs, no message outside one);
 * - protocol properties that can be judged as the run goes: ring well-formed, read from the
 *   rings in guest memory (`RingMonitor`), and features stable at each new connection.
 *
 * Cost: a handful of integer compares per event when nothing changed (trace length, escape and
 * connection counts, and per guest vring its generation plus two u16 loads); work is done only
 * for what is new, and nothing is allocated unless something new is seen.
 */
import { ringFeaturesOf } from '../endpoint/frontend/index.ts';
import type { Guest, GuestVring } from '../endpoint/frontend/guest.ts';
import type { TraceRecorder } from '../endpoint/trace-recorder.ts';
import { GuestMemoryError, type GuestMemory } from '../memory/index.ts';
import { RingError } from '../ring/errors.ts';
import { PACKED_DESC_F_AVAIL, PACKED_DESC_F_INDIRECT, PACKED_DESC_F_NEXT, PACKED_DESC_F_USED, PACKED_DESC_F_WRITE } from '../ring/packed/layout.ts';
import { translatePackedRing } from '../ring/packed/views.ts';
import { SPLIT_DESC_F_INDIRECT, SPLIT_DESC_F_NEXT, SPLIT_DESC_F_WRITE, splitAreaSizes } from '../ring/split/layout.ts';
import { areaViews } from '../ring/split/views.ts';
import type { EventRef, InvariantResult, Monitoring } from './results.ts';
import type { EventHandle, Scheduler } from './scheduler.ts';
import { checkTraceMessage, isMessageRecord, type TraceRecord } from './trace.ts';
import type { ConnectionStart, Observations } from './topology.ts';

/** The event (or step action) just run. One mutable object, reused: nothing allocated per event. */
export interface EventAt {
  t: number;
  label: string;
  /** Scheduler sequence number; undefined for a step action. */
  seq: number | undefined;
  /** Scenario step path for a step action. */
  step: string | undefined;
}

export type Violation = EventRef & { reason: string; evidence?: Record<string, unknown> };

/** The event reference for a violation found at `at` (copied: `at` is reused). */
export function refOf(at: EventAt, reason: string, extra: { traceLine?: number; evidence?: Record<string, unknown> } = {}): Violation {
  return {
    t: at.t,
    event: at.label === '' && at.seq !== undefined ? `#${at.seq}` : at.label,
    ...(extra.traceLine !== undefined ? { traceLine: extra.traceLine } : {}),
    ...(at.seq !== undefined ? { seq: at.seq } : {}),
    ...(at.step !== undefined ? { step: at.step } : {}),
    reason,
    ...(extra.evidence ? { evidence: extra.evidence } : {}),
  };
}

/** One check's tally: how many things it looked at and its first violation. */
export class Tally {
  checks = 0;
  first: Violation | undefined;
  fail(at: EventAt, reason: string, extra?: { traceLine?: number; evidence?: Record<string, unknown> }): void {
    if (this.first === undefined) this.first = refOf(at, reason, extra);
  }
}

/** Is this a memory-safety failure (ring or guest-memory error escaping as a crash)? */
export function isMemoryFault(e: unknown): boolean {
  let cur: unknown = e;
  for (let k = 0; k < 5 && cur !== undefined && cur !== null; k++) {
    if (cur instanceof RingError || cur instanceof GuestMemoryError) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

// ---- model invariants ---------------------------------------------------------------------

/** well-formed-messages and trace-complete over the records added since the last check. */
export class TraceMonitor {
  readonly messages = new Tally();
  readonly complete = new Tally();
  private next = 0;
  private readonly open = new Set<number>();
  private nextSession = 1;

  constructor(private readonly records: readonly TraceRecord[]) {}

  check(at: EventAt): void {
    if (this.records.length !== this.next) this.checkUpTo(at, this.records.length);
  }

  /** Checks records up to (not including) index `end`. */
  checkUpTo(at: EventAt, end: number): void {
    const recs = this.records;
    for (let i = this.next; i < end; i++) {
      const r = recs[i]!;
      this.complete.checks++;
      const line = i + 1;
      if (isMessageRecord(r)) {
        this.messages.checks++;
        const what = `${r.dir} request ${r.request}`;
        if (this.messages.first === undefined) {
          const c = checkTraceMessage(r);
          if (c.error) this.messages.fail(at, `${what}: ${c.error.message}`, { traceLine: line });
        }
        if (this.open.size === 0) this.complete.fail(at, `${what}: a message outside any open session`, { traceLine: line });
      } else if (r.event === 'session') {
        if (r.n !== this.nextSession) this.complete.fail(at, `session ${r.n} opened, expected ${this.nextSession}`, { traceLine: line });
        this.open.add(r.n);
        this.nextSession++;
      } else if (r.event === 'closed') {
        if (!this.open.delete(r.n)) this.complete.fail(at, `session ${r.n} closed but not open`, { traceLine: line });
      }
    }
    this.next = end;
  }
}

/** memory-safety (and the trace's end, for any other error that aborted the run) from the errors that escaped model code. */
export class EscapeMonitor {
  readonly memory = new Tally();
  /** A non-memory error aborted the run: the trace stops there. */
  readonly aborted = new Tally();
  private seen = 0;

  constructor(private readonly escaped: readonly { t: number; where: string; error: unknown }[]) {}

  check(at: EventAt): void {
    if (this.escaped.length !== this.seen) this.checkUpTo(at, this.escaped.length);
  }

  checkUpTo(at: EventAt, end: number): void {
    for (let i = this.seen; i < end; i++) {
      const e = this.escaped[i]!;
      if (isMemoryFault(e.error)) this.memory.fail(at, `${errText(e.error)} escaped model code`);
      else this.aborted.fail(at, `the run aborted (${errText(e.error)}): the trace stops there`);
    }
    this.seen = end;
  }
}

// ---- protocol properties judged per event ---------------------------------------------------

/** features-stable at each new connection: a reconnect of a VM process negotiates what its first connection did. */
export class FeaturesMonitor {
  readonly tally = new Tally();
  private seen = 0;
  private readonly firstOf = new Map<number, bigint>();

  constructor(private readonly connections: readonly ConnectionStart[]) {}

  check(at: EventAt): void {
    if (this.connections.length !== this.seen) this.checkUpTo(at, this.connections.length);
  }

  checkUpTo(at: EventAt, end: number): void {
    for (let i = this.seen; i < end; i++) {
      const c = this.connections[i]!;
      if (c.firstOfVm || !this.firstOf.has(c.vm)) {
        this.firstOf.set(c.vm, c.features);
        continue;
      }
      this.tally.checks++;
      const was = this.firstOf.get(c.vm)!;
      if (was !== c.features) {
        this.tally.fail(at, `vm${c.vm} connection ${c.connection} negotiated 0x${c.features.toString(16)}, first 0x${was.toString(16)}`, {
          evidence: { vm: c.vm, connection: c.connection },
        });
      }
    }
    this.seen = end;
  }
}

/** Remembers the event in which each element of an observation list appeared. */
export class AppendWatch {
  readonly at: EventAt[] = [];
  constructor(private readonly list: readonly unknown[]) {}
  check(at: EventAt): void {
    while (this.at.length < this.list.length) this.at.push({ ...at });
  }
}

const AVAIL = PACKED_DESC_F_AVAIL;
const USED = PACKED_DESC_F_USED;
const TWO_32 = 0x1_0000_0000;
/** Writable size of a chain the monitor could not walk (the device reports such chains itself). */
const UNKNOWN = Infinity;

/**
 * One guest vring as the monitor follows it in guest memory. Its own shadow of both sides:
 * what the driver has made available (and not yet got back) and where the device's used
 * entries have reached. Split: avail.idx / used.idx and the ring entries between the last
 * values seen. Packed (no indices in memory): the next slot the driver will make available and
 * the next slot the device will write used, each with its wrap counter, advanced by reading
 * descriptor flags.
 */
class VringWatch {
  readonly size: number;
  private readonly mask: number;
  readonly packed: boolean;
  private readonly inOrder: boolean;
  private readonly mem: GuestMemory;
  // split views
  private aU16!: Uint16Array;
  private aIdx = 0;
  private aRing = 0;
  private uU16!: Uint16Array;
  private uU32!: Uint32Array;
  private uIdx = 0;
  private uRing = 0;
  private dU16!: Uint16Array;
  private dU32!: Uint32Array;
  private d16 = 0;
  private d32 = 0;
  // shadow positions
  availSeen = 0;
  usedSeen = 0;
  availWrap = true;
  usedWrap = true;
  /** Per head / buffer id: split, times available and not yet used; packed, its descriptor count (0: not outstanding). */
  private readonly outstanding: Uint16Array;
  private readonly writable: Float64Array;
  /** IN_ORDER: ids in the order made available. */
  private readonly fifo: Uint16Array;
  private fifoHead = 0;
  private fifoCount = 0;
  /** Buffers available and not yet used. */
  inFlight = 0;
  /** Descriptors of the buffers the last `takeUsed` covered (packed: how far the used slot moves). */
  private descsTaken = 0;

  constructor(
    readonly vm: number,
    readonly vring: number,
    readonly guest: Guest,
    readonly generation: number,
  ) {
    const l = guest.vring(vring).layout!;
    this.mem = guest.memory;
    this.size = l.size;
    this.mask = l.size - 1;
    this.packed = l.kind === 'packed';
    this.inOrder = ringFeaturesOf(guest.features).inOrder;
    this.outstanding = new Uint16Array(l.size);
    this.writable = new Float64Array(l.size);
    this.fifo = new Uint16Array(l.size);
    if (l.kind === 'split') {
      const sizes = splitAreaSizes(l.size, false);
      const d = areaViews(this.mem, l.desc, sizes.desc, 4, 'descriptor table');
      const a = areaViews(this.mem, l.avail, sizes.avail, 2, 'avail ring');
      const u = areaViews(this.mem, l.used, sizes.used, 4, 'used ring');
      this.dU16 = d.u16;
      this.dU32 = d.u32;
      this.d16 = d.base16;
      this.d32 = d.base32;
      this.aU16 = a.u16;
      this.aIdx = a.base16 + 1;
      this.aRing = a.base16 + 2;
      this.uU16 = u.u16;
      this.uU32 = u.u32;
      this.uIdx = u.base16 + 1;
      this.uRing = u.base32 + 1;
    } else {
      const v = translatePackedRing(this.mem, l);
      this.dU16 = v.d16;
      this.dU32 = v.d32;
      this.d16 = v.desc16;
      this.d32 = v.desc32;
    }
  }

  /** Is `id` available to the device and not yet used (for tests that poke a bad one). */
  isOutstanding(id: number): boolean {
    return id < this.size && this.outstanding[id]! > 0;
  }

  check(at: EventAt, t: Tally): void {
    if (this.packed) this.checkPacked(at, t);
    else this.checkSplit(at, t);
  }

  private where(): string {
    return `vm${this.vm} vring ${this.vring}`;
  }

  // ---- split ------------------------------------------------------------------------------

  private checkSplit(at: EventAt, t: Tally): void {
    const a = this.aU16[this.aIdx]!;
    const u = this.uU16[this.uIdx]!;
    if (a === this.availSeen && u === this.usedSeen) return;
    t.checks++;
    const size = this.size;
    if (a !== this.availSeen) {
      const n = (a - this.availSeen) & 0xffff;
      if (n > size) {
        t.fail(at, `${this.where()}: avail.idx moved from ${this.availSeen} to ${a}: backwards or more than the ring size (${size}) at once`, { evidence: this.ev() });
      } else {
        for (let k = 0; k < n; k++) {
          const head = this.aU16[this.aRing + ((this.availSeen + k) & this.mask)]!;
          if (head >= size) {
            t.fail(at, `${this.where()}: avail ring entry ${(this.availSeen + k) & 0xffff} holds head ${head}, outside a ring of ${size}`, { evidence: this.ev() });
            continue;
          }
          this.addAvail(head, this.splitWritable(head));
        }
      }
      this.availSeen = a;
    }
    if (u !== this.usedSeen) {
      const n = (u - this.usedSeen) & 0xffff;
      if (n > size) {
        t.fail(at, `${this.where()}: used.idx moved from ${this.usedSeen} to ${u}: backwards or more than the ring size (${size}) at once`, { evidence: this.ev() });
      } else {
        let k = 0;
        while (k < n) {
          const e = this.uRing + 2 * ((this.usedSeen + k) & this.mask);
          const id = this.uU32[e]!;
          const len = this.uU32[e + 1]!;
          const covered = this.takeUsed(at, t, id, len, (this.usedSeen + k) & 0xffff, n - k);
          k += covered > 0 ? covered : 1;
        }
      }
      this.usedSeen = u;
    }
    // Both indices free-running u16: the device can never have used more than was made available.
    if (((a - u) & 0xffff) > size) t.fail(at, `${this.where()}: used.idx ${u} and avail.idx ${a} are more than the ring size (${size}) apart (used ahead of avail)`, { evidence: this.ev() });
  }

  /** Device-writable bytes of the split chain at `head` (descriptor table or indirect table). */
  private splitWritable(head: number): number {
    const size = this.size;
    let i = head;
    let w = 0;
    for (let n = 0; n < size; n++) {
      const len = this.dU32[this.d32 + 4 * i + 2]!;
      const flags = this.dU16[this.d16 + 8 * i + 6]!;
      if ((flags & SPLIT_DESC_F_INDIRECT) !== 0) {
        const addr = this.dU32[this.d32 + 4 * i]! + this.dU32[this.d32 + 4 * i + 1]! * TWO_32;
        return this.indirectWritable(addr, len, SPLIT_DESC_F_WRITE, 12);
      }
      if ((flags & SPLIT_DESC_F_WRITE) !== 0) w += len;
      if ((flags & SPLIT_DESC_F_NEXT) === 0) return w;
      i = this.dU16[this.d16 + 8 * i + 7]!;
      if (i >= size) return UNKNOWN;
    }
    return UNKNOWN;
  }

  /** Sums the writable descriptors of an indirect table (flags at `flagsOff` in each 16-byte entry). */
  private indirectWritable(addr: number, len: number, writeBit: number, flagsOff: number): number {
    if (len === 0 || len % 16 !== 0 || len / 16 > this.size) return UNKNOWN;
    try {
      let w = 0;
      for (let o = 0; o < len; o += 16) if ((this.mem.readU16(addr + o + flagsOff) & writeBit) !== 0) w += this.mem.readU32(addr + o + 8);
      return w;
    } catch (e) {
      if (e instanceof GuestMemoryError) return UNKNOWN;
      throw e;
    }
  }

  // ---- packed -----------------------------------------------------------------------------

  private checkPacked(at: EventAt, t: Tally): void {
    const d16 = this.dU16;
    const f16 = this.d16 + 7;
    const fa = d16[f16 + this.availSeen * 8]!;
    const fu = d16[f16 + this.usedSeen * 8]!;
    const wa = this.availWrap;
    const wu = this.usedWrap;
    const newAvail = ((fa & AVAIL) !== 0) === wa && ((fa & USED) !== 0) !== wa;
    const newUsed = ((fu & AVAIL) !== 0) === wu && ((fu & USED) !== 0) === wu;
    if (!newAvail && !newUsed) {
      // Waiting at the used position: while buffers are out, that slot is available for the used wrap counter.
      if (this.inFlight > 0 && !(((fu & AVAIL) !== 0) === wu && ((fu & USED) !== 0) !== wu)) this.badFlags(at, t, fu);
      return;
    }
    t.checks++;
    if (newAvail) this.scanAvailPacked(at, t);
    this.scanUsedPacked(at, t);
  }

  private badFlags(at: EventAt, t: Tally, flags: number): void {
    if (t.first !== undefined) return;
    t.checks++;
    t.fail(at, `${this.where()}: slot ${this.usedSeen} has flags 0x${flags.toString(16)} (AVAIL ${+((flags & AVAIL) !== 0)}, USED ${+((flags & USED) !== 0)}), neither available nor used for the used wrap counter ${+this.usedWrap} while ${this.inFlight} buffers are out`, { evidence: this.ev() });
  }

  private scanAvailPacked(at: EventAt, t: Tally): void {
    const size = this.size;
    const d16 = this.dU16;
    const d32 = this.dU32;
    for (let guard = 0; guard < size; guard++) {
      const pos = this.availSeen;
      const wrap = this.availWrap;
      const f = d16[this.d16 + pos * 8 + 7]!;
      if (!(((f & AVAIL) !== 0) === wrap && ((f & USED) !== 0) !== wrap)) return;
      // Walk the chain (spec "Next Flag: Descriptor Chaining"): the buffer id sits in its last descriptor.
      let p = pos;
      let w = wrap;
      let count = 0;
      let writable = 0;
      let id = -1;
      for (;;) {
        const fl = d16[this.d16 + p * 8 + 7]!;
        count++;
        if ((fl & PACKED_DESC_F_INDIRECT) !== 0) {
          const addr = d32[this.d32 + p * 4]! + d32[this.d32 + p * 4 + 1]! * TWO_32;
          writable = this.indirectWritable(addr, d32[this.d32 + p * 4 + 2]!, PACKED_DESC_F_WRITE, 14);
          id = d16[this.d16 + p * 8 + 6]!;
          break;
        }
        if ((fl & PACKED_DESC_F_WRITE) !== 0) writable += d32[this.d32 + p * 4 + 2]!;
        if ((fl & PACKED_DESC_F_NEXT) === 0) {
          id = d16[this.d16 + p * 8 + 6]!;
          break;
        }
        if (count >= size) return; // a chain as long as the ring: the device refuses it
        if (++p === size) {
          p = 0;
          w = !w;
        }
        const nf = d16[this.d16 + p * 8 + 7]!;
        // A partial chain is not published yet (the head's flags go last); the device refuses a broken one.
        if (!(((nf & AVAIL) !== 0) === w && ((nf & USED) !== 0) !== w)) return;
      }
      if (id >= size) {
        t.fail(at, `${this.where()}: slot ${pos} made available with buffer id ${id}, outside a ring of ${size}`, { evidence: this.ev() });
        return;
      }
      if (this.outstanding[id] !== 0) {
        t.fail(at, `${this.where()}: slot ${pos} made buffer id ${id} available while it was still out (not used)`, { evidence: this.ev() });
        return;
      }
      this.outstanding[id] = count;
      this.writable[id] = writable;
      this.pushFifo(id);
      this.inFlight++;
      let np = pos + count;
      if (np >= size) {
        np -= size;
        this.availWrap = !this.availWrap;
      }
      this.availSeen = np;
    }
  }

  private scanUsedPacked(at: EventAt, t: Tally): void {
    const size = this.size;
    const d16 = this.dU16;
    for (let guard = 0; guard < size; guard++) {
      const pos = this.usedSeen;
      const wu = this.usedWrap;
      const f = d16[this.d16 + pos * 8 + 7]!;
      if (!(((f & AVAIL) !== 0) === wu && ((f & USED) !== 0) === wu)) {
        if (this.inFlight > 0 && !(((f & AVAIL) !== 0) === wu && ((f & USED) !== 0) !== wu)) this.badFlags(at, t, f);
        return;
      }
      const id = d16[this.d16 + pos * 8 + 6]!;
      // "Element Address and Length": len is meaningful only with WRITE.
      const len = (f & PACKED_DESC_F_WRITE) !== 0 ? this.dU32[this.d32 + pos * 4 + 2]! : 0;
      const covered = this.takeUsed(at, t, id, len, pos, this.inFlight);
      if (covered === 0) return; // not a buffer that was out: reported; stop following this ring
      let np = pos + this.descsTaken;
      if (np >= size) {
        np -= size;
        this.usedWrap = !this.usedWrap;
      }
      this.usedSeen = np;
    }
  }

  // ---- both -------------------------------------------------------------------------------

  private addAvail(id: number, writable: number): void {
    this.outstanding[id]++;
    this.writable[id] = writable;
    this.pushFifo(id);
    this.inFlight++;
  }

  private pushFifo(id: number): void {
    if (!this.inOrder) return;
    if (this.fifoCount === this.size) return;
    let tail = this.fifoHead + this.fifoCount;
    if (tail >= this.size) tail -= this.size;
    this.fifo[tail] = id;
    this.fifoCount++;
  }

  /**
   * A used element with `id` and `len`: the buffer must be out (made available, not used
   * since) and `len` within its writable bytes. IN_ORDER: one element may stand for a batch
   * ending at `id` (spec "In-order use of descriptors"); at most `limit` buffers. Returns the
   * buffers it covers (0: a violation was reported) and leaves their descriptor count in `descsTaken`.
   */
  private takeUsed(at: EventAt, t: Tally, id: number, len: number, pos: number, limit: number): number {
    this.descsTaken = 0;
    if (this.inOrder && this.fifoCount > 0) {
      let j = -1;
      const m = Math.min(this.fifoCount, Math.max(limit, 1), this.size);
      for (let k = 0; k < m; k++) {
        let p = this.fifoHead + k;
        if (p >= this.size) p -= this.size;
        if (this.fifo[p] === id) {
          j = k;
          break;
        }
      }
      if (j < 0) {
        t.fail(at, `${this.where()}: ${this.usedWhat(pos)} carries id ${id}, which is not among the next buffers out in order (IN_ORDER)`, { evidence: this.ev(id, len) });
        return 0;
      }
      for (let k = 0; k <= j; k++) {
        const x = this.fifo[this.fifoHead]!;
        if (++this.fifoHead === this.size) this.fifoHead = 0;
        this.fifoCount--;
        if (k === j && len > this.writable[x]!) {
          t.fail(at, `${this.where()}: ${this.usedWhat(pos)} says ${len} bytes written to id ${x}, which has ${this.writable[x]} device-writable bytes`, { evidence: this.ev(id, len) });
        }
        this.descsTaken += this.outstanding[x]!;
        this.release(x);
      }
      return j + 1;
    }
    if (id >= this.size || this.outstanding[id] === 0) {
      t.fail(at, `${this.where()}: ${this.usedWhat(pos)} carries id ${id}, which ${id >= this.size ? `is outside a ring of ${this.size}` : 'was not made available or was already used'}`, { evidence: this.ev(id, len) });
      return 0;
    }
    if (len > this.writable[id]!) {
      t.fail(at, `${this.where()}: ${this.usedWhat(pos)} says ${len} bytes written to id ${id}, which has ${this.writable[id]} device-writable bytes`, { evidence: this.ev(id, len) });
    }
    this.descsTaken = this.outstanding[id]!;
    this.release(id);
    return 1;
  }

  /** Names a used element, for a report only. */
  private usedWhat(pos: number): string {
    return this.packed ? `used slot ${pos}` : `used entry ${pos}`;
  }

  private release(id: number): void {
    if (this.packed) this.outstanding[id] = 0;
    else this.outstanding[id]--;
    this.inFlight--;
  }

  private ev(id?: number, len?: number): Record<string, unknown> {
    return {
      vm: this.vm,
      vring: this.vring,
      ring: this.packed ? 'packed' : 'split',
      ...(this.packed
        ? { availPos: { idx: this.availSeen, wrap: this.availWrap }, usedPos: { idx: this.usedSeen, wrap: this.usedWrap } }
        : { availIdx: this.availSeen, usedIdx: this.usedSeen }),
      inFlight: this.inFlight,
      ...(id !== undefined ? { id } : {}),
      ...(len !== undefined ? { len } : {}),
    };
  }
}

/** Where the VMs are: the topology's `vms` (each with its front-end's guest). */
export interface GuestSource {
  readonly vms: readonly ({ readonly fe: { readonly guest: Guest } } | undefined)[];
}

/**
 * ring-well-formed, judged after every event on every guest vring that has been set up
 * (DESIGN.md): the device only uses what the driver made available; a used id was available and
 * not already used; used length ≤ the chain's writable bytes; split indices never move backwards
 * or more than the ring size apart; packed used slots carry flags that agree with the wrap
 * counters. It reads only guest memory, as a second driver would, so it holds any device
 * implementation to the ring format, not to its own bookkeeping.
 */
export class RingMonitor {
  readonly tally = new Tally();
  /** Per VM: the guest followed, its vrings (stable objects whose `generation` moves) and their watches. */
  private readonly rows: { guest: Guest | undefined; vrings: readonly GuestVring[]; watches: (VringWatch | undefined)[] }[] = [];

  constructor(private readonly src: GuestSource) {}

  check(at: EventAt): void {
    const vms = this.src.vms;
    const rows = this.rows;
    while (rows.length < vms.length) rows.push({ guest: undefined, vrings: [], watches: [] });
    for (let i = 0; i < vms.length; i++) {
      const v = vms[i];
      const row = rows[i]!;
      if (v === undefined) {
        if (row.guest !== undefined) rows[i] = { guest: undefined, vrings: [], watches: [] };
        continue;
      }
      const g = v.fe.guest;
      if (row.guest !== g) {
        row.guest = g;
        row.vrings = g.vrings;
        row.watches = [];
      }
      const vrings = row.vrings;
      const watches = row.watches;
      for (let r = 0; r < vrings.length; r++) {
        const gv = vrings[r]!;
        let w = watches[r];
        if (w === undefined || w.generation !== gv.generation) {
          // A new guest or a rebuilt ring: indices start at 0 (wrap 1) again.
          w = watches[r] = gv.layout !== undefined ? new VringWatch(i, r, g, gv.generation) : undefined;
          if (w === undefined) continue;
        }
        w.check(at, this.tally);
      }
    }
  }

  /** The watch of one vring (tests and loss accounting). */
  watch(vm: number, vring: number): { readonly packed: boolean; readonly size: number; readonly inFlight: number; readonly availSeen: number; readonly usedSeen: number; readonly availWrap: boolean; readonly usedWrap: boolean; isOutstanding(id: number): boolean } | undefined {
    return this.rows[vm]?.watches[vring];
  }
}

// ---- the set --------------------------------------------------------------------------------

export interface MonitorTargets {
  recorder: TraceRecorder | { readonly records: readonly TraceRecord[] };
  obs: Observations;
  guests: GuestSource;
}

/** The per-event checks of one run, run after every event through `Scheduler.afterEach`. */
export class RunMonitors {
  readonly at: EventAt = { t: 0, label: '', seq: undefined, step: undefined };
  events = 0;
  steps = 0;
  readonly trace: TraceMonitor;
  readonly escapes: EscapeMonitor;
  readonly rings: RingMonitor;
  readonly features: FeaturesMonitor;
  /** The event each ring error, resume and connection was observed in. */
  readonly ringErrorAt: AppendWatch;
  readonly resumeAt: AppendWatch;
  readonly connectionAt: AppendWatch;

  // The lists the monitors read, each in its own field: summing their lengths after every event
  // then reads `.length` at five monomorphic sites instead of one megamorphic one.
  private readonly l0: readonly unknown[];
  private readonly l1: readonly unknown[];
  private readonly l2: readonly unknown[];
  private readonly l3: readonly unknown[];
  private readonly l4: readonly unknown[];
  /** Total length of the lists the monitors read: they only grow, so an unchanged total means nothing new. */
  private listTotal = 0;

  constructor(targets: MonitorTargets) {
    const o = targets.obs;
    this.l0 = targets.recorder.records;
    this.l1 = o.escaped;
    this.l2 = o.connections;
    this.l3 = o.resumes;
    this.l4 = o.ringErrors;
    this.trace = new TraceMonitor(targets.recorder.records);
    this.escapes = new EscapeMonitor(targets.obs.escaped);
    this.rings = new RingMonitor(targets.guests);
    this.features = new FeaturesMonitor(targets.obs.connections);
    this.ringErrorAt = new AppendWatch(targets.obs.ringErrors);
    this.resumeAt = new AppendWatch(targets.obs.resumes);
    this.connectionAt = new AppendWatch(targets.obs.connections);
  }

  /** Hooks the checks into `sched`; returns the remover. */
  install(sched: Scheduler): () => void {
    return sched.afterEach(this.afterEvent);
  }

  private readonly afterEvent = (ev: EventHandle): void => {
    const at = this.at;
    at.t = ev.time;
    at.label = ev.label; // an unlabelled event is named `#seq` only if reported (refOf)
    at.seq = ev.seq;
    at.step = undefined;
    this.events++;
    this.run();
  };

  /** After an event whose handler threw (the scheduler's hooks did not run for it). */
  afterFailedEvent(label: string, t: number, seq: number): void {
    const at = this.at;
    at.t = t;
    at.label = label === '' ? `#${seq}` : label;
    at.seq = seq;
    at.step = undefined;
    this.events++;
    this.run();
  }

  /** After a step's own action (outside any event): what it changed is attributed to the step. */
  afterStep(t: number, path: string, what: string): void {
    const at = this.at;
    at.t = t;
    at.label = `step ${path} (${what})`;
    at.seq = undefined;
    at.step = path;
    this.steps++;
    this.run();
  }

  private run(): void {
    const at = this.at;
    const total = this.l0.length + this.l1.length + this.l2.length + this.l3.length + this.l4.length;
    if (total !== this.listTotal) {
      this.listTotal = total;
      this.escapes.check(at);
      this.trace.check(at);
      this.features.check(at);
      this.ringErrorAt.check(at);
      this.resumeAt.check(at);
      this.connectionAt.check(at);
    }
    this.rings.check(at);
  }

  /** The model invariants as checked so far (determinism: see checkModelInvariants). */
  invariants(): InvariantResult[] {
    return modelInvariantResults(this.escapes, this.trace, 'every-event', this.events + this.steps);
  }

  monitoring(endOfRun: string[]): Monitoring {
    return {
      checkedAfterEveryEvent: this.events,
      checkedAfterSteps: this.steps,
      perEvent: ['memory-safety', 'well-formed-messages', 'trace-complete', 'ring-well-formed', 'features-stable'],
      endOfRun,
    };
  }
}

/** memory-safety, well-formed-messages, trace-complete and (unchecked) deterministic from the tallies. */
export function modelInvariantResults(esc: EscapeMonitor, tr: TraceMonitor, when: 'every-event' | 'end-of-run', memoryChecks: number): InvariantResult[] {
  const one = (name: InvariantResult['name'], tally: Tally, checks: number, extra?: Violation): InvariantResult => {
    const first = tally.first ?? extra;
    return first ? { name, verdict: 'violated', checks, checkedAfter: when, firstViolation: first } : { name, verdict: 'holds', checks, checkedAfter: when };
  };
  return [
    one('memory-safety', esc.memory, memoryChecks),
    one('well-formed-messages', tr.messages, tr.messages.checks),
    one('trace-complete', tr.complete, tr.complete.checks, esc.aborted.first),
    { name: 'deterministic', verdict: 'holds', checks: 0 },
  ];
}
