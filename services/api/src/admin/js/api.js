// The one way the dashboard talks to the API: JSON in, JSON out, and the API's error bodies
// `{ error: { code, message, details? } }` turned into an ApiError the pages can show as is.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 when the API could not be reached)
   * @param {string} code machine-readable code from the API, e.g. VALIDATION_FAILED
   * @param {string} message
   * @param {unknown} [details]
   */
  constructor(status, code, message, details) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.details = details
  }
}

const KEY_STORAGE = 'iisan.apiKey'

/**
 * @param {string} path e.g. '/v1/datasets'
 * @param {{ method?: string, body?: unknown, signal?: AbortSignal }} [options]
 */
export async function api(path, { method = 'GET', body, signal } = {}, retried = false) {
  /** @type {RequestInit} */
  const init = { method, signal, headers: { accept: 'application/json' } }
  // A deployment with API_KEYS: the key lives in this browser only, asked for on the first 401.
  const key = localStorage.getItem(KEY_STORAGE)
  if (key) init.headers = { ...init.headers, authorization: `Bearer ${key}` }
  // No body → no content-type: Fastify rejects an empty body declared as JSON.
  if (body !== undefined) {
    init.headers = { ...init.headers, 'content-type': 'application/json' }
    init.body = JSON.stringify(body)
  }
  let res
  try {
    res = await fetch(path, init)
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e
    throw new ApiError(0, 'NETWORK', `cannot reach the API (${e instanceof Error ? e.message : e})`)
  }
  const text = await res.text()
  let data = null
  if (text) {
    try {
      data = JSON.parse(text)
    } catch {
      data = null
    }
  }
  if (res.status === 401 && !retried) {
    const entered = window.prompt('This API needs a key (API_KEYS). Enter it to continue:')
    if (entered) {
      localStorage.setItem(KEY_STORAGE, entered.trim())
      return api(path, { method, body, signal }, true)
    }
  }
  if (!res.ok) {
    const err = data && typeof data === 'object' && data.error
    if (err && typeof err === 'object') throw new ApiError(res.status, String(err.code ?? `HTTP_${res.status}`), String(err.message ?? res.statusText), err.details)
    throw new ApiError(res.status, `HTTP_${res.status}`, text.slice(0, 300) || res.statusText)
  }
  return data
}

export const get = (path, options = {}) => api(path, options)
export const post = (path, body, options = {}) => api(path, { ...options, method: 'POST', body })

/** '?a=1&b=x' from an object, skipping undefined / null / '' values. */
export function query(params) {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v))
  const s = q.toString()
  return s ? `?${s}` : ''
}

/** Is this a 404 (of an unknown route or an unknown resource)? */
export const isNotFound = (e) => e instanceof ApiError && e.status === 404
