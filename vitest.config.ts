import { defineConfig } from 'vitest/config'

// Tests share one PostgreSQL and one Redis and the machines have two cores: run files one at a
// time in child processes (tfjs-wasm and Prisma's wasm compiler both like a process of their own).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
})
