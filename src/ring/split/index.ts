export {
  layoutSplitRing,
  splitRingFootprint,
  splitAreaSizes,
  checkSplitSize,
  SplitOffsets,
  SPLIT_DESC_F_NEXT,
  SPLIT_DESC_F_WRITE,
  SPLIT_DESC_F_INDIRECT,
  SPLIT_DESC_SIZE,
  SPLIT_USED_ELEM_SIZE,
  SPLIT_MAX_SIZE,
  AVAIL_F_NO_INTERRUPT,
  USED_F_NO_NOTIFY,
  type SplitLayout,
  type SplitLayoutOptions,
} from './layout.ts';
export { SplitDriver, type SplitDriverOptions } from './driver.ts';
export { SplitDevice, type SplitDeviceOptions, type SplitDeviceState } from './device.ts';
