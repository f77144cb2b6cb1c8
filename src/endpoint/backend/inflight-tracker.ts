/**
 * The application side of inflight I/O tracking, for a data path that opts into it (DPDK's
 * built-in net path never writes the region; storage back-ends such as examples/vhost_blk do):
 *
 *   pop a chain      → `rte_vhost_set_inflight_desc_split`: desc[head].counter = global++,
 *                      desc[head].inflight = 1
 *   complete a chain → `rte_vhost_set_last_inflight_io_split(head)`, publish the used entry
 *                      (used->idx), then `rte_vhost_clr_inflight_desc_split(last_used, head)`:
 *                      inflight = 0, region used_idx = last_used
 *
 * The order of the completion steps is what makes recovery exact: a crash after the used
 * entry is visible but before the flag is cleared leaves region used_idx behind used->idx,
 * and the kick-time check (`checkInflightsSplit`) clears desc[last_inflight_io] itself.
 *
 * After a reconnect (SET_INFLIGHT_FD + SET_VRING_KICK) the device hands over a resubmit
 * list; `resubmit()` returns it oldest first (ascending counter), the order examples/vhost_blk
 * processes it in (it walks DPDK's descending list from the end), so the data path can
 * complete those heads before it pops new work. Split rings only for now.
 */
import type { DescriptorChain } from '../../ring/types.ts';
import { SplitDevice } from '../../ring/split/index.ts';
import { InflightSplitView, type ResubmitDesc } from './inflight.ts';
import type { VringInflight, VringView } from './vhost-device.ts';

export class InflightTracker {
  private readonly region: InflightSplitView;
  private readonly hook: VringInflight;

  private constructor(
    readonly ring: VringView,
    hook: VringInflight,
  ) {
    if (!(hook.view instanceof InflightSplitView) || !(ring.device instanceof SplitDevice)) {
      throw new Error(`vring ${ring.index}: inflight tracking is modelled for split rings only`);
    }
    this.hook = hook;
    this.region = hook.view;
  }

  /** A tracker for a vring whose inflight area is set; undefined when there is none (feature off, no SET_INFLIGHT_FD). */
  static for(ring: VringView): InflightTracker | undefined {
    return ring.inflight === undefined ? undefined : new InflightTracker(ring, ring.inflight);
  }

  /**
   * The descriptors the previous back-end left inflight, oldest first; taken once per
   * connection (a second call returns []). last_avail_idx has already moved past them.
   */
  resubmit(): ResubmitDesc[] {
    const r = this.hook.takeResubmit();
    if (r === undefined) return [];
    return [...r.resubmit].reverse();
  }

  /** `rte_vhost_set_inflight_desc_split`: the chain with this head is now inflight. */
  markPopped(head: number): void {
    this.checkHead(head);
    this.region.setCounter(head, this.hook.nextCounter());
    this.region.setInflight(head, 1);
  }

  /** `ring.pop` followed by `markPopped`. */
  pop(chain: DescriptorChain): boolean {
    if (!this.ring.pop(chain)) return false;
    this.markPopped(chain.id);
    return true;
  }

  /** `rte_vhost_set_last_inflight_io_split`: the head of the completion about to be published. */
  setLastInflightIo(head: number): void {
    this.checkHead(head);
    this.region.lastInflightIo = head;
  }

  /** `rte_vhost_clr_inflight_desc_split`: the completion is visible at `lastUsedIdx`; the head is no longer inflight. */
  clearInflight(head: number, lastUsedIdx: number): void {
    this.checkHead(head);
    this.region.setInflight(head, 0);
    this.region.usedIdx = lastUsedIdx & 0xffff;
  }

  /**
   * Completes one chain in the tracked order: last_inflight_io, used entry + used->idx
   * (flushed here so the region never runs ahead of what the driver can see), clear.
   * Returns whether the driver was signalled.
   */
  complete(head: number, len: number): boolean {
    this.setLastInflightIo(head);
    this.ring.device.push(head, len);
    const signalled = this.ring.notify();
    this.clearInflight(head, (this.ring.device as SplitDevice).saveState().lastUsedIdx);
    return signalled;
  }

  /** Heads the region marks inflight now (any order): for tests and inspection. */
  inflightHeads(): number[] {
    const out: number[] = [];
    const n = Math.min(this.region.descNum, this.region.capacity);
    for (let i = 0; i < n; i++) if (this.region.inflight(i) === 1) out.push(i);
    return out;
  }

  private checkHead(head: number): void {
    const n = Math.min(this.region.descNum, this.region.capacity);
    if (!Number.isInteger(head) || head < 0 || head >= n) throw new RangeError(`vring ${this.ring.index}: head ${head} outside the inflight area (${n} descriptors)`);
  }
}
