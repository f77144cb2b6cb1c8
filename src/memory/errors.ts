/** Why a guest-memory access was refused. */
export type MemoryErrorCode =
  | 'unmapped' // no region contains the first byte
  | 'out-of-range' // the access starts in a region but runs past the mapped memory
  | 'bad-region' // a region description is unusable (overlap, size, alignment)
  | 'bad-argument'; // a length/offset that is negative, fractional or not a safe integer

/**
 * A refused guest-memory access. Nothing is read or written when this is thrown:
 * every access is checked as a whole before any byte moves.
 */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  constructor(
    readonly code: MemoryErrorCode,
    message: string,
    /** The address the access started at (guest-physical, or front-end virtual for `space: 'uva'`). */
    readonly addr?: number,
    readonly length?: number,
    readonly space: 'gpa' | 'uva' = 'gpa',
  ) {
    super(message);
  }
}

export function hex(n: number): string {
  return Number.isFinite(n) ? '0x' + n.toString(16) : String(n);
}
