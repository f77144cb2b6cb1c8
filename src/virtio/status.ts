/** Device status field (virtio 1.2 §2.1). 0 means reset. */
export const DeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

export function formatStatus(status: number): string {
  if (status === 0) return 'RESET';
  const names: string[] = [];
  let rest = status;
  for (const [name, bit] of Object.entries(DeviceStatus)) {
    if (status & bit) {
      names.push(name);
      rest &= ~bit;
    }
  }
  if (rest !== 0) names.push(`0x${rest.toString(16)}`);
  return names.join('|');
}
