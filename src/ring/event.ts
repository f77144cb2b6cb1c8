/**
 * `vring_need_event` (virtio 1.2 §2.7.10, virtio_ring.h; DPDK `vhost_need_event`):
 * with 16-bit free-running indices, notify iff `event` lies in the half-open window
 * (old, new] of entries just published.
 */
export function needEvent(event: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
