/**
 * What a device found wrong with what the driver published. The device half never
 * throws anything else for driver-controlled input, and it reads nothing outside
 * guest memory before throwing. After a RingError the ring's own indices have not
 * moved past the offending chain, so the caller decides (DPDK stops the queue).
 */
export type RingErrorCode =
  | 'desc-loop' // a chain revisits a descriptor
  | 'chain-too-long' // more descriptors than the ring (or indirect table) holds
  | 'bad-next' // `next` index outside the table
  | 'nested-indirect' // INDIRECT inside an indirect table
  | 'indirect-with-next' // split: INDIRECT and NEXT on the same descriptor
  | 'indirect-not-last' // a descriptor follows an indirect one in the chain
  | 'bad-indirect-len' // indirect table length zero or not a multiple of 16
  | 'indirect-not-negotiated' // INDIRECT used without VIRTIO_F_INDIRECT_DESC
  | 'readable-after-writable' // a device-readable descriptor after a writable one
  | 'bad-address' // a descriptor or table outside guest memory
  | 'bad-head' // split: avail ring entry >= queue size
  | 'avail-overrun' // split: avail idx moved more than the ring size ahead
  | 'bad-id' // packed: buffer id >= queue size, or an id the device already has in flight
  | 'partial-chain' // packed: NEXT set but the following descriptor is not available for the current wrap
  | 'used-overflow' // device: push with no chain outstanding / unknown id
  | 'too-long'; // total chain length >= 2^32

export class RingError extends Error {
  override readonly name = 'RingError';
  constructor(
    readonly code: RingErrorCode,
    message: string,
    /** Descriptor index (or avail position) where the problem was found, when known. */
    readonly where?: number,
  ) {
    super(message);
  }
}

/** Thrown by a driver asked to add a buffer when the ring has too few free descriptors. */
export class RingFullError extends Error {
  override readonly name = 'RingFullError';
  constructor(readonly needed: number, readonly free: number) {
    super(`ring full: buffer needs ${needed} descriptors, ${free} free`);
  }
}
