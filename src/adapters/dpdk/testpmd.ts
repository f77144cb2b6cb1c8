/**
 * A dpdk-testpmd process: spawned under `stdbuf -oL` (its stdout through a pipe is otherwise
 * block-buffered), every output line kept with a timestamp, commands typed at the
 * `testpmd> ` prompt, and a guarantee that nothing outlives the owner: `quit()` falls back to
 * SIGKILL, `kill()` is the crash case, and any process still running when Node exits is
 * killed. EAL runtime dirs are removed after exit.
 *
 * Timeouts here bound how long a real process may take; they are not part of any model.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { parsePortStats, parseForwardStats, type PortStats, type ForwardStats } from './stats.ts';
import { parseVhostLog, type VhostLog } from './vhost-log.ts';
import { removeRuntimeDir } from './runtime.ts';
import { which } from './find.ts';

export interface OutputLine {
  /** Milliseconds since the Unix epoch, sub-millisecond resolution (comparable across processes). */
  t: number;
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface TestpmdLaunchOptions {
  /** The testpmd executable. */
  testpmd: string;
  /** Its argv (see `testpmdArgs`). */
  args: readonly string[];
  /** A label for messages and echoed output. */
  name?: string;
  /** The stdbuf executable; `false` spawns testpmd directly (output may then arrive late). */
  stdbuf: string | false;
  /**
   * util-linux `setpriv`, used as `setpriv --pdeathsig KILL` so testpmd dies with this
   * process even when Node is killed outright (a virtio-user server waiting for its client
   * reads no stdin and would otherwise live on). Found on $PATH when not given; `false`
   * to do without.
   */
  setpriv?: string | false;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called for every output line as it arrives. */
  onLine?: (line: OutputLine, proc: Testpmd) => void;
  /** Echo output to stderr, prefixed with the name (also with $VHOSTSIM_DPDK_ECHO=1). */
  echo?: boolean;
  /** Remove the EAL runtime dir of the `--file-prefix` after exit; true by default. */
  removeRuntimeDir?: boolean;
}

export interface WaitOptions {
  /** Liveness bound; 15 s by default. */
  timeoutMs?: number;
  /** Only lines at this index or later (see `mark()`); 0 by default. */
  since?: number;
  stream?: 'stdout' | 'stderr';
}

export interface CommandResult {
  command: string;
  /** Output lines between the command and the next prompt, the echo removed. */
  lines: string[];
  /** Index of the first of them in `Testpmd.lines`. */
  from: number;
}

const PROMPT = 'testpmd> ';

/** Everything still running, so the exit hook can kill it. */
const live = new Set<Testpmd>();
let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  // 'exit' handlers must be synchronous: SIGKILL and remove runtime dirs, nothing more.
  process.once('exit', () => {
    for (const p of live) p.killSync();
  });
}

/** Kill every testpmd this process started that is still running (e.g. in afterAll). */
export async function killAllTestpmds(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}

/** Testpmd processes started by this process and still running. */
export function liveTestpmds(): Testpmd[] {
  return [...live];
}

interface Waiter {
  test: (l: OutputLine) => boolean;
  since: number;
  resolve: (i: number) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  what: string;
}

function filePrefixOf(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a.startsWith('--file-prefix=')) return a.slice('--file-prefix='.length);
    if (a === '--file-prefix') return args[i + 1];
  }
  return undefined;
}

export class Testpmd {
  readonly name: string;
  readonly args: readonly string[];
  readonly filePrefix: string | undefined;
  /** The argv actually spawned (with stdbuf in front when used). */
  readonly commandLine: readonly string[];
  readonly pid: number;
  readonly startedAt: number;
  /** All output lines so far, stdout and stderr in arrival order. */
  readonly lines: OutputLine[] = [];
  /** `testpmd> ` prompts seen so far. */
  prompts = 0;
  exitInfo: ExitInfo | undefined;
  /** Resolves when the process has exited (and its runtime dir is gone). */
  readonly exited: Promise<ExitInfo>;

  private readonly child: ChildProcessWithoutNullStreams;
  private readonly opts: TestpmdLaunchOptions;
  private waiters: Waiter[] = [];
  private promptWaiters: Array<{ n: number; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  private partial = { stdout: '', stderr: '' };
  /** Absolute stdout offset of the current partial line, and of the first uncounted char. */
  private stdoutLineStart = 0;
  private promptCountedTo = 0;
  /** The start of a prompt another thread's output split off (see `countPrompts`). */
  private promptHead = '';
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(opts: TestpmdLaunchOptions) {
    this.opts = opts;
    this.name = opts.name ?? 'testpmd';
    this.args = [...opts.args];
    this.filePrefix = filePrefixOf(opts.args);
    const setpriv = opts.setpriv === undefined ? which('setpriv') : opts.setpriv;
    this.commandLine = [
      ...(setpriv ? [setpriv, '--pdeathsig', 'KILL', '--'] : []),
      ...(opts.stdbuf ? [opts.stdbuf, '-oL', '-eL'] : []),
      opts.testpmd,
      ...opts.args,
    ];
    this.startedAt = now();
    this.child = spawn(this.commandLine[0]!, this.commandLine.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    // Spawn failures arrive as an 'error' event; without a listener they would crash Node.
    this.child.on('error', () => {});
    if (this.child.pid === undefined) throw new Error(`${this.name}: could not spawn ${this.commandLine[0]}`);
    this.pid = this.child.pid;
    live.add(this);
    installExitHook();
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => this.onData('stdout', d));
    this.child.stderr.on('data', (d: string) => this.onData('stderr', d));
    // A write after exit gives EPIPE; exit is reported through `exited` instead.
    this.child.stdin.on('error', () => {});
    this.exited = new Promise<ExitInfo>((resolve) => {
      // 'close' comes after the exit and after the pipes are drained, so 'Bye...' is kept.
      this.child.once('close', (code, signal) => {
        this.flushPartials();
        const info = { code, signal };
        this.exitInfo = info;
        live.delete(this);
        if ((this.opts.removeRuntimeDir ?? true) && this.filePrefix) removeRuntimeDir(this.filePrefix);
        const err = new Error(`${this.name} exited (${signal ?? `code ${code}`})`);
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(new Error(`${err.message} before ${w.what}\n${this.tail()}`));
        }
        this.waiters = [];
        for (const w of this.promptWaiters) {
          clearTimeout(w.timer);
          w.reject(new Error(`${err.message} while waiting for the prompt\n${this.tail()}`));
        }
        this.promptWaiters = [];
        resolve(info);
      });
    });
  }

  /** Spawn testpmd. Returns at once; use `waitFor` for start-up milestones. */
  static launch(opts: TestpmdLaunchOptions): Testpmd {
    return new Testpmd(opts);
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** Current line count: pass as `since` to wait only for what comes next. */
  mark(): number {
    return this.lines.length;
  }

  /** Output text (optionally from a line index), for error messages and logs. */
  text(since = 0): string {
    return this.lines
      .slice(since)
      .map((l) => l.text)
      .join('\n');
  }

  /** The last n lines, for error messages. */
  tail(n = 25): string {
    return this.lines
      .slice(-n)
      .map((l) => `  [${this.name}] ${l.text}`)
      .join('\n');
  }

  private onData(stream: 'stdout' | 'stderr', chunk: string): void {
    let buf = this.partial[stream] + chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const raw = buf.slice(0, nl).replace(/\r$/, '');
      if (stream === 'stdout') {
        this.countPrompts(raw, true);
        this.stdoutLineStart += nl + 1;
      }
      this.push(stream, raw);
      buf = buf.slice(nl + 1);
    }
    this.partial[stream] = buf;
    // The prompt has no newline: count it while it is still a partial line.
    if (stream === 'stdout') this.countPrompts(buf, false);
  }

  private countPromptAt(abs: number, len: number): void {
    if (abs < this.promptCountedTo) return;
    this.prompts += 1;
    this.promptCountedTo = abs + len;
  }

  /**
   * Count `testpmd> ` prompts at the start of the current stdout line, each once. A forwarding
   * lcore printing whole lines (`set verbose 1`) can land inside the prompt the main lcore is
   * writing: `t` + `port 0/queue 0: received …` lines + `estpmd> `. The head of such a split
   * prompt is kept until a line starts with the rest of it.
   */
  private countPrompts(line: string, complete: boolean): void {
    let off = 0;
    const rest = this.promptHead === '' ? '' : PROMPT.slice(this.promptHead.length);
    if (rest !== '' && line.startsWith(rest)) {
      this.countPromptAt(this.stdoutLineStart, rest.length);
      off = rest.length;
      if (complete) this.promptHead = '';
    }
    while (line.startsWith(PROMPT, off)) {
      this.countPromptAt(this.stdoutLineStart + off, PROMPT.length);
      off += PROMPT.length;
    }
    if (complete && off === 0) {
      let k = Math.min(line.length, PROMPT.length - 1);
      while (k > 0 && !PROMPT.startsWith(line.slice(0, k))) k--;
      if (k > 0) this.promptHead = line.slice(0, k);
    }
    if (this.promptWaiters.length) {
      const ready = this.promptWaiters.filter((w) => this.prompts >= w.n);
      this.promptWaiters = this.promptWaiters.filter((w) => this.prompts < w.n);
      for (const w of ready) {
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  }

  private flushPartials(): void {
    for (const s of ['stdout', 'stderr'] as const) {
      if (this.partial[s]) this.push(s, this.partial[s]);
      this.partial[s] = '';
    }
  }

  private push(stream: 'stdout' | 'stderr', text: string): void {
    const line: OutputLine = { t: now(), stream, text };
    const index = this.lines.length;
    this.lines.push(line);
    if (this.opts.echo || process.env.VHOSTSIM_DPDK_ECHO === '1') process.stderr.write(`[${this.name}] ${text}\n`);
    this.opts.onLine?.(line, this);
    if (!this.waiters.length) return;
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (index >= w.since && w.test(line)) {
        clearTimeout(w.timer);
        w.resolve(index);
      } else keep.push(w);
    }
    this.waiters = keep;
  }

  /**
   * Wait for an output line matching `pattern` (a substring or a RegExp). Lines already
   * received (from `since`) count. Resolves with the line's index; rejects on timeout or
   * exit, with the tail of the output.
   */
  waitFor(pattern: string | RegExp, opts: WaitOptions = {}): Promise<number> {
    const test = (l: OutputLine): boolean =>
      (opts.stream === undefined || l.stream === opts.stream) && (typeof pattern === 'string' ? l.text.includes(pattern) : pattern.test(l.text));
    const since = opts.since ?? 0;
    for (let i = since; i < this.lines.length; i++) if (test(this.lines[i]!)) return Promise.resolve(i);
    const what = typeof pattern === 'string' ? JSON.stringify(pattern) : String(pattern);
    if (!this.running) return Promise.reject(new Error(`${this.name} has exited; ${what} never came\n${this.tail()}`));
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise<number>((resolve, reject) => {
      const w: Waiter = {
        test,
        since,
        resolve,
        reject,
        what,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms\n${this.tail()}`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Wait until at least `n` prompts have been printed. */
  waitForPrompt(n = 1, timeoutMs = 15_000): Promise<void> {
    if (this.prompts >= n) return Promise.resolve();
    if (!this.running) return Promise.reject(new Error(`${this.name} has exited; no prompt\n${this.tail()}`));
    return new Promise<void>((resolve, reject) => {
      const w = {
        n,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.promptWaiters = this.promptWaiters.filter((x) => x !== w);
          reject(new Error(`${this.name}: no prompt within ${timeoutMs} ms\n${this.tail()}`));
        }, timeoutMs),
      };
      this.promptWaiters.push(w);
    });
  }

  /** Write raw text to testpmd's stdin. */
  write(text: string): void {
    if (!this.running) throw new Error(`${this.name} has exited`);
    this.child.stdin.write(text);
  }

  /**
   * Type a command at the prompt and wait for the next prompt. Commands are serialised;
   * the first waits for start-up to reach the prompt.
   */
  command(cmd: string, timeoutMs = 15_000): Promise<CommandResult> {
    if (cmd.includes('\n')) throw new Error('one command per call');
    const run = async (): Promise<CommandResult> => {
      await this.waitForPrompt(1, timeoutMs);
      const from = this.lines.length;
      const n = this.prompts;
      this.write(cmd + '\n');
      await this.waitForPrompt(n + 1, timeoutMs);
      const out = this.lines.slice(from).filter((l) => l.stream === 'stdout').map((l) => stripPrompts(l.text));
      // testpmd echoes what it reads, on the line that holds the previous prompt (or the rest
      // of a prompt a forwarding lcore's output split: see `countPrompts`).
      const echo = out.findIndex((l) => l.trim() === cmd.trim() || (l.endsWith(cmd) && PROMPT.endsWith(l.slice(0, l.length - cmd.length))));
      if (echo >= 0) out.splice(echo, 1);
      return { command: cmd, lines: out, from };
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  /** `set fwd MODE`. */
  async setForwardMode(mode: string): Promise<void> {
    const r = await this.command(`set fwd ${mode}`);
    const bad = r.lines.find((l) => /Bad arguments|Invalid|not supported/i.test(l));
    if (bad) throw new Error(`${this.name}: set fwd ${mode}: ${bad}`);
  }

  /** `start` (or `start tx_first [n]`, which sends bursts first so io/mac loops get going). */
  async start(opts: { txFirst?: number | boolean } = {}): Promise<CommandResult> {
    const tf = opts.txFirst === true ? ' tx_first' : typeof opts.txFirst === 'number' ? ` tx_first ${opts.txFirst}` : '';
    return this.command(`start${tf}`);
  }

  /** `stop`; returns the forward statistics it prints. */
  async stop(): Promise<ForwardStats[]> {
    return parseForwardStats((await this.command('stop')).lines);
  }

  /** `show port stats all`, parsed. */
  async portStats(): Promise<PortStats[]> {
    return parsePortStats((await this.command('show port stats all')).lines);
  }

  async clearPortStats(): Promise<void> {
    await this.command('clear port stats all');
  }

  /** The VHOST_CONFIG log so far, as events and sessions. */
  vhostLog(): VhostLog {
    return parseVhostLog(this.lines, { ended: !this.running });
  }

  /** Wait for exit; on timeout, SIGKILL. */
  async waitForExit(timeoutMs = 20_000): Promise<ExitInfo> {
    if (this.exitInfo) return this.exitInfo;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
    const r = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (r === 'timeout') return this.kill();
    return r;
  }

  /**
   * Graceful `quit`: testpmd stops forwarding, closes ports (the vhost PMD unregisters its
   * socket) and exits. Falls back to SIGKILL if it has not exited within `timeoutMs`.
   */
  async quit(timeoutMs = 20_000): Promise<ExitInfo> {
    if (!this.running) return this.exitInfo!;
    try {
      this.child.stdin.write('quit\n');
      this.child.stdin.end();
    } catch {
      // Already gone: `exited` says how.
    }
    return this.waitForExit(timeoutMs);
  }

  /** Crash: SIGKILL (or another signal), no clean-up by testpmd. Resolves on exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitInfo> {
    if (!this.running) return this.exitInfo!;
    try {
      process.kill(this.pid, signal);
    } catch {
      // Exited in between.
    }
    return this.exited;
  }

  /** For exit hooks: SIGKILL now, remove the runtime dir, do not wait. */
  killSync(): void {
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    if (this.filePrefix && (this.opts.removeRuntimeDir ?? true)) removeRuntimeDir(this.filePrefix);
  }
}

function stripPrompts(s: string): string {
  let t = s;
  while (t.startsWith(PROMPT)) t = t.slice(PROMPT.length);
  return t;
}

function now(): number {
  return performance.timeOrigin + performance.now();
}
