import { defineConfig } from 'vitest/config';

// Integration tests spawn real processes (vmm, agent, guest) from dist/, so the
// README's test command builds before it runs vitest. Files run in separate
// forked workers: several suites start their own devices and child processes.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/vm/**'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
