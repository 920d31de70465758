// `npm start`: the three services in the foreground, sharing this terminal. The API runs as
// API_REPLICAS processes on one port (default: one per core, see docs/OPERATIONS.md; 1 for a
// single process), the worker and the embedding cache as one process each.
// Ctrl-C / SIGTERM is passed on to every service, which shuts down gracefully.
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'

// Without an INTERNAL_TOKEN of the operator's, the three share one made up for this run: the
// cache then answers only them, not every local process (or web page) that reaches its port.
// Services started separately against this cache need INTERNAL_TOKEN set for all of them.
const env = { ...process.env, INTERNAL_TOKEN: process.env.INTERNAL_TOKEN?.trim() || randomBytes(32).toString('hex') }
const services = ['api', 'worker', 'embedding-cache']
const children: ChildProcess[] = services.map((name) => {
  const child = spawn(process.execPath, ['--import', 'tsx', `services/${name}/src/main.ts`], { stdio: 'inherit', env })
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`[start] ${name} exited (${signal ?? code}); stopping the others`)
      stop(code ?? 1)
    }
  })
  return child
})

let stopping = false
function stop(code: number) {
  stopping = true
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r))))).then(() => process.exit(code))
}
process.on('SIGINT', () => stop(0))
process.on('SIGTERM', () => stop(0))
