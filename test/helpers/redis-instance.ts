/**
 * A Redis server of a test's own (`redis-server --port <free>`, nothing persisted), for tests that
 * kill or restart it: the machine's shared Redis serves every other suite and is never restarted.
 * A restart comes back empty, as a non-persistent Redis does in production.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Redis } from 'ioredis'
import { freePort, until } from './platform.ts'

export interface RedisInstance {
  url: string
  port: number
  /** SIGKILL: clients see the connection drop, and everything in memory is gone. */
  kill(): Promise<void>
  /** A fresh, empty server on the same port. */
  start(): Promise<void>
  destroy(): Promise<void>
}

export async function startRedisInstance(): Promise<RedisInstance> {
  const port = await freePort()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'iisan-redis-'))
  let child: ChildProcess | undefined
  const url = `redis://127.0.0.1:${port}`

  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    try {
      await until(
        async () => {
          try {
            await probe.connect().catch(() => undefined)
            return (await probe.ping()) === 'PONG' ? true : undefined
          } catch {
            probe.disconnect()
            return undefined
          }
        },
        15_000,
        `redis-server on port ${port}`,
      )
    } finally {
      probe.disconnect()
    }
  }
  const kill = async () => {
    const running = child
    if (!running || running.exitCode !== null || running.signalCode !== null) return
    await new Promise<void>((resolve) => {
      running.once('exit', () => resolve())
      running.kill('SIGKILL')
    })
  }
  await start()
  return {
    url,
    port,
    kill,
    start,
    async destroy() {
      await kill()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
