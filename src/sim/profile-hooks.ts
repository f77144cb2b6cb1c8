/**
 * Test-only switches that break a modelled profile on purpose. Each names one reconnect
 * mechanism; a conformance test turns it on and shows the verdict of the plan case that depends
 * on that mechanism changes (conformance/plan-mechanisms.test.ts, table in
 * models/testplans/pvp-reconnect/README.md). The topology passes the back-end profile and the
 * front-end options through here, so a hook lives next to its description and nowhere else.
 */
import type { DpdkBackendOptions } from '../endpoint/backend/profile.ts';
import type { QemuFrontendOptions, VirtioUserFrontendOptions } from '../endpoint/frontend/index.ts';

export interface ProfileHooks {
  /**
   * A back-end that forgets the split re-base: its data path starts every split vring at index 0
   * instead of where SET_VRING_BASE / used->idx put it.
   */
  backendForgetsSplitRebase?: boolean;
  /**
   * A back-end without DPDK's split re-base to the guest's used->idx when it maps a ring
   * (translate_ring_addresses): only SET_VRING_BASE places a split ring.
   */
  backendSkipsUsedIdxResync?: boolean;
  /** A back-end that ignores SET_VRING_BASE: a vring stays where its record was (0, wrap 1 on a new connection). */
  backendIgnoresVringBase?: boolean;
  /**
   * A back-end that keeps each vring's position across a disconnect (the device is not really
   * destroyed) and holds it against the next front-end on the same socket: SET_VRING_BASE and
   * the used->idx re-base leave a kept vring where it was. A new back-end process keeps nothing.
   */
  backendKeepsVringState?: boolean;
  /** A back-end in client mode that does not reconnect after its connection closes (RTE_VHOST_USER_NO_RECONNECT). */
  backendNoReconnect?: boolean;
  /** A QEMU that does not keep its acked features across a lost back-end: the next SET_FEATURES carries only bit 30. */
  qemuForgetsAckedFeatures?: boolean;
  /** A QEMU that does not restore a split ring's last_avail_idx from used->idx after a lost back-end. */
  qemuKeepsStaleSplitBase?: boolean;
  /**
   * A QEMU that does restore a packed ring after a lost back-end (QEMU 7.2 cannot), at the
   * position up to which the guest driver has taken used buffers back.
   */
  qemuRestoresPackedBase?: boolean;
  /** A QEMU whose virtio reset on a guest reboot leaves the ring indices, so the restart sends the old base. */
  qemuKeepsRingIndicesOnReset?: boolean;
  /** A virtio-user that keeps its packed rings on a server-mode reconnect instead of resetting them (and still sends base 0). */
  virtioUserKeepsPackedRings?: boolean;
}

/** Every hook, for tests and tables that go through all of them. */
export const PROFILE_HOOKS = [
  'backendForgetsSplitRebase',
  'backendSkipsUsedIdxResync',
  'backendIgnoresVringBase',
  'backendKeepsVringState',
  'backendNoReconnect',
  'qemuForgetsAckedFeatures',
  'qemuKeepsStaleSplitBase',
  'qemuRestoresPackedBase',
  'qemuKeepsRingIndicesOnReset',
  'virtioUserKeepsPackedRings',
] as const satisfies readonly (keyof ProfileHooks)[];

type BackendProfile = Partial<DpdkBackendOptions>;

/** The back-end profile a topology launches, with the hooks that act on it applied. */
export function hookBackendProfile(profile: BackendProfile, hooks: ProfileHooks): BackendProfile {
  return {
    ...profile,
    ...(hooks.backendSkipsUsedIdxResync ? { skipUsedIdxResync: true } : {}),
    ...(hooks.backendIgnoresVringBase ? { ignoreSetVringBase: true } : {}),
    ...(hooks.backendKeepsVringState ? { keepVringStateAcrossConnections: true } : {}),
    ...(hooks.backendNoReconnect ? { reconnect: false } : {}),
  };
}

export function hookFrontendOptions(kind: 'qemu-7.2', o: QemuFrontendOptions, hooks: ProfileHooks): QemuFrontendOptions;
export function hookFrontendOptions(kind: 'virtio-user-22.11', o: VirtioUserFrontendOptions, hooks: ProfileHooks): VirtioUserFrontendOptions;
/** The front-end options a topology launches, with the hooks that act on them applied. */
export function hookFrontendOptions(kind: string, o: QemuFrontendOptions | VirtioUserFrontendOptions, hooks: ProfileHooks): QemuFrontendOptions | VirtioUserFrontendOptions {
  if (kind === 'qemu-7.2') {
    const broken = {
      ...(hooks.qemuForgetsAckedFeatures ? { forgetAckedFeatures: true } : {}),
      ...(hooks.qemuKeepsStaleSplitBase ? { keepStaleSplitBase: true } : {}),
      ...(hooks.qemuRestoresPackedBase ? { restorePackedBase: true } : {}),
      ...(hooks.qemuKeepsRingIndicesOnReset ? { keepRingIndicesOnReset: true } : {}),
    };
    return Object.keys(broken).length > 0 ? { ...o, broken: { ...(o as QemuFrontendOptions).broken, ...broken } } : o;
  }
  if (hooks.virtioUserKeepsPackedRings) return { ...o, broken: { ...(o as VirtioUserFrontendOptions).broken, keepPackedRingsOnReconnect: true } };
  return o;
}
