/**
 * Request generator of the fuzz scenario: random and mutated methods, paths, query strings,
 * headers, content types and bodies for the /v1 routes, and malformed (and some valid) dataset
 * imports as JSON and multipart. Seeded: the same seed gives the same requests.
 */
import type { Rng } from './http.ts'

export interface FuzzRoute {
  method: string
  /** as documented: /v1/datasets/{id} */
  url: string
}

export interface FuzzContext {
  datasetId: string
  /** datasets DELETE may take: the fixtures the other requests use must stay */
  victimDatasetIds: string[]
  /** training jobs DELETE may take */
  victimJobIds: string[]
  jobId: string
  modelId: string
  /** a second, inactive version, for compare */
  otherModelId: string
  /** a version DELETE may take */
  victimModelId: string
  itemIds: string[]
  userIds: string[]
  /** a small valid import: items.tsv and users.tsv lines */
  itemLines: string[]
  userLines: string[]
  port: number
  apiKey: string
}

export interface FuzzRequest {
  /** the documented route it was made from (for the tables) */
  route: string
  /** what was done to it, for the failure list */
  mutations: string[]
  method: string
  target: string
  headers: [string, string][]
  body: Buffer
  /** the framing is broken on purpose (Content-Length longer than the body): no answer is expected */
  mayHang: boolean
  /** an import that should succeed (valid TSV, JSON, right media type) */
  isImport: boolean
}

const UUID_RE = /\{[^}]+\}/g
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']
const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'APPLICATION/JSON',
  'application/json;;;',
  'application/json; boundary=x',
  'application/vnd.api+json',
  'text/plain',
  'text/json',
  'application/x-www-form-urlencoded',
  'multipart/form-data',
  'multipart/form-data; boundary=',
  'multipart/form-data; boundary=fuzzboundary',
  'multipart/mixed; boundary=fuzzboundary',
  'application/octet-stream',
  'image/png',
  '',
  '*/*',
  'application/\u00ff',
  ';',
]
const STRANGE_STRINGS = [
  '',
  ' ',
  'null',
  'undefined',
  'NaN',
  '-1',
  '0',
  '1e309',
  '9007199254740993',
  '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '../../etc/passwd',
  '%00',
  '\u0000',
  '\u202e\u0645\u0631\u062d\u0628\u0627',
  '😀'.repeat(50),
  '<script>alert(1)</script>',
  "' OR 1=1 --",
  '${jndi:ldap://x}',
  '__proto__',
  'constructor',
  'a'.repeat(5000),
  '\t\n\r',
  'Robert"); DROP TABLE items;--',
]
const PATH_SEGMENTS = ['', '.', '..', '%2e%2e', '%', '%zz', '%00', '%C0%AF', '%FF', '%2F', 'a'.repeat(3000), '😀', '%F0%9F%98%80', '*', '~', ';x=1', 'null', '-1']

function uuid(r: Rng): string {
  const hex = () => r.int(16).toString(16)
  const part = (n: number) => Array.from({ length: n }, hex).join('')
  return `${part(8)}-${part(4)}-4${part(3)}-${'89ab'[r.int(4)]}${part(3)}-${part(12)}`
}

function strange(r: Rng): unknown {
  switch (r.int(12)) {
    case 0:
      return null
    case 1:
      return r.pick([0, -1, 1.5, 1e308, -1e308, 2 ** 31, 2 ** 53 + 1, 1e-320])
    case 2:
      return r.chance(0.5)
    case 3:
      return []
    case 4:
      return {}
    case 5:
      return Array.from({ length: r.int(3) + 1 }, () => r.pick(STRANGE_STRINGS))
    case 6:
      return { $gt: '' }
    case 7:
      return nested(r.int(60) + 2)
    case 8:
      return Array.from({ length: r.pick([1000, 5000]) }, (_, i) => `x${i}`)
    default:
      return r.pick(STRANGE_STRINGS)
  }
}

function nested(depth: number): unknown {
  let v: unknown = 'deep'
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v }
  return v
}

/** A valid body for each documented route with a body. */
function validBody(route: FuzzRoute, ctx: FuzzContext, r: Rng): Record<string, unknown> {
  switch (`${route.method} ${route.url}`) {
    case 'POST /v1/datasets':
      return { name: `fuzz-${r.int(1e9)}`, itemsTsv: ctx.itemLines.join('\n') + '\n', usersTsv: ctx.userLines.join('\n') + '\n' }
    case 'POST /v1/training-jobs':
      return { datasetId: ctx.datasetId, method: r.pick(['sasrec-id', 'iisan']), config: { maxEpochs: 1 + r.int(3), batchSize: r.pick([8, 16, 64]) } }
    case 'POST /v1/events':
      return { datasetId: ctx.datasetId, userId: r.chance(0.5) ? r.pick(ctx.userIds) : `fuzz-user-${r.int(100)}`, itemId: r.pick(ctx.itemIds) }
    case 'POST /v1/items':
      return { datasetId: ctx.datasetId, id: `fuzz-item-${r.int(1e6)}`, title: `Fuzz item ${r.int(1e6)}` }
    case 'POST /v1/recommendations':
      return r.chance(0.5)
        ? { datasetId: ctx.datasetId, userId: r.pick(ctx.userIds), k: 1 + r.int(20) }
        : { datasetId: ctx.datasetId, history: Array.from({ length: 1 + r.int(5) }, () => r.pick(ctx.itemIds)), k: 1 + r.int(20) }
    default:
      return {}
  }
}

function mutateObject(body: Record<string, unknown>, r: Rng, mutations: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = { ...body }
  const keys = Object.keys(out)
  const n = 1 + r.int(3)
  for (let i = 0; i < n; i++) {
    const what = r.int(8)
    const key = keys.length ? r.pick(keys) : 'x'
    if (what === 0 && keys.length) {
      delete out[key]
      mutations.push(`drop ${key}`)
    } else if (what === 1) {
      const extra = r.pick(['extra', '__proto__', 'constructor', 'prototype', 'toString', '', 'k', 'modelId', 'history', 'userId'])
      out[extra] = strange(r)
      mutations.push(`add ${extra || '""'}`)
    } else if (what === 2 && typeof out[key] === 'string') {
      out[key] = (out[key] as string) + r.pick(['\u0000', '\n', '\t', ' ', '😀', '\u202e', '%00', 'a'.repeat(3000)])
      mutations.push(`append to ${key}`)
    } else if (what === 3 && typeof out[key] === 'string') {
      // the TSV files: break a line
      const lines = (out[key] as string).split('\n')
      const at = r.int(lines.length)
      lines[at] = lines[at].replace('\t', r.pick(['', ' ', '\t\t', '\t\u0000']))
      out[key] = lines.join('\n')
      mutations.push(`break line ${at + 1} of ${key}`)
    } else {
      out[key] = strange(r)
      mutations.push(`${key} = ${JSON.stringify(out[key])?.slice(0, 40)}`)
    }
  }
  return out
}

/** TSV contents of an import, valid or broken in one of the ways an uploaded file is. */
function importFiles(ctx: FuzzContext, r: Rng, mutations: string[]): { itemsTsv: string; usersTsv: string; valid: boolean } {
  const items = [...ctx.itemLines]
  const users = [...ctx.userLines]
  const pickLine = (xs: string[]) => r.int(xs.length)
  const kind = r.int(22)
  let valid = false
  switch (kind) {
    case 0: {
      // an unknown item deep in users.tsv: items and users are already inserted when it is found
      const at = users.length - 1 - r.int(3)
      users[at] = users[at] + ' no-such-item'
      mutations.push(`unknown item in users line ${at + 1}`)
      break
    }
    case 1: {
      const at = pickLine(items)
      items.push(items[at])
      mutations.push('duplicate item')
      break
    }
    case 2: {
      users.push(users[pickLine(users)])
      mutations.push('duplicate user')
      break
    }
    case 3: {
      const at = pickLine(items)
      items[at] = items[at].split('\t')[0]
      mutations.push(`item line ${at + 1} without a title`)
      break
    }
    case 4: {
      const at = pickLine(items)
      items[at] = `${items[at].split('\t')[0]}\t${'t'.repeat(2001 + r.int(50))}`
      mutations.push('title over the limit')
      break
    }
    case 5: {
      const at = pickLine(items)
      items[at] = items[at] + '\u0001\u0007'
      mutations.push('control characters in a title')
      break
    }
    case 6: {
      const at = pickLine(items)
      items[at] = `${items[at]}\t${r.pick(['file:///etc/passwd', 'http://127.0.0.1/x.png', 'javascript:alert(1)', '../../../etc/shadow', 'http://[::1]/a.jpg', 'ftp://x/y.png', 'data:image/png;base64,AAAA'])}`
      mutations.push('bad image reference')
      break
    }
    case 7: {
      const at = pickLine(users)
      users[at] = users[at].split('\t')[0]
      mutations.push('user without items')
      break
    }
    case 8: {
      mutations.push('CRLF line endings')
      return { itemsTsv: items.join('\r\n') + '\r\n', usersTsv: users.join('\r\n') + '\r\n', valid: true }
    }
    case 9: {
      mutations.push('byte-order mark')
      return { itemsTsv: '\ufeff' + items.join('\n') + '\n', usersTsv: '\ufeff' + users.join('\n') + '\n', valid: false }
    }
    case 10: {
      const at = pickLine(items)
      items.splice(at, 0, '', '   ', '\t')
      mutations.push('blank lines')
      break
    }
    case 11: {
      const at = pickLine(users)
      users[at] = users[at].replace(/ /g, '  ') + ' '
      mutations.push('double spaces in a users line')
      break
    }
    case 12: {
      const at = pickLine(items)
      items[at] = `with space${r.int(100)}\t${items[at].split('\t')[1]}`
      mutations.push('item id with a space')
      break
    }
    case 13: {
      mutations.push('items.tsv of one column')
      return { itemsTsv: items.map((l) => l.split('\t')[0]).join('\n'), usersTsv: users.join('\n'), valid: false }
    }
    case 14: {
      mutations.push('files swapped')
      return { itemsTsv: users.join('\n') + '\n', usersTsv: items.join('\n') + '\n', valid: false }
    }
    case 15: {
      const at = pickLine(items)
      items[at] = `${items[at]}\tcol3\tcol4\tcol5`
      mutations.push('extra columns')
      break
    }
    case 16: {
      const at = pickLine(users)
      const [id, seq] = users[at].split('\t')
      users[at] = `${id}\t${seq}\t${seq}`
      mutations.push('users line with two tabs')
      break
    }
    default:
      valid = true
  }
  return { itemsTsv: items.join('\n') + '\n', usersTsv: users.join('\n') + '\n', valid }
}

type Part = { name: string; filename?: string; type?: string; data: string | Buffer }

function multipart(boundary: string, parts: Part[], r: Rng, mutations: string[]): Buffer {
  const chunks: Buffer[] = []
  for (const p of parts) {
    const disposition = `Content-Disposition: form-data; name="${p.name}"${p.filename ? `; filename="${p.filename}"` : ''}`
    chunks.push(Buffer.from(`--${boundary}\r\n${disposition}\r\n${p.type ? `Content-Type: ${p.type}\r\n` : ''}\r\n`))
    chunks.push(typeof p.data === 'string' ? Buffer.from(p.data) : p.data)
    chunks.push(Buffer.from('\r\n'))
  }
  const cut = r.int(6)
  if (cut === 0) mutations.push('multipart without its closing boundary')
  else chunks.push(Buffer.from(`--${boundary}--\r\n`))
  let body = Buffer.concat(chunks)
  if (cut === 1) {
    body = body.subarray(0, r.int(body.length))
    mutations.push('multipart truncated')
  }
  return body
}

function randomQuery(r: Rng, ctx: FuzzContext): string {
  const keys = ['k', 'limit', 'offset', 'q', 'datasetId', 'modelId', 'ids', 'x', '', '__proto__', 'k[]', 'a.b']
  const values = () =>
    r.pick([
      String(r.int(2000) - 500),
      '1e309',
      '-0',
      '0x10',
      'NaN',
      '',
      ctx.datasetId,
      ctx.modelId,
      `${ctx.modelId},${ctx.otherModelId}`,
      `${ctx.modelId},${uuid(r)}`,
      Array.from({ length: 30 }, () => uuid(r)).join(','),
      encodeURIComponent(r.pick(STRANGE_STRINGS)),
      '%',
      '%zz',
      '%E0%A4%A',
      'a'.repeat(r.pick([10, 300, 5000])),
      '%00',
      '+',
    ])
  const n = 1 + r.int(4)
  return Array.from({ length: n }, () => `${r.pick(keys)}=${values()}`).join(r.chance(0.9) ? '&' : ';')
}

/** The next fuzz request. */
export function nextRequest(routes: FuzzRoute[], ctx: FuzzContext, r: Rng): FuzzRequest {
  const mutations: string[] = []
  // dataset imports get a fifth of the requests: they write the most
  const route = r.chance(0.2) ? routes.find((x) => x.method === 'POST' && x.url === '/v1/datasets')! : r.pick(routes)
  let method = route.method
  if (r.chance(0.1)) {
    method = r.pick(METHODS)
    mutations.push(`method ${method}`)
  }

  // the path: real ids, or something else in their place
  let path = route.url.replace(UUID_RE, (_, offset: number) => {
    const before = route.url.slice(0, offset)
    const real = before.endsWith('/datasets/') ? (method === 'DELETE' ? r.pick(ctx.victimDatasetIds) : ctx.datasetId) : before.endsWith('/training-jobs/') ? (method === 'DELETE' ? r.pick(ctx.victimJobIds) : ctx.jobId) : before.endsWith('/model-versions/') ? (method === 'DELETE' ? ctx.victimModelId : r.pick([ctx.modelId, ctx.otherModelId])) : before.endsWith('/items/') ? r.pick(ctx.itemIds) : uuid(r)
    if (r.chance(0.7)) return real
    const other = r.pick([uuid(r), ...PATH_SEGMENTS, encodeURIComponent(r.pick(STRANGE_STRINGS)), real.toUpperCase(), real + '/', real.slice(0, -1)])
    mutations.push(`id ${JSON.stringify(other.slice(0, 30))}`)
    return other
  })
  if (r.chance(0.05)) {
    path = path + '/' + r.pick(PATH_SEGMENTS)
    mutations.push('extra segment')
  }
  if (r.chance(0.03)) {
    path = path.replace('/v1/', r.pick(['/v1//', '/v1/./', '/%761/', '/v2/', '/V1/']))
    mutations.push('prefix spelling')
  }
  if (route.url === '/v1/model-versions/compare' && r.chance(0.7)) path += `?ids=${ctx.modelId},${r.chance(0.7) ? ctx.otherModelId : r.chance(0.5) ? ctx.modelId : uuid(r)}`
  else if (route.url === '/v1/items/{id}/similar' && r.chance(0.7)) path += `?datasetId=${ctx.datasetId}&k=${r.int(30)}`
  if (r.chance(0.35)) {
    path += (path.includes('?') ? '&' : '?') + randomQuery(r, ctx)
    mutations.push('query')
  }

  // the body
  let body: Buffer = Buffer.alloc(0)
  let contentType: string | undefined
  let isImport = false
  const hasBody = method !== 'GET' && method !== 'HEAD' ? true : r.chance(0.05)
  if (hasBody) {
    const kind = r.int(100)
    if (route.url === '/v1/datasets' && route.method === 'POST' && kind < 60) {
      const files = importFiles(ctx, r, mutations)
      const name = r.chance(0.9) ? `fuzz-${r.int(1e9)}` : String(r.pick(STRANGE_STRINGS))
      if (kind < 45) {
        const fields: Record<string, unknown> = { name, itemsTsv: files.itemsTsv, usersTsv: files.usersTsv }
        if (r.chance(0.1)) fields.description = r.pick(STRANGE_STRINGS)
        body = Buffer.from(JSON.stringify(fields))
        contentType = 'application/json'
        isImport = files.valid && method === 'POST' && mutations.length === 0
      } else {
        const boundary = r.chance(0.9) ? `fuzz${r.int(1e9)}` : r.pick(['', '"quoted"', 'a'.repeat(200), '--'])
        const parts: Part[] = [
          { name: 'name', data: name },
          { name: 'items', filename: 'items.tsv', type: 'text/tab-separated-values', data: files.itemsTsv },
          { name: 'users', filename: 'users.tsv', type: 'text/tab-separated-values', data: files.usersTsv },
        ]
        if (r.chance(0.2)) {
          parts.splice(r.int(parts.length), 1)
          mutations.push('multipart part missing')
        }
        if (r.chance(0.1)) parts.push({ name: r.pick(['items', 'extra', '', 'name']), filename: 'x.bin', type: 'application/octet-stream', data: Buffer.from([0xff, 0xfe, 0x00, 0x81]) })
        body = multipart(boundary, parts, r, mutations)
        contentType = `multipart/form-data; boundary=${boundary}`
        mutations.push('multipart')
      }
    } else if (kind < 25) {
      body = Buffer.from(JSON.stringify(validBody(route, ctx, r)))
      contentType = 'application/json'
    } else if (kind < 60) {
      body = Buffer.from(JSON.stringify(mutateObject(validBody(route, ctx, r), r, mutations)))
      contentType = 'application/json'
    } else if (kind < 72) {
      const text = JSON.stringify(validBody(route, ctx, r))
      const broken = r.pick([
        text.slice(0, r.int(text.length)),
        text + ',',
        text.replace(/"/, "'"),
        `{"a":NaN}`,
        `{"a":1,}`,
        `[${text}]`,
        `\ufeff${text}`,
        `${text}${text}`,
        `{"k": 1e999999}`,
        `/* comment */${text}`,
        `{"__proto__":{"polluted":true},"k":1}`,
        `{"a":"\\ud800"}`,
        `"just a string"`,
        `null`,
        `123`,
        ``,
      ])
      body = Buffer.from(broken)
      contentType = 'application/json'
      mutations.push('invalid or odd JSON')
    } else if (kind < 78) {
      body = Buffer.from(Array.from({ length: r.int(4096) }, () => r.int(256)))
      contentType = r.pick(CONTENT_TYPES)
      mutations.push('binary garbage')
    } else if (kind < 84) {
      const boundary = `fuzz${r.int(1e6)}`
      const fields = validBody(route, ctx, r)
      body = multipart(boundary, Object.entries(fields).map(([name, v]) => ({ name, data: typeof v === 'string' ? v : JSON.stringify(v) })), r, mutations)
      if (route.url === '/v1/items' && r.chance(0.5)) {
        body = multipart(boundary, [...Object.entries(fields).map(([name, v]): Part => ({ name, data: String(v) })), { name: 'image', filename: 'x.png', type: r.pick(['image/png', 'image/jpeg', 'text/html']), data: Buffer.from([0x89, 0x50, 0x4e, 0x47, r.int(256), r.int(256)]) }], r, mutations)
        mutations.push('image file of garbage')
      }
      contentType = `multipart/form-data; boundary=${boundary}`
      mutations.push('multipart')
    } else if (kind < 88) {
      body = Buffer.from(new URLSearchParams(Object.entries(validBody(route, ctx, r)).map(([k, v]) => [k, String(v)])).toString())
      contentType = 'application/x-www-form-urlencoded'
      mutations.push('form-urlencoded')
    } else if (kind < 90) {
      // over the 1 MiB limit of the JSON routes
      body = Buffer.from(JSON.stringify({ ...validBody(route, ctx, r), pad: 'p'.repeat((1 << 20) + r.int(1000)) }))
      contentType = 'application/json'
      mutations.push('body over 1 MiB')
    } else {
      body = Buffer.from(JSON.stringify(validBody(route, ctx, r)))
      contentType = r.pick(CONTENT_TYPES)
      mutations.push(`content-type ${JSON.stringify(contentType)}`)
    }
  }

  // the headers
  const headers: [string, string][] = [
    ['Host', `127.0.0.1:${ctx.port}`],
    ['Connection', 'close'],
  ]
  if (r.chance(0.97)) headers.push(['Authorization', `Bearer ${ctx.apiKey}`])
  else mutations.push('no key')
  if (contentType !== undefined && r.chance(0.95)) headers.push(['Content-Type', contentType])
  else if (contentType !== undefined) mutations.push('no content-type')
  if (r.chance(0.15)) {
    const key = r.pick(['a', 'b', 'c', `k${r.int(1e6)}`, '', ' ', 'x'.repeat(300), '\u00ff'])
    headers.push(['Idempotency-Key', key])
    mutations.push(`idempotency-key ${JSON.stringify(key.slice(0, 10))}`)
  }
  if (r.chance(0.05)) {
    const h = r.pick<[string, string]>([
      ['Content-Encoding', 'gzip'],
      ['Content-Encoding', 'br'],
      ['Accept', 'application/xml'],
      ['Accept', '*/*;q=0'],
      ['Accept-Encoding', 'gzip, deflate, br'],
      ['X-Forwarded-For', '1.2.3.4, ::1'],
      ['X-API-Key', 'wrong-but-long-enough-0123456789'],
      ['Authorization', `Bearer ${ctx.apiKey}`],
      ['X-HTTP-Method-Override', 'DELETE'],
      ['Cookie', 'a=b; c'],
      ['Origin', 'http://evil.example'],
      ['Content-Type', 'text/plain'],
      ['Range', 'bytes=0-1'],
      ['If-None-Match', '*'],
    ])
    headers.push(h)
    mutations.push(`header ${h[0]}: ${h[1].slice(0, 20)}`)
  }

  // the framing: a correct Content-Length (or chunked) almost always
  let mayHang = false
  const framing = r.int(200)
  if (framing === 0 && body.length > 2) {
    headers.push(['Content-Length', String(body.length + 10)])
    mayHang = true
    mutations.push('content-length longer than the body')
  } else if (framing === 1 && body.length > 2) {
    headers.push(['Content-Length', String(Math.floor(body.length / 2))])
    mutations.push('content-length shorter than the body')
  } else if (framing < 6 && body.length > 0) {
    headers.push(['Transfer-Encoding', 'chunked'])
    const size = body.length.toString(16)
    body = Buffer.concat([Buffer.from(`${size}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')])
    mutations.push('chunked')
  } else if (framing === 6) {
    headers.push(['Content-Length', 'abc'])
    mutations.push('content-length not a number')
  } else if (body.length > 0 || r.chance(0.5)) {
    headers.push(['Content-Length', String(body.length)])
  }
  if (isImport && mutations.length > 0) isImport = false
  return { route: `${route.method} ${route.url}`, mutations, method, target: path, headers, body, mayHang, isImport }
}
