import { defineConfig } from 'vitest/config';

// Tests that drive real dpdk-testpmd processes run in a second pass, one file at a
// time, so their real-time waits do not compete with the CPU-heavy property tests on
// a 2-core machine (`npm test` runs both passes).
// Named by convention: `conformance/*-real.test.ts` or `conformance/real-*.test.ts`.
const REAL_DPDK = ['conformance/*-real.test.ts', 'conformance/real-*.test.ts'];
const realPass = process.env.VHOSTSIM_TESTS === 'real-dpdk';

export default defineConfig({
  test: {
    include: realPass ? REAL_DPDK : ['src/**/*.test.ts', 'models/**/*.test.ts', 'conformance/**/*.test.ts'],
    exclude: realPass ? [] : REAL_DPDK,
    fileParallelism: !realPass,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
