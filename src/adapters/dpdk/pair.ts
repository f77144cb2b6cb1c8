/**
 * The smallest real topology: a virtio-user testpmd (the VM stand-in, socket server) and a
 * vhost testpmd (the back-end, `client=1`) on one socket, with the back-end quit, killed and
 * relaunched at will. Start order matters: virtio-user `server=1` must be listening
 * before the back-end starts, or the back-end logs a failed connect and retries each second.
 */
import { backendOptions, placeForwarding, shellQuote, testpmdArgs, virtioUserOptions, type NicDescription, type TestpmdAppOptions, type TestpmdOptions } from './options.ts';
import type { RunDir } from './runtime.ts';
import { Testpmd, type ExitInfo, type OutputLine } from './testpmd.ts';

export interface VirtioUserPairOptions {
  testpmd: string;
  stdbuf: string | false;
  run: RunDir;
  /** Packed virtqueues (`packed_vq=1`); split otherwise. */
  packed?: boolean;
  queues?: number;
  /** `-m` for each process; 1024 by default. */
  memoryMb?: number;
  /** Back-end at `lib.vhost.config:debug`. */
  debugLog?: boolean;
  /** Forwarding lcores; the main lcore of each is the other core. Defaults 1 (front) and 0 (back). */
  frontendLcore?: number;
  backendLcore?: number;
  /** Liveness bound for each start-up milestone; 30 s by default. */
  timeoutMs?: number;
  echo?: boolean;
  onLine?: (line: OutputLine, proc: Testpmd) => void;
  /** A physical-side port for the back-end (port 0, the vhost port after it): PVP. */
  nic?: NicDescription;
  /** `-d` driver objects for the back-end (the NIC's PMD when EAL does not load it). */
  backendDrivers?: string[];
  /** Back-end on hugepages (a PCI NIC needs DMA-able memory). */
  backendHugepages?: boolean;
  /** Extra testpmd options for each side (forward mode, topology, …). */
  frontendApp?: TestpmdAppOptions;
  backendApp?: TestpmdAppOptions;
}

export class VirtioUserPair {
  readonly socket: string;
  readonly frontendPrefix: string;
  readonly backendPrefix: string;
  readonly frontend: Testpmd;
  /** The current back-end, if one is running. */
  backend: Testpmd | undefined;
  /** Every back-end launched, oldest first (their logs stay readable after exit). */
  readonly backends: Testpmd[] = [];
  private readonly opts: VirtioUserPairOptions;

  private constructor(opts: VirtioUserPairOptions, frontend: Testpmd, socket: string, frontendPrefix: string, backendPrefix: string) {
    this.opts = opts;
    this.frontend = frontend;
    this.socket = socket;
    this.frontendPrefix = frontendPrefix;
    this.backendPrefix = backendPrefix;
  }

  /** The options of the front-end testpmd for a run. */
  static frontendOptions(o: VirtioUserPairOptions, socket: string, filePrefix: string): TestpmdOptions {
    return virtioUserOptions({
      filePrefix,
      socket,
      queues: o.queues,
      packed: o.packed,
      memoryMb: o.memoryMb,
      placement: placeForwarding(o.frontendLcore ?? 1),
      app: o.frontendApp,
    });
  }

  /** The options of the back-end testpmd for a run. */
  static backendOptions(o: VirtioUserPairOptions, socket: string, filePrefix: string): TestpmdOptions {
    return backendOptions({
      filePrefix,
      sockets: socket,
      queues: o.queues,
      memoryMb: o.memoryMb,
      debugLog: o.debugLog,
      placement: placeForwarding(o.backendLcore ?? 0),
      nic: o.nic,
      drivers: o.backendDrivers,
      hugepages: o.backendHugepages,
      app: o.backendApp,
    });
  }

  /** Start virtio-user and wait until it listens. The back-end is started with `launchBackend`. */
  static async start(o: VirtioUserPairOptions): Promise<VirtioUserPair> {
    const socket = o.run.socket('vhost-net.sock');
    const fp = o.run.prefix('vu');
    const bp = o.run.prefix('vhost');
    const frontend = Testpmd.launch({
      testpmd: o.testpmd,
      stdbuf: o.stdbuf,
      args: testpmdArgs(VirtioUserPair.frontendOptions(o, socket, fp)),
      name: 'virtio-user',
      echo: o.echo,
      onLine: o.onLine,
    });
    const pair = new VirtioUserPair(o, frontend, socket, fp, bp);
    try {
      await frontend.waitFor('waiting for client connection', { timeoutMs: o.timeoutMs ?? 30_000 });
    } catch (e) {
      await frontend.kill();
      throw e;
    }
    return pair;
  }

  /** The back-end's command line (for reports). */
  backendCommandLine(): string {
    return shellQuote([this.opts.testpmd, ...testpmdArgs(VirtioUserPair.backendOptions(this.opts, this.socket, this.backendPrefix))]);
  }

  frontendCommandLine(): string {
    return shellQuote([this.opts.testpmd, ...this.frontend.args]);
  }

  /**
   * Launch a back-end (the same command line each time, as the test plan relaunches it) and
   * wait until the device is ready in its log and both prompts are up.
   */
  async launchBackend(): Promise<Testpmd> {
    if (this.backend?.running) throw new Error('a back-end is already running');
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    const b = Testpmd.launch({
      testpmd: this.opts.testpmd,
      stdbuf: this.opts.stdbuf,
      args: testpmdArgs(VirtioUserPair.backendOptions(this.opts, this.socket, this.backendPrefix)),
      name: `vhost#${this.backends.length}`,
      echo: this.opts.echo,
      onLine: this.opts.onLine,
    });
    this.backend = b;
    this.backends.push(b);
    await b.waitFor('virtio is now ready for processing', { timeoutMs });
    await Promise.all([b.waitForPrompt(1, timeoutMs), this.frontend.waitForPrompt(1, timeoutMs)]);
    return b;
  }

  /** Graceful `quit` of the back-end. */
  async quitBackend(): Promise<ExitInfo> {
    const b = this.requireBackend();
    this.backend = undefined;
    return b.quit();
  }

  /** SIGKILL the back-end (a crash). */
  async killBackend(): Promise<ExitInfo> {
    const b = this.requireBackend();
    this.backend = undefined;
    return b.kill();
  }

  /**
   * Quit both; SIGKILL whatever does not exit in time. By default the front-end goes first,
   * so the back-end logs the front-end's clean stop (ENABLE 0, GET_VRING_BASE per ring,
   * `vhost peer closed`) and then its own reconnect attempts; with `backendFirst` the
   * front-end's stop requests fail on the closed socket instead.
   */
  async close(opts: { backendFirst?: boolean } = {}): Promise<void> {
    const b = this.backend;
    this.backend = undefined;
    if (opts.backendFirst && b?.running) await b.quit();
    if (this.frontend.running) await this.frontend.quit();
    if (b?.running) {
      // The front-end's own quit closes the socket; let the back-end log that first.
      await b.waitFor('vhost peer closed', { timeoutMs: 5_000 }).catch(() => undefined);
      await b.quit();
    }
  }

  /** SIGKILL both; for clean-up after a failure. */
  async kill(): Promise<void> {
    await Promise.all([...this.backends.map((b) => b.kill()), this.frontend.kill()]);
  }

  private requireBackend(): Testpmd {
    if (!this.backend?.running) throw new Error('no back-end is running');
    return this.backend;
  }
}
