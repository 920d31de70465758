/**
 * Sends requests all at once from another process, as real clients do: a client in the test's
 * own process would take turns with the server on one event loop and never let requests arrive
 * together.
 */
import { spawn } from 'node:child_process'

export interface ClientRequest {
  method: 'GET' | 'POST'
  path: string
  body?: object
}

export interface ClientAnswer {
  status: number
  body: any
}

const CLIENT = `
let input = ''
for await (const chunk of process.stdin) input += chunk
const { base, requests } = JSON.parse(input)
const answers = await Promise.all(requests.map(async (r) => {
  const res = await fetch(base + r.path, { method: r.method, headers: r.body ? { 'content-type': 'application/json' } : {}, body: r.body ? JSON.stringify(r.body) : undefined })
  return { status: res.status, body: await res.json() }
}))
process.stdout.write(JSON.stringify(answers))
`

export function concurrentRequests(base: string, requests: ClientRequest[]): Promise<ClientAnswer[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CLIENT], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`client exited ${code}: ${err}`))))
    child.stdin.end(JSON.stringify({ base, requests }))
  })
}
