export * from './features.ts';
export * from './status.ts';
