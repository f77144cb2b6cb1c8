/**
 * Every operating-system call of the real transport, through the `koffi` FFI package
 * (prebuilt; there is no compiled code of our own). Nothing else under `real/` touches
 * koffi, raw pointers or fd numbers' kernel state, so this file is the one to audit.
 *
 * Conventions:
 * - Calls a peer or the environment can make fail in ordinary operation (sendmsg,
 *   recvmsg, accept4, connect, eventfd read/write) return a negative errno (`-EAGAIN`),
 *   as the kernel ABI does, so the hot paths never throw.
 * - Calls that fail only on misuse or resource exhaustion (memfd_create, mmap, socket …)
 *   throw `OsError` with the errno name.
 * - Linux on x86_64 or arm64 only: the struct layouts and constants below are those of
 *   the LP64 asm-generic ABI both share. Elsewhere `osAvailability()` says why not
 *   (also when the environment sets VHOSTSIM_NO_REAL_TRANSPORT, to test that path).
 *
 * Memory: the structures passed to sendmsg/recvmsg/poll live in one block of native
 * memory allocated once and never freed (`scratch`), so their addresses are stable and
 * no JS-heap object's address is ever handed to the kernel. Calls are synchronous on the
 * main thread, so one block serves every socket.
 */
import { createRequire } from 'node:module';
import { fstatSync, readdirSync, readlinkSync, unlinkSync } from 'node:fs';

type Koffi = typeof import('koffi').default;
type Fn = (...args: never[]) => unknown;

// ---- constants (Linux, asm-generic: identical on x86_64 and arm64) -------------

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const F_DUPFD_CLOEXEC = 1030;
const F_ADD_SEALS = 1033;
const F_SEAL_SHRINK = 2;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_PRIVATE = 2;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
const EFD_SEMAPHORE = 1;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const MSG_PEEK = 2;
const MSG_CTRUNC = 8;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const POLLIN = 1;
const POLLOUT = 4;
const POLLERR = 8;
const POLLHUP = 0x10;
const SHUT_RD = 0;

/** Longest path bind()/connect() accept (sun_path holds 108 bytes with the NUL). */
export const MAX_UNIX_PATH_BYTES = 107;
/** Most fds one sendmsg may carry (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;
/** Most bytes one sendmsg/recvmsg moves through the scratch buffer; longer sends continue in further calls. */
export const IO_CHUNK = 64 * 1024;

// scratch layout: msghdr, iovec, an 8-byte word, the control buffer, the data buffer
const MSGHDR = 0; // 56 bytes: name, namelen(+pad), iov, iovlen, control, controllen, flags(+pad)
const IOVEC = 64; // 16 bytes: base, len
const WORD = 96; // 8 bytes: eventfd counter
const CONTROL = 128; // room for CMSG_SPACE(253 fds) = 1032 bytes before DATA
const DATA = 2048;
const SCRATCH_BYTES = DATA + IO_CHUNK;

// ---- errors -----------------------------------------------------------------------

/** An OS call failed in a way the caller cannot treat as an ordinary outcome. */
export class OsError extends Error {
  override readonly name = 'OsError';
  constructor(
    readonly syscall: string,
    readonly errno: number,
    /** The errno's name ('EMFILE'), or 'E<number>' when unknown. */
    readonly code: string,
    detail?: string,
  ) {
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${code}`);
  }
}

// ---- loading ----------------------------------------------------------------------

interface Loaded {
  koffi: Koffi;
  errnoName: Map<number, string>;
  errnoNum: Record<string, number>;
  scratch: bigint;
  mem: Uint8Array;
  dv: DataView;
  f: {
    close: (fd: number) => number;
    fcntl: (fd: number, cmd: number, arg: number) => number;
    memfd_create: (name: string, flags: number) => number;
    ftruncate: (fd: number, len: bigint) => number;
    mmap: (addr: bigint | null, len: number, prot: number, flags: number, fd: number, off: bigint) => bigint;
    munmap: (addr: bigint, len: number) => number;
    eventfd: (initval: number, flags: number) => number;
    read: (fd: number, buf: bigint, n: number) => number;
    write: (fd: number, buf: bigint, n: number) => number;
    socket: (domain: number, type: number, proto: number) => number;
    socketpair: (domain: number, type: number, proto: number, sv: Int32Array) => number;
    bind: (fd: number, addr: Buffer, len: number) => number;
    listen: (fd: number, backlog: number) => number;
    accept4: (fd: number, addr: null, len: null, flags: number) => number;
    connect: (fd: number, addr: Buffer, len: number) => number;
    shutdown: (fd: number, how: number) => number;
    sendmsg: (fd: number, msg: bigint, flags: number) => number;
    recvmsg: (fd: number, msg: bigint, flags: number) => number;
    poll: (fds: bigint, n: number, timeout: number) => number;
  };
}

let loaded: Loaded | undefined;
let loadFailure: string | undefined;

function load(): Loaded {
  if (loaded) return loaded;
  if (loadFailure !== undefined) throw new Error(`real transport unavailable: ${loadFailure}`);
  try {
    if (process.env.VHOSTSIM_NO_REAL_TRANSPORT) throw new Error('disabled by VHOSTSIM_NO_REAL_TRANSPORT');
    if (process.platform !== 'linux') throw new Error(`needs Linux, this is ${process.platform}`);
    if (process.arch !== 'x64' && process.arch !== 'arm64') throw new Error(`needs x86_64 or arm64, this is ${process.arch}`);
    const koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const lib = koffi.load('libc.so.6');
    const fn = <T extends Fn>(decl: string): T => lib.func(decl) as unknown as T;
    const f: Loaded['f'] = {
      close: fn('int close(int fd)'),
      fcntl: fn('int fcntl(int fd, int cmd, int arg)'),
      memfd_create: fn('int memfd_create(const char *name, unsigned int flags)'),
      ftruncate: fn('int ftruncate(int fd, int64_t len)'),
      mmap: fn('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
      munmap: fn('int munmap(void *addr, size_t len)'),
      eventfd: fn('int eventfd(unsigned int initval, int flags)'),
      read: fn('intptr_t read(int fd, void *buf, size_t n)'),
      write: fn('intptr_t write(int fd, const void *buf, size_t n)'),
      socket: fn('int socket(int domain, int type, int protocol)'),
      socketpair: fn('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
      bind: fn('int bind(int fd, const void *addr, uint32_t len)'),
      listen: fn('int listen(int fd, int backlog)'),
      accept4: fn('int accept4(int fd, void *addr, void *len, int flags)'),
      connect: fn('int connect(int fd, const void *addr, uint32_t len)'),
      shutdown: fn('int shutdown(int fd, int how)'),
      sendmsg: fn('intptr_t sendmsg(int fd, void *msg, int flags)'),
      recvmsg: fn('intptr_t recvmsg(int fd, void *msg, int flags)'),
      poll: fn('int poll(void *fds, unsigned long n, int timeout)'),
    };
    const scratch = koffi.alloc('uint8_t', SCRATCH_BYTES) as bigint;
    const buf = koffi.view(scratch, SCRATCH_BYTES);
    const errnoNum = koffi.os.errno;
    const errnoName = new Map<number, string>();
    for (const [name, n] of Object.entries(errnoNum)) if (!errnoName.has(n)) errnoName.set(n, name);
    loaded = { koffi, errnoName, errnoNum, scratch, mem: new Uint8Array(buf), dv: new DataView(buf), f };
    return loaded;
  } catch (e) {
    loadFailure = e instanceof Error ? e.message : String(e);
    throw new Error(`real transport unavailable: ${loadFailure}`);
  }
}

/** Whether the real transport can run here (Linux x86_64/arm64 with koffi and glibc). */
export function osAvailability(): { ok: true } | { ok: false; reason: string } {
  try {
    load();
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: loadFailure ?? String(e) };
  }
}

/** The errno number of a name ('EAGAIN' → 11). */
export function errno(name: string): number {
  const n = load().errnoNum[name];
  if (n === undefined) throw new Error(`unknown errno name ${name}`);
  return n;
}

export function errnoName(n: number): string {
  return load().errnoName.get(n) ?? `E${n}`;
}

/** The last call's errno, negated (the kernel's return convention). */
function negErrno(L: Loaded): number {
  return -L.koffi.errno();
}

function check(L: Loaded, syscall: string, r: number, detail?: string): number {
  if (r < 0) {
    const e = L.koffi.errno();
    throw new OsError(syscall, e, errnoName(e), detail);
  }
  return r;
}

// ---- plain fds --------------------------------------------------------------------

/** close(2). EINTR still closes on Linux, so this is never retried. Returns 0 or -errno. */
export function sysClose(fd: number): number {
  const L = load();
  return L.f.close(fd) < 0 ? negErrno(L) : 0;
}

/** A new fd (lowest free ≥ 3, close-on-exec) for the same open file. */
export function sysDup(fd: number): number {
  const L = load();
  return check(L, 'fcntl(F_DUPFD_CLOEXEC)', L.f.fcntl(fd, F_DUPFD_CLOEXEC, 3), `fd ${fd}`);
}

export type OsFdType = 'file' | 'eventfd' | 'socket' | 'other';

/** What an fd refers to: a regular (mappable) file, an eventfd, a socket, or something else. */
export function fdType(fd: number): OsFdType {
  const st = fstatSync(fd);
  if (st.isFile()) return 'file';
  if (st.isSocket()) return 'socket';
  return fdTarget(fd) === 'anon_inode:[eventfd]' ? 'eventfd' : 'other';
}

/** The /proc/self/fd link text of an fd ('/memfd:x (deleted)', 'socket:[123]'), for descriptions. */
export function fdTarget(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return '?';
  }
}

export function fileSize(fd: number): number {
  return fstatSync(fd).size;
}

/** The fd numbers open in this process now (from /proc/self/fd). */
export function openFdNumbers(): number[] {
  return (
    readdirSync('/proc/self/fd')
      .map(Number)
      // The listing's own directory handle is closed by now: drop numbers that no longer resolve.
      .filter((n) => Number.isInteger(n) && fdTarget(n) !== '?')
      .sort((a, b) => a - b)
  );
}

/** unlink(2) of a socket path; false when nothing was there. Other failures throw. */
export function unlinkPath(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

// ---- memfd and mappings -------------------------------------------------------------

/** memfd_create + ftruncate; sealed against shrinking so a peer cannot cut pages out from under our mappings (SIGBUS). */
export function memfdCreate(name: string, size: number): number {
  const L = load();
  const fd = check(L, 'memfd_create', L.f.memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), name);
  if (L.f.ftruncate(fd, BigInt(size)) < 0 || L.f.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) {
    const e = L.koffi.errno();
    L.f.close(fd);
    throw new OsError('ftruncate/F_ADD_SEALS', e, errnoName(e), name);
  }
  return fd;
}

export const PAGE_SIZE = 4096;

/** mmap(MAP_SHARED, read+write) of [offset, offset+length) of fd; offset page-aligned. */
export function mmapShared(fd: number, length: number, offset: number): bigint {
  const L = load();
  const addr = L.f.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, BigInt(offset));
  if (addr === 0xffffffffffffffffn || addr === -1n) {
    const e = L.koffi.errno();
    throw new OsError('mmap', e, errnoName(e), `fd ${fd} ${length} bytes at ${offset}`);
  }
  return addr;
}

/**
 * Replaces the mapping at [addr, addr+length) with private anonymous zero pages, in one
 * step (MAP_FIXED), so the shared file is no longer mapped but a stale JS view over the
 * range reads zeros instead of faulting. The range is given back with `munmap` once no
 * view can reach it any more.
 */
export function mmapPlaceholder(addr: bigint, length: number): void {
  const L = load();
  const r = L.f.mmap(addr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0n);
  if (r !== addr) {
    const e = L.koffi.errno();
    throw new OsError('mmap(MAP_FIXED)', e, errnoName(e));
  }
}

export function munmap(addr: bigint, length: number): void {
  const L = load();
  check(L, 'munmap', L.f.munmap(addr, length));
}

/** A plain ArrayBuffer over native memory (koffi.view): no copy, not detachable. */
export function viewOf(addr: bigint, length: number): ArrayBuffer {
  return load().koffi.view(addr, length);
}

// ---- eventfd ------------------------------------------------------------------------

export function eventfdCreate(initial: number, semaphore: boolean): number {
  const L = load();
  return check(L, 'eventfd', L.f.eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0)));
}

/** Adds n to the counter: 0, or -EAGAIN when the count would overflow. */
export function eventfdWrite(fd: number, n: bigint): number {
  const L = load();
  L.dv.setBigUint64(WORD, n, true);
  return L.f.write(fd, L.scratch + BigInt(WORD), 8) < 0 ? negErrno(L) : 0;
}

/** Takes the count (or 1 in semaphore mode); 0n when nothing is pending; a negative errno as a number otherwise. */
export function eventfdRead(fd: number): bigint | number {
  const L = load();
  if (L.f.read(fd, L.scratch + BigInt(WORD), 8) < 0) {
    const e = L.koffi.errno();
    return e === L.errnoNum.EAGAIN ? 0n : -e;
  }
  return L.dv.getBigUint64(WORD, true);
}

// ---- sockets ------------------------------------------------------------------------

function sockaddr(path: string): { addr: Buffer; len: number } {
  const p = Buffer.from(path, 'utf8');
  const addr = Buffer.alloc(2 + 108);
  addr.writeUInt16LE(AF_UNIX, 0);
  p.copy(addr, 2);
  // A leading NUL names an abstract socket: its length is exact, with no terminator.
  return { addr, len: 2 + p.length + (p[0] === 0 ? 0 : 1) };
}

/** A non-blocking, close-on-exec AF_UNIX stream socket. */
export function socketCreate(): number {
  const L = load();
  return check(L, 'socket', L.f.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

export function socketpairCreate(): [number, number] {
  const L = load();
  const sv = new Int32Array(2);
  check(L, 'socketpair', L.f.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv));
  return [sv[0], sv[1]];
}

/** bind + listen: 0 or -errno (EADDRINUSE when the path exists). */
export function bindListen(fd: number, path: string, backlog: number): number {
  const L = load();
  const { addr, len } = sockaddr(path);
  if (L.f.bind(fd, addr, len) < 0) return negErrno(L);
  return L.f.listen(fd, backlog) < 0 ? negErrno(L) : 0;
}

/** connect: 0 or -errno (ENOENT, ECONNREFUSED, EAGAIN when the listener's backlog is full). */
export function connectPath(fd: number, path: string): number {
  const L = load();
  const { addr, len } = sockaddr(path);
  return L.f.connect(fd, addr, len) < 0 ? negErrno(L) : 0;
}

/** accept4 (non-blocking, close-on-exec): the new fd or -errno (-EAGAIN when none is pending). */
export function acceptConn(fd: number): number {
  const L = load();
  const r = L.f.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return r < 0 ? negErrno(L) : r;
}

/** shutdown(SHUT_RD): on AF_UNIX the peer's sends fail with EPIPE from now on, as after a close. */
export function shutdownRead(fd: number): number {
  const L = load();
  return L.f.shutdown(fd, SHUT_RD) < 0 ? negErrno(L) : 0;
}

function setMsghdr(L: Loaded, dataLen: number, controlLen: number): void {
  const dv = L.dv;
  const base = L.scratch;
  dv.setBigUint64(MSGHDR + 0, 0n, true); // msg_name
  dv.setBigUint64(MSGHDR + 8, 0n, true); // msg_namelen + pad
  dv.setBigUint64(MSGHDR + 16, base + BigInt(IOVEC), true); // msg_iov
  dv.setBigUint64(MSGHDR + 24, 1n, true); // msg_iovlen
  dv.setBigUint64(MSGHDR + 32, controlLen > 0 ? base + BigInt(CONTROL) : 0n, true); // msg_control
  dv.setBigUint64(MSGHDR + 40, BigInt(controlLen), true); // msg_controllen
  dv.setBigUint64(MSGHDR + 48, 0n, true); // msg_flags + pad
  dv.setBigUint64(IOVEC + 0, base + BigInt(DATA), true);
  dv.setBigUint64(IOVEC + 8, BigInt(dataLen), true);
}

/**
 * One sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) of up to IO_CHUNK bytes of `bytes` with the fds
 * as one SCM_RIGHTS control message. Returns the bytes sent (possibly fewer: the rest is
 * the caller's to send later, without the fds, which went with the first byte) or -errno.
 */
export function sendChunk(fd: number, bytes: Uint8Array, fds: readonly number[]): number {
  const L = load();
  if (fds.length > SCM_MAX_FD) return -L.errnoNum.EINVAL;
  const n = Math.min(bytes.length, IO_CHUNK);
  L.mem.set(bytes.subarray(0, n), DATA);
  let controlLen = 0;
  if (fds.length > 0) {
    const cmsgLen = 16 + 4 * fds.length;
    controlLen = (cmsgLen + 7) & ~7;
    L.dv.setBigUint64(CONTROL + 0, BigInt(cmsgLen), true);
    L.dv.setInt32(CONTROL + 8, SOL_SOCKET, true);
    L.dv.setInt32(CONTROL + 12, SCM_RIGHTS, true);
    for (let i = 0; i < fds.length; i++) L.dv.setInt32(CONTROL + 16 + 4 * i, fds[i], true);
    L.mem.fill(0, CONTROL + cmsgLen, CONTROL + controlLen);
  }
  setMsghdr(L, n, controlLen);
  const r = L.f.sendmsg(fd, L.scratch + BigInt(MSGHDR), MSG_DONTWAIT | MSG_NOSIGNAL);
  return r < 0 ? negErrno(L) : r;
}

export interface Received {
  /** A copy of the bytes read; empty at end of stream. */
  bytes: Uint8Array;
  /** fds that arrived (already installed, close-on-exec, now the caller's). */
  fds: number[];
  /** The control buffer was too small: the kernel closed the fds that did not fit. */
  ctrunc: boolean;
}

/**
 * One recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) of at most `max` bytes with room for
 * `maxFds` fds; -errno on failure (-EAGAIN when nothing is pending). The kernel never
 * reads past a message that carried fds, but may join bytes sent before it (see
 * unix-socket.ts on framing).
 */
export function recvChunk(fd: number, max: number, maxFds: number): Received | number {
  const L = load();
  const want = Math.max(1, Math.min(max, IO_CHUNK));
  const controlLen = 16 + ((4 * Math.min(maxFds, SCM_MAX_FD) + 7) & ~7);
  setMsghdr(L, want, controlLen);
  const r = L.f.recvmsg(fd, L.scratch + BigInt(MSGHDR), MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (r < 0) return negErrno(L);
  const flags = L.dv.getInt32(MSGHDR + 48, true);
  const gotControl = Number(L.dv.getBigUint64(MSGHDR + 40, true));
  const fds: number[] = [];
  // Walk every cmsghdr (CMSG_FIRSTHDR/CMSG_NXTHDR); only SCM_RIGHTS is expected.
  let off = 0;
  while (off + 16 <= gotControl) {
    const len = Number(L.dv.getBigUint64(CONTROL + off, true));
    if (len < 16 || off + len > gotControl) break;
    const level = L.dv.getInt32(CONTROL + off + 8, true);
    const type = L.dv.getInt32(CONTROL + off + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = 16; p + 4 <= len; p += 4) fds.push(L.dv.getInt32(CONTROL + off + p, true));
    }
    off += (len + 7) & ~7;
  }
  return { bytes: L.mem.slice(DATA, DATA + r), fds, ctrunc: (flags & MSG_CTRUNC) !== 0 };
}

/** recv(MSG_PEEK) of one byte, no fds taken: 1 when data is pending, 0 at end of stream, or -errno. */
export function peekByte(fd: number): number {
  const L = load();
  setMsghdr(L, 1, 0);
  const r = L.f.recvmsg(fd, L.scratch + BigInt(MSGHDR), MSG_DONTWAIT | MSG_PEEK);
  return r < 0 ? negErrno(L) : r;
}

// ---- readiness ----------------------------------------------------------------------

export interface Readiness {
  readable: boolean;
  writable: boolean;
}

/** What to watch; nothing set means paused. */
export interface WatchEvents {
  readable?: boolean;
  writable?: boolean;
}

/** A level-triggered readiness watch on one fd. Close it before closing the fd. */
export interface FdWatch {
  set(events: WatchEvents): void;
  close(): void;
}

/** poll(2) with timeout 0 on one fd. */
export function pollNow(fd: number, events: WatchEvents): Readiness {
  const r = pollMany([{ fd, events }])[0];
  return r;
}

let pollfds: { addr: bigint; cap: number; dv: DataView } | undefined;

function pollMany(items: readonly { fd: number; events: WatchEvents }[]): Readiness[] {
  const L = load();
  if (!pollfds || pollfds.cap < items.length) {
    // Grown, never shrunk nor freed: a handful of bytes per watched fd.
    const cap = Math.max(64, items.length * 2);
    const addr = L.koffi.alloc('uint8_t', cap * 8) as bigint;
    pollfds = { addr, cap, dv: new DataView(L.koffi.view(addr, cap * 8)) };
  }
  const dv = pollfds.dv;
  items.forEach((it, i) => {
    dv.setInt32(i * 8, it.fd, true);
    dv.setInt16(i * 8 + 4, (it.events.readable ? POLLIN : 0) | (it.events.writable ? POLLOUT : 0), true);
    dv.setInt16(i * 8 + 6, 0, true);
  });
  check(L, 'poll', L.f.poll(pollfds.addr, items.length, 0));
  return items.map((it, i) => {
    const rev = dv.getInt16(i * 8 + 6, true);
    // HUP/ERR make a watched fd both readable and writable, as libuv reports them: the next read or write says what happened.
    const bad = (rev & (POLLHUP | POLLERR)) !== 0;
    return {
      readable: !!it.events.readable && ((rev & POLLIN) !== 0 || bad),
      writable: !!it.events.writable && ((rev & POLLOUT) !== 0 || bad),
    };
  });
}

export type PollBackend = 'uv' | 'timer';

interface UvPollHandle {
  start(opts: { readable?: boolean; writable?: boolean }, cb: (status: number, ev: Readiness) => void): void;
  stop(): void;
  close(): void;
}

let backendOverride: PollBackend | undefined;

/**
 * How readiness is watched:
 * - 'uv' (default): koffi's `node.poll`, a libuv `uv_poll_t` on Node's own event loop
 *   (epoll, level-triggered). No thread, no timer, no CPU while idle; a callback runs in
 *   the loop iteration after the fd becomes ready.
 * - 'timer': a fallback for a koffi without `node.poll` (the API is marked unstable):
 *   one shared 1 ms interval calls poll(2) with timeout 0 over every watched fd.
 */
export function pollBackend(): PollBackend {
  if (backendOverride) return backendOverride;
  const node = (load().koffi as unknown as { node?: { poll?: unknown } }).node;
  return typeof node?.poll === 'function' ? 'uv' : 'timer';
}

/** Forces a backend for watches created from now on (tests); undefined restores the default. */
export function setPollBackend(b: PollBackend | undefined): void {
  backendOverride = b;
}

/** Watches fd; `cb` runs from the event loop while a watched condition holds. */
export function watchFd(fd: number, cb: (r: Readiness) => void): FdWatch {
  return pollBackend() === 'uv' ? uvWatch(fd, cb) : timerWatch(fd, cb);
}

function uvWatch(fd: number, cb: (r: Readiness) => void): FdWatch {
  const koffi = load().koffi as unknown as {
    node: { poll(fd: number, opts: WatchEvents, cb: (status: number, ev: Readiness) => void): UvPollHandle | null };
  };
  let handle: UvPollHandle | undefined;
  let closed = false;
  const onPoll = (status: number, ev: Readiness): void => {
    // status < 0 is an epoll error on the fd: let the caller's next read or write find it.
    if (closed) return;
    cb(status < 0 ? { readable: true, writable: true } : ev);
  };
  return {
    set(events) {
      if (closed) return;
      const any = !!events.readable || !!events.writable;
      if (!any) {
        handle?.stop();
        return;
      }
      const opts = { readable: !!events.readable, writable: !!events.writable };
      if (handle) handle.start(opts, onPoll);
      else {
        const h = koffi.node.poll(fd, opts, onPoll);
        if (!h) throw new OsError('uv_poll_start', 0, 'EUV', `fd ${fd}`);
        handle = h;
      }
    },
    close() {
      if (closed) return;
      closed = true;
      // uv_poll_stop takes the fd out of epoll at once, so closing the fd right after is safe.
      handle?.close();
      handle = undefined;
    },
  };
}

interface TimerEntry {
  fd: number;
  events: WatchEvents;
  cb: (r: Readiness) => void;
}
const timerEntries = new Set<TimerEntry>();
let timer: ReturnType<typeof setInterval> | undefined;

function timerTick(): void {
  const active = [...timerEntries].filter((e) => e.events.readable || e.events.writable);
  if (active.length === 0) return;
  const results = pollMany(active);
  active.forEach((e, i) => {
    const r = results[i];
    if ((r.readable || r.writable) && timerEntries.has(e)) e.cb(r);
  });
}

/** Runs the interval only while some watch is armed, so paused watches neither cost CPU nor keep Node alive. */
function timerUpdate(): void {
  const armed = [...timerEntries].some((e) => e.events.readable || e.events.writable);
  if (armed && timer === undefined) timer = setInterval(timerTick, 1);
  else if (!armed && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

function timerWatch(fd: number, cb: (r: Readiness) => void): FdWatch {
  const entry: TimerEntry = { fd, events: {}, cb };
  timerEntries.add(entry);
  return {
    set(events) {
      entry.events = { ...events };
      timerUpdate();
    },
    close() {
      timerEntries.delete(entry);
      timerUpdate();
    },
  };
}
