import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloseInfo } from '../channel.ts';
import { openFdNumbers, osAvailability } from './libc.ts';
import type { RealFd, RealSocketFd } from './unix-socket.ts';

/** Helpers shared by the real-transport tests. */

const av = osAvailability();
/** Why the real-transport suites skip, or undefined when they run. */
export const skipReason: string | undefined = av.ok ? undefined : av.reason;

/** Resolves once `cond()` holds (checked every millisecond of event-loop time), or rejects after `ms`. */
export async function waitFor(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Lets the event loop turn a few times (for "nothing more arrives" checks). */
export async function settle(ms = 20): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Everything one end receives; closes received fds unless told to keep them. */
export class Inbox {
  readonly chunks: { bytes: Uint8Array; fds: RealFd[] }[] = [];
  closed: { info: CloseInfo; bytesBefore: number } | undefined;
  received = 0;

  constructor(
    readonly ch: RealSocketFd,
    private readonly keepFds = false,
  ) {
    ch.onData((bytes, fds) => {
      this.received += bytes.length;
      this.chunks.push({ bytes, fds: keepFds ? fds : [] });
      if (!keepFds) for (const f of fds) f.close();
    });
    ch.onClose((info) => {
      this.closed = { info, bytesBefore: this.received };
    });
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.received);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c.bytes, o);
      o += c.bytes.length;
    }
    return out;
  }

  fds(): RealFd[] {
    return this.chunks.flatMap((c) => c.fds);
  }
}

/** A private temp dir for socket paths, removed by `cleanup`. */
export function tempDir(prefix = 'vhostsim-real-'): { dir: string; path(name: string): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * fds of the kinds this transport opens (memfds, eventfds, sockets) opened since `before`,
 * from /proc/self/fd, as 'number -> target'. Other kinds are left out so that unrelated
 * activity in the process (a child's /dev/null, a worker pool's files) cannot fail a test.
 */
export function fdsOpenedSince(before: readonly number[]): string[] {
  const was = new Set(before);
  return openFdNumbers()
    .filter((n) => !was.has(n))
    .flatMap((n) => {
      try {
        const target = readlinkSync(`/proc/self/fd/${n}`);
        return /^(\/memfd:|anon_inode:\[eventfd\]|socket:)/.test(target) ? [`${n} -> ${target}`] : [];
      } catch {
        return []; // the directory handle of the listing itself, closed by now
      }
    });
}

/** Deterministic test bytes: byte i of message `seed` is (seed * 31 + i) & 0xff. */
export function pattern(seed: number, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (seed * 31 + i) & 0xff;
  return b;
}

/** Byte equality without vitest's element-by-element diffing (slow on megabytes). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
