/**
 * Test-only switches that break a modelled profile on purpose. Each names one reconnect
 * mechanism; a conformance test turns it on and shows the verdict of the plan case that depends
 * on that mechanism changes. The topology passes the back-end profile and the front-end options
 * through here, so a hook lives next to its description and nowhere else.
 */
import type { DpdkBackendOptions } from '../endpoint/backend/profile.ts';
import type { QemuFrontendOptions, VirtioUserFrontendOptions } from '../endpoint/frontend/index.ts';

export interface ProfileHooks {
  /**
   * A back-end that forgets the split re-base: its data path starts every split vring at index 0
   * instead of where SET_VRING_BASE / used->idx put it.
   */
  backendForgetsSplitRebase?: boolean;
}

type BackendProfile = Partial<DpdkBackendOptions>;

/** The back-end profile a topology launches, with the hooks that act on it applied. */
export function hookBackendProfile(profile: BackendProfile, _hooks: ProfileHooks): BackendProfile {
  return profile;
}

export function hookFrontendOptions(kind: 'qemu-7.2', o: QemuFrontendOptions, hooks: ProfileHooks): QemuFrontendOptions;
export function hookFrontendOptions(kind: 'virtio-user-22.11', o: VirtioUserFrontendOptions, hooks: ProfileHooks): VirtioUserFrontendOptions;
/** The front-end options a topology launches, with the hooks that act on them applied. */
export function hookFrontendOptions<T>(_kind: string, o: T, _hooks: ProfileHooks): T {
  return o;
}
