import type { GuestMemory } from '../memory/index.ts';

/**
 * Read-only views of a ring's bytes for people: what is in the descriptor table and
 * the index/event fields right now, decoded straight from guest memory (virtio 1.2
 * §2.7 split, §2.8 packed). Used by the demo and by traces; never on the hot path.
 */

export interface SplitAreas {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

export interface PackedAreas {
  size: number;
  desc: number;
  driverEvent: number;
  deviceEvent: number;
}

export interface SplitSnapshot {
  desc: { addr: number; len: number; flags: number; next: number }[];
  avail: { flags: number; idx: number; ring: number[]; usedEvent: number };
  used: { flags: number; idx: number; ring: { id: number; len: number }[]; availEvent: number };
}

export interface PackedSnapshot {
  desc: { addr: number; len: number; id: number; flags: number }[];
  driverEvent: { offWrap: number; flags: number };
  deviceEvent: { offWrap: number; flags: number };
}

export function snapshotSplit(mem: GuestMemory, a: SplitAreas): SplitSnapshot {
  const q = a.size;
  const desc = [];
  for (let i = 0; i < q; i++) {
    const at = a.desc + 16 * i;
    desc.push({ addr: mem.readU64(at), len: mem.readU32(at + 8), flags: mem.readU16(at + 12), next: mem.readU16(at + 14) });
  }
  const availRing = [];
  for (let i = 0; i < q; i++) availRing.push(mem.readU16(a.avail + 4 + 2 * i));
  const usedRing = [];
  for (let i = 0; i < q; i++) usedRing.push({ id: mem.readU32(a.used + 4 + 8 * i), len: mem.readU32(a.used + 8 + 8 * i) });
  return {
    desc,
    avail: { flags: mem.readU16(a.avail), idx: mem.readU16(a.avail + 2), ring: availRing, usedEvent: mem.readU16(a.avail + 4 + 2 * q) },
    used: { flags: mem.readU16(a.used), idx: mem.readU16(a.used + 2), ring: usedRing, availEvent: mem.readU16(a.used + 4 + 8 * q) },
  };
}

export function snapshotPacked(mem: GuestMemory, a: PackedAreas): PackedSnapshot {
  const desc = [];
  for (let i = 0; i < a.size; i++) {
    const at = a.desc + 16 * i;
    desc.push({ addr: mem.readU64(at), len: mem.readU32(at + 8), id: mem.readU16(at + 12), flags: mem.readU16(at + 14) });
  }
  return {
    desc,
    driverEvent: { offWrap: mem.readU16(a.driverEvent), flags: mem.readU16(a.driverEvent + 2) },
    deviceEvent: { offWrap: mem.readU16(a.deviceEvent), flags: mem.readU16(a.deviceEvent + 2) },
  };
}

export function splitDescFlags(flags: number): string {
  const f: string[] = [];
  if (flags & 1) f.push('NEXT');
  if (flags & 2) f.push('WRITE');
  if (flags & 4) f.push('INDIRECT');
  if (flags & ~7) f.push('0x' + (flags & ~7).toString(16));
  return f.length === 0 ? '-' : f.join('|');
}

export function packedDescFlags(flags: number): string {
  const f: string[] = [];
  if (flags & 1) f.push('NEXT');
  if (flags & 2) f.push('WRITE');
  if (flags & 4) f.push('INDIRECT');
  f.push(`A=${(flags >> 7) & 1}`, `U=${(flags >> 15) & 1}`);
  const rest = flags & ~(7 | 0x80 | 0x8000);
  if (rest) f.push('0x' + rest.toString(16));
  return f.join(' ');
}

const EVENT_FLAG_NAMES = ['ENABLE', 'DISABLE', 'DESC', 'RESERVED'];

export function eventFlagsName(flags: number): string {
  return EVENT_FLAG_NAMES[flags & 3];
}

/** Multi-line text of a split ring, with `mark` columns for the driver's and device's positions. */
export function formatSplit(s: SplitSnapshot, positions?: { nextAvail?: number; nextUsed?: number }): string {
  const q = s.desc.length;
  const lines: string[] = [];
  lines.push('  descriptor table');
  s.desc.forEach((d, i) => {
    lines.push(
      `    [${pad(i, 5)}] addr=0x${d.addr.toString(16).padStart(6, '0')} len=${pad(d.len, 5)} flags=${splitDescFlags(d.flags).padEnd(14)} next=${d.next}`,
    );
  });
  const availSlots = s.avail.ring.map((h, i) => (i === (s.avail.idx & (q - 1)) ? `>${h}` : ` ${h}`)).join(' ');
  lines.push(`  avail  flags=${s.avail.flags} idx=${s.avail.idx} (slot ${s.avail.idx & (q - 1)})  ring=[${availSlots} ]  used_event=${s.avail.usedEvent}`);
  const usedSlots = s.used.ring.map((e, i) => `${i === (s.used.idx & (q - 1)) ? '>' : ' '}${e.id}:${e.len}`).join(' ');
  lines.push(`  used   flags=${s.used.flags} idx=${s.used.idx} (slot ${s.used.idx & (q - 1)})  ring=[${usedSlots} ]  avail_event=${s.used.availEvent}`);
  if (positions) {
    const parts: string[] = [];
    if (positions.nextAvail !== undefined) parts.push(`device last_avail_idx=${positions.nextAvail}`);
    if (positions.nextUsed !== undefined) parts.push(`device last_used_idx=${positions.nextUsed}`);
    lines.push('  ' + parts.join('  '));
  }
  return lines.join('\n');
}

export function formatPacked(s: PackedSnapshot): string {
  const lines: string[] = ['  descriptor ring'];
  s.desc.forEach((d, i) => {
    lines.push(`    [${pad(i, 5)}] addr=0x${d.addr.toString(16).padStart(6, '0')} len=${pad(d.len, 5)} id=${pad(d.id, 5)} flags=${packedDescFlags(d.flags)}`);
  });
  lines.push(
    `  driver event  off_wrap=0x${s.driverEvent.offWrap.toString(16)} flags=${eventFlagsName(s.driverEvent.flags)}` +
      `   device event  off_wrap=0x${s.deviceEvent.offWrap.toString(16)} flags=${eventFlagsName(s.deviceEvent.flags)}`,
  );
  return lines.join('\n');
}

function pad(n: number, w: number): string {
  return String(n).padStart(w);
}
