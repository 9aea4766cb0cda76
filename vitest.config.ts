import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Socket tests bind many loopback addresses; running files in parallel on 2 cores is fine.
    pool: 'forks',
  },
});
