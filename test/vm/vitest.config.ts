import { defineConfig } from 'vitest/config';

// The VM suite (real QEMU + Linux guest), run explicitly:
//   npm run build && npx vitest run --config test/vm/vitest.config.ts
// The default config excludes test/vm.
export default defineConfig({
  test: {
    include: ['test/vm/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 600_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
