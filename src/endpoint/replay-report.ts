import type { TraceMessageRecord } from '../sim/trace.ts';

/**
 * The outcome of replaying a real capture against a model endpoint: the other side's
 * captured messages are fed in, and each message the model sends is compared with the
 * captured one at the same place.
 */
export type ReplayVerdict =
  /** Same request, flags, payload bytes and fd count. */
  | 'match'
  /** The model sent something else (order, request, flags, payload or fd count). */
  | 'differs'
  /** Same request and flags, payload differs only in fields that depend on state the capture does not carry (addresses, ring indices after traffic, fd numbers). */
  | 'state-dependent'
  /** The capture has a message here that the model did not send. */
  | 'missing'
  /** The model sent a message the capture does not have. */
  | 'extra';

export interface ReplayStep {
  /** Position in the capture (record index) or, for `extra`, the index after which it appeared. */
  index: number;
  session: number;
  expected?: TraceMessageRecord;
  actual?: TraceMessageRecord;
  verdict: ReplayVerdict;
  /** Which field differs and how, or why the payload is state-dependent. */
  detail: string;
}

export interface ReplayReport {
  as: 'backend' | 'frontend';
  profile: string;
  steps: ReplayStep[];
  /** True when any step is `differs`, `missing` or `extra`. */
  diverged: boolean;
}

export function summarizeReplay(r: ReplayReport): Record<ReplayVerdict, number> {
  const out: Record<ReplayVerdict, number> = { match: 0, differs: 0, 'state-dependent': 0, missing: 0, extra: 0 };
  for (const s of r.steps) out[s.verdict]++;
  return out;
}
