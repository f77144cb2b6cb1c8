import { FdHandle, FdObject, type FdRegistry } from './fd.ts';
import { TransportError } from './errors.ts';

/**
 * A memfd: a named block of shared memory, as `memfd_create` + `ftruncate` give. Guest
 * memory regions and the inflight-tracking region travel between front-end and
 * back-end as these. The receiver "maps" it by taking `buffer` (for example as a
 * `RegionSpec.buffer` of GuestMemory); like a real mapping, a buffer already taken
 * stays usable after the handle is closed.
 */
export class MemFdObject extends FdObject {
  readonly kind = 'memfd' as const;
  constructor(
    registry: FdRegistry,
    name: string,
    readonly buffer: SharedArrayBuffer,
  ) {
    super(registry, name);
  }
}

export class MemFd extends FdHandle<MemFdObject> {
  readonly kind = 'memfd' as const;

  /** A new memfd of `size` zeroed bytes, or wrapping an existing shared buffer. */
  static create(registry: FdRegistry, name: string, sizeOrBuffer: number | SharedArrayBuffer): MemFd {
    let buffer: SharedArrayBuffer;
    if (typeof sizeOrBuffer === 'number') {
      if (!Number.isSafeInteger(sizeOrBuffer) || sizeOrBuffer < 0) throw new TransportError('EINVAL', `memfd size ${sizeOrBuffer}`);
      buffer = new SharedArrayBuffer(sizeOrBuffer);
    } else {
      buffer = sizeOrBuffer;
    }
    return new MemFd(new MemFdObject(registry, name, buffer), 'created');
  }

  /** The shared memory ("mmap" of the whole file). */
  get buffer(): SharedArrayBuffer {
    this.assertOpen('map');
    return this.object.buffer;
  }

  get size(): number {
    return this.object.buffer.byteLength;
  }

  /** A byte view of [offset, offset+length) of the memory. */
  bytes(offset = 0, length = this.size - offset): Uint8Array {
    return new Uint8Array(this.buffer, offset, length);
  }

  protected override clone(origin: string): this {
    return new MemFd(this.object, origin) as this;
  }
}
