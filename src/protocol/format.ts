/**
 * Human-readable rendering of vhost-user messages: request named, payload decoded, feature
 * and status bits named. One line per message, stable enough to diff.
 */
import { formatFeatures } from '../virtio/features.ts';
import { formatStatus } from '../virtio/status.ts';
import type { ProtocolError } from './errors.ts';
import { FLAG_NEED_REPLY, FLAG_REPLY, VERSION, VERSION_MASK, isReply, type MessageHeader } from './header.ts';
import type { Payload, VhostUserRegion } from './payloads.ts';
import { formatProtocolFeatures } from './protocol-features.ts';
import { lookupRequest, requestName, type RequestSpace } from './requests.ts';

const hex = (v: bigint | number): string => '0x' + v.toString(16);

/** Virtio feature names without the `NET_` prefix (the usual spelling in vhost-user logs). */
export function formatVirtioFeatures(features: bigint): string {
  return formatFeatures(features).replace(/(^|\|)NET_/g, '$1');
}

function region(r: VhostUserRegion): string {
  return `[gpa=${hex(r.guestPhysAddr)} size=${hex(r.memorySize)} uva=${hex(r.userspaceAddr)} offset=${hex(r.mmapOffset)}]`;
}

function bytesHex(b: Uint8Array, max = 32): string {
  const shown = Array.from(b.subarray(0, max), (x) => x.toString(16).padStart(2, '0')).join('');
  return b.length > max ? `${shown}…(${b.length} bytes)` : shown || '-';
}

const IOTLB_PERM = ['none', 'RO', 'WO', 'RW'];
const IOTLB_TYPE = ['?', 'MISS', 'UPDATE', 'INVALIDATE', 'ACCESS_FAIL'];

/**
 * A payload as `key=value` pairs. `requestName` picks request-specific labels (a vring state
 * is `num=` for SET_VRING_NUM, `base=` for SET/GET_VRING_BASE, `enable=` for SET_VRING_ENABLE).
 */
export function formatPayload(p: Payload, name?: string, reply = false): string {
  switch (p.kind) {
    case 'none':
      return '';
    case 'u64': {
      const label =
        name === 'GET_QUEUE_NUM' ? 'queues' : name === 'NET_SET_MTU' ? 'mtu' : name === 'GET_MAX_MEM_SLOTS' ? 'slots' : name === 'CLOSE_CRYPTO_SESSION' ? 'session' : 'value';
      return `${label}=${p.value}`;
    }
    case 'features':
      return `features=${hex(p.features)} ${formatVirtioFeatures(p.features)}`;
    case 'protocolFeatures':
      return `protocol-features=${hex(p.features)} ${formatProtocolFeatures(p.features)}`;
    case 'ack':
      return p.value === 0n ? 'ack=0 (ok)' : `ack=${p.value} (failed)`;
    case 'status':
      return `status=${hex(p.status)} ${formatStatus(p.status)}`;
    case 'vringFile':
      return `vring=${p.index}${p.noFd ? ' nofd' : ''}${p.reserved ? ` reserved=${hex(p.reserved)}` : ''}`;
    case 'mac':
      return `mac=${p.mac}${p.reserved ? ` reserved=${hex(p.reserved)}` : ''}`;
    case 'vringState': {
      const v = `vring=${p.index}`;
      switch (name) {
        case 'SET_VRING_NUM':
          return `${v} num=${p.num}`;
        case 'SET_VRING_BASE':
          return `${v} base=${p.num}`;
        case 'GET_VRING_BASE':
          // The request's num is reserved; only show it when a sender left something there.
          return reply ? `${v} base=${p.num}` : p.num ? `${v} reserved=${hex(p.num)}` : v;
        case 'SET_VRING_ENABLE':
          return `${v} enable=${p.num}`;
        case 'SET_VRING_ENDIAN':
          return `${v} endian=${p.num === 0 ? 'le' : p.num === 1 ? 'be' : p.num}`;
        case 'VRING_KICK':
        case 'SLAVE_VRING_CALL':
        case 'SLAVE_VRING_ERR':
          return p.num ? `${v} reserved=${hex(p.num)}` : v;
        default:
          return `index=${p.index} num=${p.num}`;
      }
    }
    case 'vringAddr':
      return `vring=${p.index} flags=${hex(p.flags)}${p.flags & 1 ? '(LOG)' : ''} desc=${hex(p.desc)} used=${hex(p.used)} avail=${hex(p.avail)} log=${hex(p.log)}`;
    case 'memoryTable':
      return [`regions=${p.regions.length}`, ...p.regions.map(region), ...(p.padding ? [`padding=${hex(p.padding)}`] : [])].join(' ');
    case 'singleRegion':
      return `${region(p.region)}${p.padding ? ` padding=${hex(p.padding)}` : ''}`;
    case 'log':
      return `mmap_size=${hex(p.mmapSize)} mmap_offset=${hex(p.mmapOffset)}`;
    case 'iotlb':
      return `iova=${hex(p.iova)} size=${hex(p.size)} uaddr=${hex(p.uaddr)} perm=${IOTLB_PERM[p.perm] ?? p.perm} type=${IOTLB_TYPE[p.type] ?? p.type}`;
    case 'config':
      return `offset=${p.offset} size=${p.data.length} flags=${p.flags === 1 ? 'migration' : p.flags} data=${bytesHex(p.data)}`;
    case 'vringArea':
      return `vring=${p.index}${p.noFd ? ' nofd' : ''}${p.reserved ? ` reserved=${hex(p.reserved)}` : ''} size=${hex(p.size)} offset=${hex(p.offset)}`;
    case 'inflight':
      return `mmap_size=${hex(p.mmapSize)} mmap_offset=${hex(p.mmapOffset)} num_queues=${p.numQueues} queue_size=${p.queueSize}`;
    case 'uuid':
      return `uuid=${p.uuid}`;
    case 'deviceStateFd':
      return `direction=${p.direction === 0 ? 'save' : p.direction === 1 ? 'load' : p.direction} phase=${p.phase === 0 ? 'stopped' : p.phase}`;
    case 'deviceStateResult':
      return `result=${p.error === 0 ? 'ok' : p.error}${p.noFd ? ' nofd' : ''}${p.reserved ? ` reserved=${hex(p.reserved)}` : ''}`;
    case 'cryptoSession':
    case 'opaque':
      return `bytes=${bytesHex(p.bytes)}`;
  }
}

/** `reply`, `need-reply`, and the raw value when it is not one of the usual 0x1 / 0x9 / 0x5. */
export function formatFlags(flags: number): string {
  const words: string[] = [];
  if (flags & FLAG_REPLY) words.push('reply');
  if (flags & FLAG_NEED_REPLY) words.push('need-reply');
  const usual = (flags & VERSION_MASK) === VERSION && (flags & ~0xf) === 0 && flags !== (VERSION | FLAG_REPLY | FLAG_NEED_REPLY);
  if (!usual) words.push(`flags=${hex(flags)}`);
  return words.join(' ');
}

export interface FormattableMessage {
  readonly header: MessageHeader;
  readonly decoded?: Payload;
  readonly payload?: Uint8Array;
  readonly error?: ProtocolError;
  /** fd count (or the fds themselves). */
  readonly nfds?: number;
  readonly fds?: readonly unknown[];
}

/**
 * `GET_FEATURES reply size=8 features=0xd7c66e7cb CSUM|GUEST_CSUM|…`, `SET_VRING_CALL size=8
 * fds=1 vring=0`; an invalid message shows its raw payload and `!code: reason`.
 */
export function formatMessage(m: FormattableMessage, space: RequestSpace = 'frontend'): string {
  const { header } = m;
  const name = requestName(header.request, space);
  const spec = lookupRequest(header.request, space);
  const nfds = m.nfds ?? m.fds?.length ?? 0;
  const parts = [name];
  const flags = formatFlags(header.flags);
  if (flags) parts.push(flags);
  parts.push(`size=${header.size}`);
  if (nfds > 0) parts.push(`fds=${nfds}`);
  if (m.decoded) {
    const text = formatPayload(m.decoded, spec?.name, isReply(header.flags));
    if (text) parts.push(text);
  } else if (m.payload && m.payload.length > 0) {
    parts.push(`payload=${bytesHex(m.payload, 64)}`);
  }
  if (m.error) parts.push(`!${m.error.code}: ${m.error.message}`);
  return parts.join(' ');
}
