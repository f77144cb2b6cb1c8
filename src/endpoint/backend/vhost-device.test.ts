import { describe, expect, it } from 'vitest';
import { encode, FrontendRequest as R, type Message, type Payload } from '../../protocol/index.ts';
import { EventFd, MemFd, SocketFd, type AnyFd } from '../../transport/index.ts';
import { DeviceHarness, Guest, VIRTIO_USER_FEATURES, VIRTIO_USER_PACKED_FEATURES } from './testing.ts';
import type { HandleResult } from './vhost-device.ts';
import type { ErrorCode, ModelNote, VhostLogEvent } from './log.ts';

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const wire = (m: Message<AnyFd>) => hex(encode(m, { validate: false }).bytes);
const errors = (r: HandleResult): ErrorCode[] => r.events.flatMap((e) => (e.kind === 'error' ? [e.code] : []));
const notes = (r: HandleResult): ModelNote[] => r.events.flatMap((e) => (e.kind === 'model' ? [e.what] : []));
const texts = (r: HandleResult) => r.events.map((e) => e.text);
const kinds = (r: HandleResult) => r.events.map((e) => e.kind);
const vs = (index: number, num: number): Payload => ({ kind: 'vringState', index, num });
const u64 = (value: bigint): Payload => ({ kind: 'u64', value });
const file = (index: number, noFd = false): Payload => ({ kind: 'vringFile', index, noFd });

function ackOf(r: HandleResult): bigint | undefined {
  const m = r.replies.find((x) => x.payload !== undefined && !(x.payload instanceof Uint8Array) && x.payload.kind === 'ack');
  return m && !(m.payload instanceof Uint8Array) && m.payload!.kind === 'ack' ? m.payload!.value : undefined;
}
function replyPayload(r: HandleResult): Payload | undefined {
  const p = r.replies[0]?.payload;
  return p instanceof Uint8Array ? undefined : p;
}

/** Features as virtio-user acks them, plus what a test needs. */
const FEAT = VIRTIO_USER_FEATURES;
const LOG_ALL = 1n << 26n;
const PROTOCOL_FEATURES = 1n << 30n;
const MQ = 1n << 22n;

/** A device with a 1-region memory table (GPA 0x100000, VA 0x7f0000100000) and negotiated features. */
function prepared(opts: ConstructorParameters<typeof DeviceHarness>[0] = {}, features = FEAT, protocol = 0x10009n) {
  const h = new DeviceHarness(opts);
  const mem = h.memfd(0x40000);
  h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: protocol });
  h.send(R.SET_FEATURES, { kind: 'features', features });
  const table: Payload = { kind: 'memoryTable', regions: [{ guestPhysAddr: 0x100000n, memorySize: 0x40000n, userspaceAddr: 0x7f0000100000n, mmapOffset: 0n }] };
  const r = h.send(R.SET_MEM_TABLE, table, { fds: [mem.dup()] });
  expect(r.close).toBe(false);
  return { h, mem, table };
}

/** Sets up vring i (256 entries) at VA 0x7f0000100000 + 0x1000 + i·0x4000, with kick and call eventfds. */
function setupVring(h: DeviceHarness, i: number, o: { enable?: boolean; base?: number; size?: number } = {}) {
  const va = 0x7f0000100000n + 0x1000n + BigInt(i) * 0x4000n;
  const size = o.size ?? 256;
  h.send(R.SET_VRING_NUM, vs(i, size));
  h.send(R.SET_VRING_BASE, vs(i, o.base ?? 0));
  h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: i, flags: 0, desc: va, avail: va + 0x1000n, used: va + 0x2000n, log: 0n });
  const kick = h.eventfd(`kick${i}`);
  const call = h.eventfd(`call${i}`);
  h.send(R.SET_VRING_KICK, file(i), { fds: [kick] });
  h.send(R.SET_VRING_CALL, file(i), { fds: [call] });
  if (o.enable ?? true) h.send(R.SET_VRING_ENABLE, vs(i, 1));
  return { kick, call, gpa: 0x100000 + 0x1000 + i * 0x4000 };
}

describe('replies (fact sheet §1.4)', () => {
  it('GET_FEATURES replies 0xd7c66e7cb with flags 0x5', () => {
    const h = new DeviceHarness();
    const r = h.send(R.GET_FEATURES);
    expect(r.replies).toHaveLength(1);
    expect(wire(r.replies[0]!)).toBe('01000000' + '05000000' + '08000000' + 'cbe7667c0d000000');
    expect(texts(r)).toContain('read message VHOST_USER_GET_FEATURES');
  });

  it('GET_PROTOCOL_FEATURES replies 0x10cbf and GET_QUEUE_NUM 128', () => {
    const h = new DeviceHarness();
    expect(wire(h.send(R.GET_PROTOCOL_FEATURES).replies[0]!)).toBe('0f000000' + '05000000' + '08000000' + 'bf0c010000000000');
    expect(wire(h.send(R.GET_QUEUE_NUM).replies[0]!)).toBe('11000000' + '05000000' + '08000000' + '8000000000000000');
  });

  it('requests with their own reply ignore NEED_REPLY: one reply, no second ack', () => {
    const h = new DeviceHarness();
    const r = h.send(R.GET_FEATURES, undefined, { needReply: true });
    expect(r.replies).toHaveLength(1);
    expect(r.replies[0]!.flags).toBe(0x5);
    expect(replyPayload(r)).toEqual({ kind: 'features', features: 0xd7c66e7cbn });
  });

  it('NEED_REPLY on a successful request is acked with 0', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_OWNER, undefined, { needReply: true });
    expect(r.replies).toHaveLength(1);
    expect(wire(r.replies[0]!)).toBe('03000000' + '05000000' + '08000000' + '0000000000000000');
  });

  it('a failure with NEED_REPLY is acked with exactly 1 and the connection stays', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 1n << 12n }, { needReply: true });
    expect(ackOf(r)).toBe(1n);
    expect(r.close).toBe(false);
    expect(errors(r)).toEqual(['invalid-protocol-features', 'processing-failed']);
    expect(h.send(R.GET_FEATURES).replies).toHaveLength(1);
  });

  it('a failure without NEED_REPLY closes the connection', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 1n << 12n });
    expect(r.replies).toHaveLength(0);
    expect(r.close).toBe(true);
    expect(texts(r)).toContain('vhost message handling failed.');
  });

  it('an unknown request is not handled: ack 1 with NEED_REPLY, connection closed without', () => {
    for (const code of [0, 23, 26, 36, 41, 99]) {
      const h = new DeviceHarness();
      const a = h.send(code, undefined, { needReply: true });
      expect(kinds(a)).toContain('external-request');
      expect(texts(a)).toContain(`vhost message (req: ${code}) was not handled.`);
      expect(ackOf(a)).toBe(1n);
      expect(a.close).toBe(false);
      const b = h.send(code);
      expect(b.close).toBe(true);
      expect(b.replies).toHaveLength(0);
    }
  });

  it('a request without handler has its fds closed', () => {
    const h = new DeviceHarness();
    const fd = h.eventfd();
    h.send(33, undefined, { fds: [fd], needReply: true });
    expect(fd.closed).toBe(true);
  });

  it('a handler that takes no fds fails with "expect 0 FDs" and closes them', () => {
    const h = new DeviceHarness();
    const fd = h.eventfd();
    const r = h.send(R.SET_FEATURES, { kind: 'features', features: FEAT }, { fds: [fd] });
    expect(texts(r)).toContain('expect 0 FDs for request VHOST_USER_SET_FEATURES, received 1');
    expect(fd.closed).toBe(true);
    expect(r.close).toBe(true);
    expect(h.device.features).toBe(0n);
  });

  it('replies keep other flag bits, as send_vhost_reply only rewrites version and NEED_REPLY', () => {
    const h = new DeviceHarness();
    expect(h.send(R.GET_FEATURES, undefined, { flags: 0x19 }).replies[0]!.flags).toBe(0x15);
  });

  it('a request whose version bits are not 1 is handled anyway: DPDK 22.11 never checks them', () => {
    const h = new DeviceHarness();
    const r = h.send(R.GET_FEATURES, undefined, { flags: 0 });
    expect(r.replies[0]!.flags).toBe(0x5);
    expect(replyPayload(r)).toEqual({ kind: 'features', features: 0xd7c66e7cbn });
  });

  it('a payload shorter than the handler reads is refused (DPDK would read stale stack bytes)', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_FEATURES, new Uint8Array(4), { needReply: true });
    expect(notes(r)).toEqual(['short-payload']);
    expect(ackOf(r)).toBe(1n);
  });

  it('a longer payload than the handler reads is accepted: DPDK reads the front of it', () => {
    const h = new DeviceHarness();
    const p = new Uint8Array(16);
    new DataView(p.buffer).setBigUint64(0, FEAT, true);
    const r = h.send(R.SET_FEATURES, p, { needReply: true });
    expect(ackOf(r)).toBe(0n);
    expect(h.device.features).toBe(FEAT);
  });

  it('more than 8 fds: 22.11.0 fails the read and closes; from 22.11.2 the extras are dropped and the message handled', () => {
    for (const patch of [0, 2]) {
      const h = new DeviceHarness({ patch });
      const fds = Array.from({ length: 9 }, () => h.eventfd());
      const r = h.send(R.SET_VRING_CALL, file(0), { fds, needReply: true });
      expect(fds.every((f, i) => (patch === 0 || i === 8 ? f.closed : true))).toBe(true);
      if (patch === 0) {
        expect(errors(r)).toEqual(['truncated-msg', 'read-failed']);
        expect(r.close).toBe(true);
      } else {
        expect(errors(r)).toContain('truncated-control-data');
        // 8 fds for a request that takes 1.
        expect(texts(r)).toContain('expect 1 FDs for request VHOST_USER_SET_VRING_CALL, received 8');
        expect(ackOf(r)).toBe(1n);
        expect(fds.every((f) => f.closed)).toBe(true);
      }
    }
  });

  it('a vring index of 256 or more closes the connection even with NEED_REPLY', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_VRING_NUM, vs(256, 256), { needReply: true });
    expect(r.close).toBe(true);
    expect(r.replies).toHaveLength(0);
    expect(texts(r)).toEqual(['read message VHOST_USER_SET_VRING_NUM', 'invalid vring index: 256', 'failed to alloc queue']);
  });

  it('SET_INFLIGHT_FD with 0 queues allocates vring 0xffffffff: connection closed', () => {
    const h = new DeviceHarness({ inflight: true });
    const fd = h.memfd(4096);
    const r = h.send(R.SET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 4096n, mmapOffset: 0n, numQueues: 0, queueSize: 256 }, { fds: [fd], needReply: true });
    expect(r.close).toBe(true);
    expect(fd.closed).toBe(true);
  });
});

describe('features', () => {
  it('SET_FEATURES with a bit not offered fails and closes without NEED_REPLY', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_FEATURES, { kind: 'features', features: FEAT | (1n << 16n) });
    expect(texts(r)).toContain('received invalid negotiated features.');
    expect(r.close).toBe(true);
  });

  it('SET_STATUS with FEATURES_OK after failed negotiation clears FEATURES_OK, so GET_STATUS shows the failure', () => {
    const h = new DeviceHarness();
    h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10009n });
    expect(ackOf(h.send(R.SET_FEATURES, { kind: 'features', features: 1n << 16n }, { needReply: true }))).toBe(1n);
    const s = h.send(R.SET_STATUS, { kind: 'status', status: 0xb }, { needReply: true });
    expect(texts(s)).toContain('FEATURES_OK bit is set but feature negotiation failed');
    expect(ackOf(s)).toBe(0n);
    expect(replyPayload(h.send(R.GET_STATUS))).toEqual({ kind: 'status', status: 0x3 });
    h.send(R.SET_FEATURES, { kind: 'features', features: FEAT });
    h.send(R.SET_STATUS, { kind: 'status', status: 0xb });
    expect(replyPayload(h.send(R.GET_STATUS))).toEqual({ kind: 'status', status: 0xb });
  });

  it('SET_FEATURES logs the negotiated value and the mergeable/virtio 1 line', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_FEATURES, { kind: 'features', features: FEAT });
    expect(texts(r)).toContain('negotiated Virtio features: 0x950008000');
    expect(texts(r)).toContain('mergeable RX buffers on, virtio 1 on');
  });

  it('changing features while running fails; LOG_ALL alone may change (live migration)', () => {
    const h = new DeviceHarness();
    h.handshake();
    expect(h.device.running).toBe(true);
    const bad = h.send(R.SET_FEATURES, { kind: 'features', features: FEAT & ~(1n << 35n) }, { needReply: true });
    expect(texts(bad)).toContain('features changed while device is running.');
    expect(ackOf(bad)).toBe(1n);
    const same = h.send(R.SET_FEATURES, { kind: 'features', features: FEAT }, { needReply: true });
    expect(ackOf(same)).toBe(0n);
    expect(kinds(same)).not.toContain('features');
    const log = h.send(R.SET_FEATURES, { kind: 'features', features: FEAT | LOG_ALL }, { needReply: true });
    expect(ackOf(log)).toBe(0n);
    expect(h.device.features).toBe(FEAT | LOG_ALL);
    expect(h.device.running).toBe(true);
  });

  it('SET_FEATURES without MQ frees the vrings beyond the first pair and closes their fds', () => {
    const h = new DeviceHarness();
    const call = h.eventfd();
    const kick = h.eventfd();
    h.send(R.SET_VRING_CALL, file(3), { fds: [call] });
    h.send(R.SET_VRING_KICK, file(3), { fds: [kick] });
    expect(h.device.nrVring).toBe(4);
    h.send(R.SET_FEATURES, { kind: 'features', features: FEAT | MQ });
    expect(h.device.nrVring).toBe(4);
    h.send(R.SET_FEATURES, { kind: 'features', features: FEAT });
    expect(h.device.nrVring).toBe(2);
    expect(h.device.vringState(3)).toBeUndefined();
    expect(call.closed && kick.closed).toBe(true);
  });

  it('SET_PROTOCOL_FEATURES logs the negotiated value; bits not offered fail', () => {
    const h = new DeviceHarness();
    expect(texts(h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10cbfn }))).toContain(
      'negotiated Vhost-user protocol features: 0x10cbf',
    );
    expect(h.send(R.SET_PROTOCOL_FEATURES, { kind: 'protocolFeatures', features: 0x10dbfn }).close).toBe(true);
  });

  it('SET_OWNER is a no-op', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_OWNER);
    expect(r.close).toBe(false);
    expect(r.replies).toHaveLength(0);
    expect(texts(r)).toEqual(['read message VHOST_USER_SET_OWNER', 'processing VHOST_USER_SET_OWNER succeeded.']);
  });

  it('RESET_OWNER destroys the running device, clears features and protocol features, and keeps the call fds', () => {
    const h = new DeviceHarness();
    const { eventfds } = h.handshake();
    const d = h.device;
    const calls = [d.vringState(0)!.call, d.vringState(1)!.call];
    const kicks = [d.vringState(0)!.kick, d.vringState(1)!.kick];
    const mem = d.memory!;
    const r = h.send(R.RESET_OWNER);
    expect(r.lifecycle).toEqual(['destroy-device']);
    expect(d.running).toBe(false);
    expect(d.features).toBe(0n);
    expect(d.protocolFeatures).toBe(0n);
    expect(d.memory).toBeUndefined();
    expect(d.status).toBe(0xf); // reset_device leaves the status alone
    expect([d.vringState(0)!.call, d.vringState(1)!.call]).toEqual(calls);
    expect(calls.every((c) => c !== 'uninit' && c !== 'nofd' && !c.closed)).toBe(true);
    expect(kicks.every((k) => k !== 'uninit' && k !== 'nofd' && k.closed)).toBe(true);
    expect(d.vringState(0)!.kick).toBe('uninit');
    expect(d.vringState(0)!.enabled).toBe(false);
    expect(mem.regions.length).toBe(1);
    expect(eventfds.length).toBe(4);
  });
});

describe('memory table', () => {
  it('SET_MEM_TABLE maps each region from its memfd at mmap_offset, with uva = userspace_addr', () => {
    const h = new DeviceHarness();
    const mem = h.memfd(0x3000);
    new Uint8Array(mem.buffer)[0x1000] = 0xab;
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0x10000n, memorySize: 0x2000n, userspaceAddr: 0x70000000n, mmapOffset: 0x1000n }] },
      { fds: [mem], needReply: true },
    );
    expect(ackOf(r)).toBe(0n);
    const m = h.device.memory!;
    expect(m.readU8(0x10000)).toBe(0xab);
    expect(m.uvaToGpa(0x70000000, 1)).toBe(0x10000);
    expect(texts(r)).toContain('guest memory region size: 0x2000');
    expect(r.events.find((e) => e.kind === 'memory-region')!.more).toContain('\t mmap off  : 0x1000');
  });

  it('an identical SET_MEM_TABLE logs "memory regions not changed" and closes the new fds', () => {
    const { h, mem, table } = prepared();
    const before = h.device.memory;
    const again = mem.dup();
    const r = h.send(R.SET_MEM_TABLE, table, { fds: [again], needReply: true });
    expect(texts(r)).toContain('memory regions not changed');
    expect(ackOf(r)).toBe(0n);
    expect(again.closed).toBe(true);
    expect(h.device.memory).toBe(before);
  });

  it('the fd count must match nregions', () => {
    const h = new DeviceHarness();
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0n, memorySize: 0x1000n, userspaceAddr: 0n, mmapOffset: 0n }] },
      { needReply: true },
    );
    expect(texts(r)).toContain('expect 1 FDs for request VHOST_USER_SET_MEM_TABLE, received 0');
    expect(ackOf(r)).toBe(1n);
  });

  it('more than 8 regions fail (the fd count check comes first: at most 8 fds arrive)', () => {
    const h = new DeviceHarness();
    const regions = Array.from({ length: 9 }, (_, i) => ({ guestPhysAddr: BigInt(i) << 20n, memorySize: 0x1000n, userspaceAddr: BigInt(i) << 20n, mmapOffset: 0n }));
    const fds = Array.from({ length: 9 }, () => h.memfd(0x1000));
    const r = h.send(R.SET_MEM_TABLE, { kind: 'memoryTable', regions }, { fds, needReply: true });
    expect(texts(r)).toContain('expect 9 FDs for request VHOST_USER_SET_MEM_TABLE, received 8');
    expect(ackOf(r)).toBe(1n);
    expect(fds.every((f) => f.closed)).toBe(true);
    expect(h.device.memory).toBeUndefined();
  });

  it('a region running past the end of its memfd is refused (DPDK would map it and fault on access)', () => {
    const h = new DeviceHarness();
    const mem = h.memfd(0x1000);
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0n, memorySize: 0x2000n, userspaceAddr: 0n, mmapOffset: 0n }] },
      { fds: [mem], needReply: true },
    );
    expect(notes(r)).toEqual(['mapping-beyond-file']);
    expect(texts(r)).toContain('failed to mmap region 0');
    expect(ackOf(r)).toBe(1n);
    expect(mem.closed).toBe(true);
  });

  it('a 0-byte region fails the mmap_offset + memory_size overflow check', () => {
    const h = new DeviceHarness();
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0n, memorySize: 0n, userspaceAddr: 0n, mmapOffset: 0n }] },
      { fds: [h.memfd(0x1000)], needReply: true },
    );
    expect(texts(r)).toContain('mmap_offset (0x0) and memory_size (0x0) overflow');
    expect(ackOf(r)).toBe(1n);
  });

  it('an fd that is not a memfd cannot be mapped', () => {
    const h = new DeviceHarness();
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0n, memorySize: 0x1000n, userspaceAddr: 0n, mmapOffset: 0n }] },
      { fds: [h.eventfd()], needReply: true },
    );
    expect(notes(r)).toContain('not-a-memfd');
    expect(ackOf(r)).toBe(1n);
  });

  it('overlapping regions are refused by the model (GuestMemory cannot hold them)', () => {
    const h = new DeviceHarness();
    const r = h.send(
      R.SET_MEM_TABLE,
      {
        kind: 'memoryTable',
        regions: [
          { guestPhysAddr: 0n, memorySize: 0x2000n, userspaceAddr: 0n, mmapOffset: 0n },
          { guestPhysAddr: 0x1000n, memorySize: 0x2000n, userspaceAddr: 0x10000n, mmapOffset: 0n },
        ],
      },
      { fds: [h.memfd(0x2000), h.memfd(0x2000)], needReply: true },
    );
    expect(notes(r)).toContain('unsupported-memory-table');
    expect(ackOf(r)).toBe(1n);
  });

  it('an empty memory table is a table: SET_VRING_ADDR is accepted, but nothing can be translated', () => {
    const h = new DeviceHarness();
    expect(ackOf(h.send(R.SET_MEM_TABLE, { kind: 'memoryTable', regions: [] }, { needReply: true }))).toBe(0n);
    expect(h.device.memory).toBeUndefined();
    const r = h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 0, desc: 0n, avail: 0n, used: 0n, log: 0n }, { needReply: true });
    expect(ackOf(r)).toBe(0n);
  });

  it('a new memory table re-translates mapped rings', () => {
    const { h, mem } = prepared();
    setupVring(h, 0);
    expect(h.device.vringState(0)!.mapped.desc).toBe(0x101000);
    // Same front-end addresses, new guest-physical base.
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0x800000n, memorySize: 0x40000n, userspaceAddr: 0x7f0000100000n, mmapOffset: 0n }] },
      { fds: [mem.dup()], needReply: true },
    );
    expect(ackOf(r)).toBe(0n);
    expect(h.device.vringState(0)!.mapped.desc).toBe(0x801000);
    expect(h.device.vringState(0)!.device).toBeDefined();
  });
});

describe('vring setup', () => {
  it('SET_VRING_NUM above 32768 is rejected', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_VRING_NUM, vs(0, 32769), { needReply: true });
    expect(texts(r)).toContain('invalid virtqueue size 32769');
    expect(ackOf(r)).toBe(1n);
    expect(ackOf(h.send(R.SET_VRING_NUM, vs(0, 32768), { needReply: true }))).toBe(0n);
  });

  it('split SET_VRING_NUM must be a power of two (0 passes); packed takes any size', () => {
    const h = new DeviceHarness();
    expect(ackOf(h.send(R.SET_VRING_NUM, vs(0, 100), { needReply: true }))).toBe(1n);
    expect(h.device.vringState(0)!.size).toBe(100); // DPDK stores the size before checking it
    expect(ackOf(h.send(R.SET_VRING_NUM, vs(0, 0), { needReply: true }))).toBe(0n);
    h.send(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_PACKED_FEATURES });
    expect(ackOf(h.send(R.SET_VRING_NUM, vs(0, 100), { needReply: true }))).toBe(0n);
  });

  it('SET_VRING_ADDR before SET_MEM_TABLE fails', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 0, desc: 0n, avail: 0n, used: 0n, log: 0n }, { needReply: true });
    expect(ackOf(r)).toBe(1n);
    expect(texts(r)).toContain('processing VHOST_USER_SET_VRING_ADDR failed.');
  });

  it('ring addresses are front-end VAs, translated through userspace_addr', () => {
    const { h } = prepared();
    setupVring(h, 0);
    const vq = h.device.vringState(0)!;
    expect(vq.mapped).toEqual({ desc: 0x101000, avail: 0x102000, used: 0x103000 });
    expect(vq.accessOk).toBe(true);
  });

  it('SET_VRING_ADDR is translated only for an enabled ring under PROTOCOL_FEATURES, or one already mapped; otherwise at kick', () => {
    const { h } = prepared();
    const addr = (i: number): Payload => ({ kind: 'vringAddr', index: i, flags: 0, desc: 0x7f0000101000n, avail: 0x7f0000102000n, used: 0x7f0000103000n, log: 0n });
    h.send(R.SET_VRING_NUM, vs(0, 256));
    h.send(R.SET_VRING_ADDR, addr(0));
    expect(h.device.vringState(0)!.mapped).toEqual({});
    h.send(R.SET_VRING_ENABLE, vs(0, 1));
    h.send(R.SET_VRING_ADDR, addr(0));
    expect(h.device.vringState(0)!.accessOk).toBe(true);
    // Already mapped: a new address is translated at once.
    h.send(R.SET_VRING_ENABLE, vs(0, 0));
    h.send(R.SET_VRING_ADDR, { ...addr(0), desc: 0x7f0000105000n } as Payload);
    expect(h.device.vringState(0)!.mapped.desc).toBe(0x105000);
  });

  it('a ring that does not fit its region is left unmapped (pointer set, translation incomplete)', () => {
    const { h } = prepared();
    h.send(R.SET_VRING_NUM, vs(0, 256));
    // The used ring would run past the region's end (VA 0x7f0000140000).
    h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 0, desc: 0x7f0000101000n, avail: 0x7f0000102000n, used: 0x7f000013ff00n, log: 0n });
    const r = h.send(R.SET_VRING_KICK, file(0), { fds: [h.eventfd()] });
    expect(texts(r)).toContain('failed to map used ring.');
    const vq = h.device.vringState(0)!;
    expect(vq.accessOk).toBe(false);
    expect(vq.device).toBeUndefined();
    expect(vq.ringsSet()).toBe(true); // DPDK leaves the short pointer non-NULL
  });

  it('VHOST_VRING_F_LOG with log_guest_addr 0 stops the translation', () => {
    const { h } = prepared();
    h.send(R.SET_VRING_NUM, vs(0, 256));
    h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 1, desc: 0x7f0000101000n, avail: 0x7f0000102000n, used: 0x7f0000103000n, log: 0n });
    const r = h.send(R.SET_VRING_KICK, file(0), { fds: [h.eventfd()] });
    expect(texts(r)).toContain('failed to map log_guest_addr.');
    expect(h.device.vringState(0)!.ringsSet()).toBe(false);
  });

  it('split SET_VRING_BASE sets last_used_idx = last_avail_idx = num (a u16)', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_VRING_BASE, vs(1, 0x12345));
    expect(texts(r)).toContain('vring base idx:1 last_used_idx:9029 last_avail_idx:9029.');
    expect(replyPayload(h.send(R.GET_VRING_BASE, vs(1, 0)))).toEqual({ kind: 'vringState', index: 1, num: 0x2345 });
  });

  it('packed SET_VRING_BASE ignores bits 16-31', () => {
    const h = new DeviceHarness();
    h.send(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_PACKED_FEATURES });
    const r = h.send(R.SET_VRING_BASE, vs(0, 0x7fff8005));
    expect(texts(r)).toContain('vring base idx:0 last_used_idx:5 last_avail_idx:5.');
    const vq = h.device.vringState(0)!;
    expect([vq.lastAvailIdx, vq.availWrap, vq.lastUsedIdx, vq.usedWrap]).toEqual([5, true, 5, true]);
  });

  it('packed GET_VRING_BASE replies avail idx | avail wrap << 15 only (bits 16-31 zero)', () => {
    const h = new DeviceHarness();
    h.send(R.SET_FEATURES, { kind: 'features', features: VIRTIO_USER_PACKED_FEATURES });
    h.send(R.SET_VRING_BASE, vs(0, 0xffff8007));
    expect(replyPayload(h.send(R.GET_VRING_BASE, vs(0, 0)))).toEqual({ kind: 'vringState', index: 0, num: 0x8007 });
  });

  it('a packed base beyond the ring leaves the ring without a device half (DPDK would index outside it)', () => {
    const { h } = prepared({}, VIRTIO_USER_PACKED_FEATURES);
    setupVring(h, 0, { size: 64, base: 0x8000 | 100 });
    const vq = h.device.vringState(0)!;
    expect(vq.accessOk).toBe(true);
    expect(vq.device).toBeUndefined();
    expect(vq.deviceError).toMatch(/slot/);
  });

  it('SET_VRING_ENABLE before any ring setup succeeds, and repeated enables too', () => {
    const h = new DeviceHarness();
    for (const num of [1, 1, 0, 0, 1]) {
      const r = h.send(R.SET_VRING_ENABLE, vs(1, num), { needReply: true });
      expect(ackOf(r)).toBe(0n);
      expect(texts(r)).toContain(`set queue enable: ${num} to qp idx: 1`);
    }
    expect(h.device.nrVring).toBe(2);
    expect(h.device.vringState(1)!.enabled).toBe(true);
  });

  it('SET_VRING_KICK with NOFD sets fd -1, which counts as initialised', () => {
    const { h } = prepared();
    const r = h.send(R.SET_VRING_KICK, file(0, true));
    expect(texts(r)).toContain('vring kick idx:0 file:-1');
    expect(h.device.vringState(0)!.kick).toBe('nofd');
  });

  it('SET_VRING_KICK and SET_VRING_CALL close the previous fd', () => {
    const h = new DeviceHarness();
    const k1 = h.eventfd();
    const c1 = h.eventfd();
    h.send(R.SET_VRING_KICK, file(0), { fds: [k1] });
    h.send(R.SET_VRING_CALL, file(0), { fds: [c1] });
    h.send(R.SET_VRING_KICK, file(0, true));
    h.send(R.SET_VRING_CALL, file(0), { fds: [h.eventfd()] });
    expect(k1.closed && c1.closed).toBe(true);
  });

  it('SET_VRING_KICK with NOFD and an fd anyway fails "expect 0 FDs"', () => {
    const h = new DeviceHarness();
    const fd = h.eventfd();
    const r = h.send(R.SET_VRING_KICK, file(0, true), { fds: [fd], needReply: true });
    expect(texts(r)).toContain('expect 0 FDs for request VHOST_USER_SET_VRING_KICK, received 1');
    expect(fd.closed).toBe(true);
  });

  it('split ring re-bases to used->idx at kick when SET_VRING_BASE disagrees', () => {
    const { h, mem } = prepared();
    // used->idx = 7 in guest memory (used ring at GPA 0x103000 = offset 0x3000 of the memfd).
    new DataView(mem.buffer).setUint16(0x3000 + 2, 7, true);
    setupVring(h, 0, { base: 0 });
    const vq = h.device.vringState(0)!;
    const kickResult = h.results.find((r) => r.events.some((e) => e.kind === 'used-idx-mismatch'))!;
    const ev = kickResult.events.find((e) => e.kind === 'used-idx-mismatch') as Extract<VhostLogEvent, { kind: 'used-idx-mismatch' }>;
    expect(ev.text).toBe('last_used_idx (0) and vq->used->idx (7) mismatches;');
    expect(ev.more).toEqual(['some packets maybe resent for Tx and dropped for Rx']);
    expect(ev.level).toBe('WARNING');
    vq.syncFromDevice();
    expect([vq.lastAvailIdx, vq.lastUsedIdx]).toEqual([7, 7]);
    expect(replyPayload(h.send(R.GET_VRING_BASE, vs(0, 0)))).toEqual({ kind: 'vringState', index: 0, num: 7 });
  });

  it('without PROTOCOL_FEATURES a ring is enabled by SET_VRING_KICK', () => {
    const { h } = prepared({}, FEAT & ~PROTOCOL_FEATURES, 0n);
    setupVring(h, 0, { enable: false });
    expect(h.device.vringState(0)!.enabled).toBe(true);
    const { h: h2 } = prepared();
    setupVring(h2, 0, { enable: false });
    expect(h2.device.vringState(0)!.enabled).toBe(false);
  });

  it('SET_VRING_CALL on a ready ring reports it disabled, then enabled again with the new fd', () => {
    const h = new DeviceHarness();
    h.handshake();
    const old = h.device.vringState(0)!.call as EventFd;
    const r = h.send(R.SET_VRING_CALL, file(0), { fds: [h.eventfd()] });
    expect(r.events.filter((e) => e.kind === 'vring-state').map((e) => e.text)).toEqual(['vring0 is disabled', 'vring0 is enabled']);
    expect(old.closed).toBe(true);
    expect(h.device.running).toBe(true);
  });

  it('SET_VRING_ERR closes its fd: "not implemented" (INFO in 22.11.0, DEBUG from 22.11.2)', () => {
    for (const patch of [0, 11]) {
      const h = new DeviceHarness({ patch });
      const fd = h.eventfd();
      const r = h.send(R.SET_VRING_ERR, file(0), { fds: [fd], needReply: true });
      expect(ackOf(r)).toBe(0n);
      expect(fd.closed).toBe(true);
      const ev = r.events.find((e) => e.kind === 'not-implemented')!;
      expect(ev.text).toBe('not implemented');
      expect(ev.level).toBe(patch === 0 ? 'INFO' : 'DEBUG');
    }
  });
});

describe('GET_VRING_BASE (fact sheet §5.7)', () => {
  it('GET_VRING_BASE closes kick and call fds and clears ready', () => {
    const h = new DeviceHarness();
    h.handshake();
    const d = h.device;
    const kick = d.vringState(0)!.kick as EventFd;
    const call = d.vringState(0)!.call as EventFd;
    expect(d.vring(0)).toBeDefined();
    const r = h.send(R.GET_VRING_BASE, vs(0, 0));
    expect(kick.closed && call.closed).toBe(true);
    const vq = d.vringState(0)!;
    expect(vq.kick).toBe('uninit');
    expect(vq.call).toBe('uninit');
    expect(vq.ready).toBe(false);
    expect(vq.accessOk).toBe(false);
    expect(vq.signalledUsedValid).toBe(false);
    expect(d.readyFlag).toBe(false);
    expect(d.vring(0)).toBeUndefined();
    expect(r.events.filter((e) => e.kind === 'vring-state').map((e) => e.text)).toEqual(['vring0 is disabled']);
  });

  it('GET_VRING_BASE destroys a running device (the application stops polling)', () => {
    const h = new DeviceHarness();
    h.handshake();
    const r = h.send(R.GET_VRING_BASE, vs(1, 0));
    expect(r.lifecycle).toEqual(['destroy-device']);
    expect(h.device.running).toBe(false);
    expect(texts(r)).toContain('vring base idx:1 file:0');
    expect(h.device.vring(0)).toBeUndefined();
  });

  it('GET_VRING_BASE on a vring never set up allocates it and replies 0', () => {
    const h = new DeviceHarness();
    const r = h.send(R.GET_VRING_BASE, { kind: 'vringState', index: 5, num: 0x559e });
    expect(wire(r.replies[0]!)).toBe('0b000000' + '05000000' + '08000000' + '05000000' + '00000000');
    expect(h.device.nrVring).toBe(6);
  });

  it('GET_VRING_BASE keeps the ring addresses before 22.11.8 and zeroes them from 22.11.8', () => {
    for (const patch of [7, 8]) {
      const { h } = prepared({ patch });
      setupVring(h, 0);
      h.send(R.GET_VRING_BASE, vs(0, 0));
      expect(h.device.vringState(0)!.ringAddrs.desc).toBe(patch >= 8 ? 0n : 0x7f0000101000n);
    }
  });

  it('after GET_VRING_BASE, new NUM/BASE/ADDR/KICK/CALL start the rings again and the device is ready again', () => {
    const h = new DeviceHarness();
    const { guest } = h.handshake();
    h.send(R.GET_VRING_BASE, vs(0, 0));
    h.send(R.GET_VRING_BASE, vs(1, 0));
    const ready: string[] = [];
    for (let i = 0; i < 2; i++) {
      h.send(R.SET_VRING_NUM, vs(i, guest.queueSize));
      h.send(R.SET_VRING_BASE, vs(i, 0));
      h.send(R.SET_VRING_ADDR, guest.addr(i));
      h.send(R.SET_VRING_KICK, file(i), { fds: [h.eventfd()] });
      const r = h.send(R.SET_VRING_CALL, file(i), { fds: [h.eventfd()] });
      ready.push(...r.events.filter((e) => e.kind === 'ready').map((e) => e.text));
      if (i === 1) expect(r.lifecycle).toEqual(['new-device']);
    }
    expect(ready).toEqual(['virtio is now ready for processing.']);
    expect(h.device.vring(1)).toBeDefined();
  });
});

describe('readiness (fact sheet §4.4)', () => {
  it('with STATUS negotiated the device is ready only after DRIVER_OK', () => {
    const h = new DeviceHarness();
    const { results } = h.handshake();
    const readyAt = results.findIndex((r) => r.events.some((e) => e.kind === 'ready'));
    expect(readyAt).toBe(results.length - 1); // the final SET_STATUS 0xf
    expect(results[readyAt]!.lifecycle).toEqual(['new-device']);
    expect(texts(results[readyAt]!)).toContain('new device status(0x0000000f):');
  });

  it('without STATUS the device is ready as soon as vrings 0 and 1 are ready', () => {
    const { h } = prepared({}, FEAT, 0x9n);
    setupVring(h, 0);
    expect(h.device.running).toBe(false);
    setupVring(h, 1, { enable: false });
    const r = h.send(R.SET_VRING_ENABLE, vs(1, 1));
    expect(kinds(r)).toContain('ready');
    expect(h.device.running).toBe(true);
  });

  it('vring 1 alone is not enough, nor vrings without call fds', () => {
    const { h } = prepared({}, FEAT, 0x9n);
    setupVring(h, 1);
    expect(h.device.running).toBe(false);
    h.send(R.SET_VRING_NUM, vs(0, 256));
    h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 0, desc: 0x7f0000101000n, avail: 0x7f0000102000n, used: 0x7f0000103000n, log: 0n });
    h.send(R.SET_VRING_KICK, file(0), { fds: [h.eventfd()] });
    h.send(R.SET_VRING_ENABLE, vs(0, 1));
    expect(h.device.running).toBe(false);
    h.send(R.SET_VRING_CALL, file(0, true)); // NOFD (-1) is initialised
    expect(h.device.running).toBe(true);
  });

  it('"ready" and new_device happen once per connection until destroyed', () => {
    const h = new DeviceHarness();
    h.handshake();
    const again = h.send(R.SET_STATUS, { kind: 'status', status: 0xf }, { needReply: true });
    expect(kinds(again)).not.toContain('ready');
    expect(again.lifecycle).toEqual([]);
    // SET_STATUS 0 only stores the status in 22.11.
    const reset = h.send(R.SET_STATUS, { kind: 'status', status: 0 });
    expect(reset.lifecycle).toEqual([]);
    expect(h.device.running).toBe(true);
    const all = h.results.flatMap((r) => r.events).filter((e) => e.kind === 'ready');
    expect(all).toHaveLength(1);
  });

  it('new_device disables guest notifications: used.flags = NO_NOTIFY on split rings without EVENT_IDX', () => {
    const h = new DeviceHarness();
    const { guest } = h.handshake();
    expect(guest.memory.readU16(guest.split[0]!.used)).toBe(1);
    expect(guest.memory.readU16(guest.split[1]!.used)).toBe(1);
  });

  it('SET_STATUS above 0xff fails; GET_STATUS returns the last SET_STATUS', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_STATUS, u64(0x100n) as Payload, { needReply: true });
    expect(texts(r)).toContain('invalid VHOST_USER_SET_STATUS payload 0x100');
    expect(ackOf(r)).toBe(1n);
    h.send(R.SET_STATUS, { kind: 'status', status: 0x7 });
    expect(wire(h.send(R.GET_STATUS).replies[0]!)).toBe('28000000' + '05000000' + '08000000' + '0700000000000000');
  });
});

describe('logging, back-end channel, misc requests', () => {
  it('SET_LOG_BASE replies with size 0 (even with NEED_REPLY), closes the fd, and logs dirty pages under LOG_ALL', () => {
    const { h } = prepared({}, FEAT | LOG_ALL);
    const logfd = h.memfd(4096, 'log');
    const r = h.send(R.SET_LOG_BASE, { kind: 'log', mmapSize: 4096n, mmapOffset: 0n }, { fds: [logfd], needReply: true });
    expect(r.replies).toHaveLength(1);
    expect(wire(r.replies[0]!)).toBe('06000000' + '05000000' + '00000000');
    expect(logfd.closed).toBe(true);
    expect(texts(r)).toContain('log mmap size: 4096, offset: 0');
    h.device.memory!.writeU8(0x100000 + 5 * 4096, 1);
    expect(h.device.dirtyLog!.isDirty(0x100000 + 5 * 4096)).toBe(true);
  });

  it('SET_LOG_BASE needs exactly one fd', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SET_LOG_BASE, { kind: 'log', mmapSize: 4096n, mmapOffset: 0n }, { needReply: true });
    expect(texts(r)).toContain('expect 1 FDs for request VHOST_USER_SET_LOG_BASE, received 0');
    expect(ackOf(r)).toBe(1n);
  });

  it('SET_LOG_BASE maps size+offset from 0 before 22.11.7 and size at offset after (an unaligned offset then fails)', () => {
    for (const patch of [6, 7]) {
      const h = new DeviceHarness({ patch });
      const r = h.send(R.SET_LOG_BASE, { kind: 'log', mmapSize: 4096n, mmapOffset: 100n }, { fds: [h.memfd(8192)], needReply: true });
      if (patch === 6) expect(r.replies[0]!.payload).toBeUndefined();
      else {
        expect(texts(r)).toContain('mmap log base failed!');
        expect(ackOf(r)).toBe(1n);
      }
    }
  });

  it('SET_LOG_FD closes the fd: "not implemented."', () => {
    const h = new DeviceHarness();
    const fd = h.eventfd();
    const r = h.send(R.SET_LOG_FD, undefined, { fds: [fd], needReply: true });
    expect(ackOf(r)).toBe(0n);
    expect(fd.closed).toBe(true);
    expect(texts(r)).toContain('not implemented.');
  });

  it('SET_SLAVE_REQ_FD keeps the socket end; a second one replaces and closes the first', () => {
    const h = new DeviceHarness();
    const [, a] = h.ns.socketpair();
    const [, b] = h.ns.socketpair();
    expect(ackOf(h.send(R.SET_SLAVE_REQ_FD, undefined, { fds: [a], needReply: true }))).toBe(0n);
    expect(h.device.slaveReqFd).toBe(a);
    h.send(R.SET_SLAVE_REQ_FD, undefined, { fds: [b] });
    expect(a.closed).toBe(true);
    expect(h.device.slaveReqFd).toBe(b);
    h.device.destroy();
    expect(b.closed).toBe(true);
  });

  it('SEND_RARP records the MAC for the data path', () => {
    const h = new DeviceHarness();
    const r = h.send(R.SEND_RARP, { kind: 'mac', mac: '52:54:00:12:34:56' }, { needReply: true });
    expect(ackOf(r)).toBe(0n);
    expect(h.device.mac).toBe('52:54:00:12:34:56');
    expect(h.device.rarpPending).toBe(true);
  });

  it('NET_SET_MTU accepts 68..65535', () => {
    const h = new DeviceHarness();
    const mtu = (v: bigint) => ackOf(h.send(R.NET_SET_MTU, u64(v), { needReply: true }));
    expect([mtu(67n), mtu(68n), mtu(65535n), mtu(65536n)]).toEqual([1n, 0n, 0n, 1n]);
    expect(h.device.mtu).toBe(65535);
    expect(texts(h.results[0]!)).toContain('invalid MTU size (67)');
  });

  it('IOTLB_MSG: an update inside the memory table and an invalidate are accepted; others fail', () => {
    const { h } = prepared();
    const msg = (type: number, uaddr = 0x7f0000100000n): Payload => ({ kind: 'iotlb', iova: 0x1000n, size: 0x1000n, uaddr, perm: 3, type });
    h.send(R.SET_VRING_NUM, vs(0, 256));
    const up = h.send(R.IOTLB_MSG, msg(2), { needReply: true });
    expect(ackOf(up)).toBe(0n);
    expect(up.events[0]!.level).toBe('DEBUG'); // IOTLB "read message" is a DEBUG line
    expect(h.device.vringState(0)!.iotlb.size).toBe(1);
    expect(ackOf(h.send(R.IOTLB_MSG, msg(3), { needReply: true }))).toBe(0n);
    expect(h.device.vringState(0)!.iotlb.size).toBe(0);
    expect(ackOf(h.send(R.IOTLB_MSG, msg(2, 0x1234n), { needReply: true }))).toBe(1n);
    const bad = h.send(R.IOTLB_MSG, msg(1), { needReply: true });
    expect(texts(bad)).toContain('invalid IOTLB message type (1)');
    expect(ackOf(bad)).toBe(1n);
  });

  it('with IOMMU_PLATFORM rings are translated through the IOTLB; a miss goes out on the back-end channel without NEED_REPLY', () => {
    const iommu = FEAT | (1n << 33n);
    const { h } = prepared({ iommuSupport: true }, iommu, 0x10009n | (1n << 5n));
    const [front, back] = h.ns.socketpair();
    h.send(R.SET_SLAVE_REQ_FD, undefined, { fds: [back] });
    h.send(R.SET_VRING_NUM, vs(0, 256));
    // IOVAs 0x10000.. for the rings.
    h.send(R.SET_VRING_ADDR, { kind: 'vringAddr', index: 0, flags: 0, desc: 0x11000n, avail: 0x12000n, used: 0x13000n, log: 0n });
    const k = h.send(R.SET_VRING_KICK, file(0), { fds: [h.eventfd()] });
    expect(k.backendRequests).toHaveLength(1);
    const miss = k.backendRequests[0]!;
    expect(miss.flags).toBe(0x1);
    expect(miss.payload).toMatchObject({ kind: 'iotlb', iova: 0x11000n, type: 1, perm: 3 });
    expect(h.device.vringState(0)!.accessOk).toBe(false);
    // QEMU's answer: IOVA 0x10000..0x20000 → VA 0x7f0000110000.
    const up = h.send(R.IOTLB_MSG, { kind: 'iotlb', iova: 0x10000n, size: 0x10000n, uaddr: 0x7f0000110000n, perm: 3, type: 2 }, { needReply: true });
    expect(ackOf(up)).toBe(0n);
    const vq = h.device.vringState(0)!;
    expect(vq.accessOk).toBe(true);
    expect(vq.mapped.desc).toBe(0x111000);
    front.close();
  });

  it('GET_CONFIG and SET_CONFIG fail: only vDPA devices implement them', () => {
    const h = new DeviceHarness();
    const g = h.send(R.GET_CONFIG, { kind: 'config', offset: 0, flags: 0, data: new Uint8Array(8) }, { needReply: true });
    expect(texts(g)).toContain('is not vDPA device!');
    expect(ackOf(g)).toBe(1n);
    expect(g.replies).toHaveLength(1);
    expect(h.send(R.SET_CONFIG, { kind: 'config', offset: 0, flags: 0, data: new Uint8Array(8) }).close).toBe(true);
  });

  it('POSTCOPY_ADVISE fails without userfaultfd; POSTCOPY_END replies u64 0', () => {
    const h = new DeviceHarness({ postcopySupport: true });
    const a = h.send(R.POSTCOPY_ADVISE, undefined, { needReply: true });
    expect(texts(a)).toContain('userfaultfd not available: Function not implemented');
    expect(ackOf(a)).toBe(1n);
    const e = h.send(R.POSTCOPY_END, undefined, { needReply: true });
    expect(e.replies).toHaveLength(1);
    expect(wire(e.replies[0]!)).toBe('1e000000' + '05000000' + '08000000' + '0000000000000000');
  });

  it('POSTCOPY_LISTEN then SET_MEM_TABLE: the table goes back with back-end addresses, the next message is read as its ack, then it fails and closes', () => {
    const h = new DeviceHarness({ postcopySupport: true });
    expect(ackOf(h.send(R.POSTCOPY_LISTEN, undefined, { needReply: true }))).toBe(0n);
    const mem = h.memfd(0x10000);
    const r = h.send(
      R.SET_MEM_TABLE,
      { kind: 'memoryTable', regions: [{ guestPhysAddr: 0n, memorySize: 0x10000n, userspaceAddr: 0x5000000n, mmapOffset: 0n }] },
      { fds: [mem], needReply: true },
    );
    expect(r.close).toBe(false);
    expect(r.replies).toHaveLength(1);
    expect(r.replies[0]!.payload).toMatchObject({ kind: 'memoryTable', regions: [{ userspaceAddr: 0x7f0000000000n }] });
    const ack = h.send(R.SET_MEM_TABLE, undefined);
    expect(ack.close).toBe(true);
    expect(ack.replies).toHaveLength(0); // NEED_REPLY was consumed by the table reply
    expect(texts(ack)).toContain('processing VHOST_USER_SET_MEM_TABLE failed.');
    expect(mem.closed).toBe(true);
  });

  it('POSTCOPY_LISTEN after regions are mapped fails', () => {
    const { h } = prepared();
    const r = h.send(R.POSTCOPY_LISTEN, undefined, { needReply: true });
    expect(texts(r)).toContain('regions already registered at postcopy-listen');
    expect(ackOf(r)).toBe(1n);
  });

  it('destroy closes every fd the device holds', () => {
    const h = new DeviceHarness({ inflight: true });
    const { guest } = h.handshake();
    const [, slave] = h.ns.socketpair();
    h.send(R.SET_SLAVE_REQ_FD, undefined, { fds: [slave] });
    const held: AnyFd[] = [slave];
    for (let i = 0; i < 2; i++) {
      const vq = h.device.vringState(i)!;
      for (const s of [vq.kick, vq.call]) if (s !== 'uninit' && s !== 'nofd') held.push(s);
    }
    const events = h.device.destroy();
    expect(events.map((e) => e.text)).toEqual(['Vhost device 0 destroyed']);
    expect(held.every((f) => f.closed)).toBe(true);
    // Only the front-end's handle of its guest memory remains open.
    expect(guest.memfd.object.refCount).toBe(1);
    expect(h.device.handle({ header: { request: 1, flags: 1, size: 0 }, payload: new Uint8Array(0), fds: [] }).close).toBe(true);
  });

  it('no input makes handle() throw or record an internal error', () => {
    const h = new DeviceHarness();
    h.handshake();
    for (let req = 0; req < 45; req++) {
      for (const len of [0, 1, 7, 8, 24, 40]) {
        h.send(req, new Uint8Array(len).fill(0xff), { needReply: true });
        if (h.device.isDestroyed) h.newDevice();
      }
    }
    expect(h.device.internalErrors).toEqual([]);
  });

  it('fd kinds are checked where they matter: the memfd and socket types of the harness', () => {
    const h = new DeviceHarness();
    expect(h.memfd(4096)).toBeInstanceOf(MemFd);
    expect(h.ns.socketpair()[0]).toBeInstanceOf(SocketFd);
    expect(new Guest(h.ns).memTable()).toMatchObject({ kind: 'memoryTable' });
  });
});
