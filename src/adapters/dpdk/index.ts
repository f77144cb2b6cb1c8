/**
 * Real DPDK (dpdk-testpmd 22.11): command lines for the vhost back-end and the virtio-user
 * VM stand-in, a process driver for the interactive prompt, and parsers for port statistics
 * and the vhost library's VHOST_CONFIG log.
 */
export * from './options.ts';
export * from './stats.ts';
export * from './vhost-log.ts';
export * from './requests.ts';
export * from './find.ts';
export * from './runtime.ts';
export * from './testpmd.ts';
export * from './pair.ts';
export * from './veth.ts';
export * from './pvp.ts';
