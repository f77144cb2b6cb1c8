/**
 * `vhostsim tap --frontend SOCK --listen SOCK --out trace.jsonl`: sit between a real
 * front-end that listens on SOCK (virtio-user `server=1`, QEMU `server=on`) and a real
 * back-end in client mode pointed at the tap's socket, relay everything, record the trace.
 * Runs until SIGINT or SIGTERM, then closes both sides of every open session, removes its
 * socket and finishes the trace.
 */
import { VhostUserTap } from '../adapters/tap.ts';
import { TransportError } from '../transport/errors.ts';
import { realTransportAvailability } from '../transport/real/index.ts';

export interface TapCommandOptions {
  frontend: string;
  listen: string;
  out: string;
  /** Progress and warnings (stderr in the command). */
  log?: (line: string) => void;
}

/**
 * Starts the tap. `done` resolves with a summary once SIGINT/SIGTERM or `stop()` has shut it
 * down; the signal handlers are removed then, so a second Ctrl-C behaves as usual.
 */
export function runTap(o: TapCommandOptions): { tap: VhostUserTap; stop: () => void; done: Promise<string> } {
  const av = realTransportAvailability();
  if (!av.ok) throw new Error(`the real socket transport is not available here: ${av.reason}`);
  const log = o.log ?? (() => undefined);
  const tap = VhostUserTap.start({
    frontend: o.frontend,
    listen: o.listen,
    out: o.out,
    onWarning: (w) => log(`tap: ${w}`),
    onRecord: (r) => {
      if ('event' in r) log(`tap: session ${r.n} ${r.event === 'session' ? 'started' : 'closed'}`);
    },
  });
  if (tap instanceof TransportError) throw new Error(`cannot listen on ${o.listen}: ${tap.message}`);
  log(`tap: listening on ${o.listen}, relaying to ${o.frontend}, trace in ${o.out}`);
  let finish: (why: string) => void = () => undefined;
  const done = new Promise<string>((resolve) => {
    finish = (why) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      tap.stop();
      resolve(`tap: ${why}: stopped after ${tap.sessions} session(s), ${tap.messages} message(s)`);
    };
  });
  const onSignal = (sig: NodeJS.Signals): void => finish(sig);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { tap, stop: () => finish('stop'), done };
}
