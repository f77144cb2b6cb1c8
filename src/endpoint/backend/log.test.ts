import { describe, expect, it } from 'vitest';
import { parseVhostEvents } from '../../adapters/dpdk/vhost-log.ts';
import { configEvent, errorEvent, formatVhostLog, modelEvent, pmdEvent, statusLines } from './log.ts';

describe('log events', () => {
  const events = [
    configEvent('INFO', 'read message VHOST_USER_SET_STATUS', { kind: 'message', name: 'SET_STATUS', request: 39 }),
    configEvent('INFO', 'new device status(0x0000000f):', { kind: 'status', value: 0xf }, statusLines(0xf)),
    configEvent('DEBUG', 'processing VHOST_USER_SET_STATUS succeeded.', { kind: 'processed', name: 'SET_STATUS', request: 39, ok: true, needsReply: false }),
    errorEvent('invalid-mtu', 'invalid MTU size (1)'),
    pmdEvent('INFO', 'Vhost device 0 created', { kind: 'device-created', vid: 0 }),
    modelEvent('short-payload', 'SET_FEATURES: payload of 4 bytes'),
  ].map((e) => ({ ...e, path: '/tmp/s' }));

  it('formats VHOST_CONFIG lines with the path prefix and the tab-indented continuation lines, at testpmd default levels', () => {
    expect(formatVhostLog(events)).toEqual([
      'VHOST_CONFIG: (/tmp/s) read message VHOST_USER_SET_STATUS',
      'VHOST_CONFIG: (/tmp/s) new device status(0x0000000f):',
      'VHOST_CONFIG: (/tmp/s) \t-RESET: 0',
      'VHOST_CONFIG: (/tmp/s) \t-ACKNOWLEDGE: 1',
      'VHOST_CONFIG: (/tmp/s) \t-DRIVER: 1',
      'VHOST_CONFIG: (/tmp/s) \t-FEATURES_OK: 1',
      'VHOST_CONFIG: (/tmp/s) \t-DRIVER_OK: 1',
      'VHOST_CONFIG: (/tmp/s) \t-DEVICE_NEED_RESET: 0',
      'VHOST_CONFIG: (/tmp/s) \t-FAILED: 0',
      'VHOST_CONFIG: (/tmp/s) invalid MTU size (1)',
    ]);
  });

  it('shows DEBUG, PMD INFO and model lines on request', () => {
    const lines = formatVhostLog(events, { configLevel: 'DEBUG', pmdLevel: 'INFO', model: true });
    expect(lines).toContain('VHOST_CONFIG: (/tmp/s) processing VHOST_USER_SET_STATUS succeeded.');
    expect(lines).toContain('Vhost device 0 created');
    expect(lines).toContain('# model: SET_FEATURES: payload of 4 bytes');
  });

  it('the real-log parser reads the lines back as the same kinds', () => {
    const parsed = parseVhostEvents(formatVhostLog(events, { configLevel: 'DEBUG' }));
    expect(parsed.map((e) => e.kind)).toEqual(['message', 'status', 'processed', 'error']);
  });

  it('RESET is 1 only for status 0', () => {
    expect(statusLines(0)[0]).toBe('\t-RESET: 1');
  });
});
