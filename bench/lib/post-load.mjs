// Load from a process of its own (bench/profile-serve.ts): autocannon POSTing the JSON bodies of
// a file in turn. Prints one JSON line with the rate and latencies.
//   node bench/lib/post-load.mjs <base url> <path> <bodies.json> <seconds> <connections>
import autocannon from 'autocannon'
import fs from 'node:fs'

const [base, route, bodiesFile, seconds, connections] = process.argv.slice(2)
const bodies = JSON.parse(fs.readFileSync(bodiesFile, 'utf8'))
let next = 0
const result = await autocannon({
  url: base,
  connections: Number(connections),
  duration: Number(seconds),
  requests: [{ method: 'POST', path: route, headers: { 'content-type': 'application/json' }, setupRequest: (request) => ({ ...request, body: bodies[next++ % bodies.length] }) }],
})
console.log(JSON.stringify({ requestsPerSecond: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, non2xx: result.non2xx }))
