import { readTraceFile } from '../sim/trace.ts';
import { annotateTraceMessage } from '../sim/trace.ts';
import { replayAsBackend } from '../endpoint/replay-backend.ts';
import { replayAsFrontend } from '../endpoint/replay-frontend.ts';
import { summarizeReplay, type ReplayReport, type ReplayStep } from '../endpoint/replay-report.ts';

/**
 * `vhostsim trace replay FILE --as backend|frontend`: the other side's captured
 * messages drive a model endpoint; each message the model sends is compared with the
 * captured one. Returns the report and the lines to print; the caller exits non-zero
 * on divergence.
 */
export interface TraceReplayOptions {
  as: 'backend' | 'frontend';
  profile?: string;
  /** Print matching steps too (default: only what is not a plain match). */
  verbose?: boolean;
}

const BACKEND_PROFILES = ['dpdk-22.11'];
const FRONTEND_PROFILES = ['virtio-user-22.11'];

export function traceReplay(file: string, opts: TraceReplayOptions): { report: ReplayReport; lines: string[] } {
  const records = readTraceFile(file);
  let report: ReplayReport;
  if (opts.as === 'backend') {
    const profile = opts.profile ?? 'dpdk-22.11';
    if (!BACKEND_PROFILES.includes(profile)) throw new Error(`unknown back-end profile '${profile}' (known: ${BACKEND_PROFILES.join(', ')})`);
    report = replayAsBackend(records);
  } else {
    const profile = opts.profile ?? 'virtio-user-22.11';
    if (!FRONTEND_PROFILES.includes(profile)) {
      throw new Error(`front-end profile '${profile}' cannot be replayed (replayable: ${FRONTEND_PROFILES.join(', ')}; the captures are of it)`);
    }
    report = replayAsFrontend(records, { profile: 'virtio-user-22.11' });
  }
  const lines: string[] = [];
  for (const step of report.steps) {
    if (step.verdict === 'match' && !opts.verbose) continue;
    lines.push(formatStep(step));
  }
  const s = summarizeReplay(report);
  lines.push(
    `${report.as} ${report.profile}: ${s.match} match, ${s['state-dependent']} state-dependent, ${s.differs} differ, ${s.missing} missing, ${s.extra} extra` +
      (report.diverged ? ' — DIVERGED' : ''),
  );
  return { report, lines };
}

function formatStep(step: ReplayStep): string {
  const m = step.expected ?? step.actual;
  const name = m ? annotateTraceMessage(m).name : '?';
  return `#${String(step.index).padStart(3)} s${step.session} ${step.verdict.padEnd(15)} ${name}${step.detail ? ': ' + step.detail : ''}`;
}
