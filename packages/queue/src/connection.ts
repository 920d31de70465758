import { Redis, type RedisOptions } from 'ioredis'

/**
 * An ioredis connection suitable for BullMQ queues and workers (maxRetriesPerRequest: null is
 * required for workers' blocking commands). Close it with `quit()`.
 */
export function createRedisConnection(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...options })
}

export type { Redis, RedisOptions } from 'ioredis'
