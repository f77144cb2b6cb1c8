/**
 * Front-end models: `virtio-user-22.11` (DPDK virtio-user) and `qemu-7.2` (QEMU vhost-user
 * netdev with a guest), their shared guest side, and the sans-IO sequences under them.
 */
import type { SocketNamespace } from '../../transport/index.ts';
import { QemuFrontend, type QemuFrontendOptions } from './qemu.ts';
import { VirtioUserFrontend, type VirtioUserFrontendOptions } from './virtio-user.ts';
import type { FrontendProfileName } from './profiles.ts';

export { FrontendError, type FrontendErrorCode } from './errors.ts';
export * from './profiles.ts';
export {
  Guest,
  packedLayoutAt,
  FLAT_DEFAULT_BASE,
  PC_DEFAULT_BASE,
  PC_LOW_END,
  PC_HIGH_START,
  type GuestOptions,
  type GuestVring,
  type MemoryLayoutKind,
  type RingDriverHalf,
  type VringLayout,
} from './guest.ts';
export {
  Conversation,
  runSequence,
  send,
  checkReply,
  replyU64,
  replyVringState,
  type Effect,
  type SendEffect,
  type OpResult,
  type Reply,
  type ReplySpec,
  type Sequence,
  type SequenceIo,
} from './handshake.ts';
export { FrontendBase, type FrontendEvent, type FrontendEventType, type FrontendLogLine } from './base.ts';
export * as virtioUserSeq from './virtio-user-seq.ts';
export * as qemuSeq from './qemu-seq.ts';
export { VirtioUserFrontend, VIRTIO_USER_MAX_REPLY_PAYLOAD, type VirtioUserFrontendOptions, type VirtioUserPhase } from './virtio-user.ts';
export { QemuFrontend, QEMU_7_2_MAX_REPLY_PAYLOAD, type QemuFrontendOptions, type QemuPhase, type QemuChardev } from './qemu.ts';

export type AnyFrontend = VirtioUserFrontend | QemuFrontend;

/** Builds a front-end of the named profile (not started). */
export function createFrontend(
  profile: 'virtio-user-22.11',
  opts: VirtioUserFrontendOptions,
): VirtioUserFrontend;
export function createFrontend(profile: 'qemu-7.2', opts: QemuFrontendOptions): QemuFrontend;
export function createFrontend(
  profile: FrontendProfileName,
  opts: (VirtioUserFrontendOptions | QemuFrontendOptions) & { ns: SocketNamespace; path: string },
): AnyFrontend;
export function createFrontend(
  profile: FrontendProfileName,
  opts: (VirtioUserFrontendOptions | QemuFrontendOptions) & { ns: SocketNamespace; path: string },
): AnyFrontend {
  return profile === 'virtio-user-22.11' ? new VirtioUserFrontend(opts as VirtioUserFrontendOptions) : new QemuFrontend(opts as QemuFrontendOptions);
}
