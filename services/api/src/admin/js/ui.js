// Small DOM and formatting helpers shared by the pages.
import { ApiError, get } from './api.js'

/**
 * Element builder: h('a', { class: 'x', href: '#', onclick: fn }, 'text', child, [more]).
 * Attributes: `class`, `dataset` (object), `on<event>` handlers, booleans (true → present),
 * everything else via setAttribute. Children: strings, numbers, nodes, arrays; null/false skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (key === 'dataset') Object.assign(el.dataset, value)
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value)
    else if (key === 'value') el.value = value
    else if (value === true) el.setAttribute(key, '')
    else el.setAttribute(key, String(value))
  }
  append(el, children)
  return el
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    if (Array.isArray(child)) append(el, child)
    else el.append(child instanceof Node ? child : String(child))
  }
}

const en = (options) => new Intl.NumberFormat('en-US', options)
const intFmt = en({ maximumFractionDigits: 0 })

export const fmt = {
  int: (n) => (n === null || n === undefined ? '—' : intFmt.format(n)),
  /** Fixed decimals; '—' for missing values. */
  num: (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x) ? '—' : Number(x).toFixed(digits)),
  pct: (fraction) => (fraction === null || fraction === undefined ? '—' : `${Math.round(fraction * 100)}%`),
  /** 1234567 → '1.23 M' */
  compact: (n) => (n === null || n === undefined ? '—' : en({ notation: 'compact', maximumFractionDigits: 2 }).format(n)),
  mb: (x) => (x === null || x === undefined ? '—' : `${en({ maximumFractionDigits: 0 }).format(x)} MB`),
  seconds: (s) => (s === null || s === undefined ? '—' : s < 10 ? `${s.toFixed(2)} s` : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`),
  date: (iso) => (iso ? new Date(iso).toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' }) : '—'),
  shortId: (id) => (id ? id.slice(0, 8) : '—'),
}

/** Time between two ISO dates (or until now), e.g. '1 min 12 s'. */
export function duration(fromIso, toIso) {
  if (!fromIso) return '—'
  const s = Math.max(0, Math.round(((toIso ? Date.parse(toIso) : Date.now()) - Date.parse(fromIso)) / 1000))
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`
}

/** An inline error: the API's code and message. */
export function errorBox(err) {
  const box = h('div', { class: 'error', role: 'alert' })
  if (err instanceof ApiError) box.append(h('strong', { class: 'error-code' }, err.code), ' ', err.message)
  else box.append(err instanceof Error ? err.message : String(err))
  return box
}

/** Replace the content of `slot` with an error box (or clear it with `null`). */
export function showError(slot, err) {
  slot.replaceChildren(...(err ? [errorBox(err)] : []))
}

export function statusBadge(status) {
  return h('span', { class: `badge badge-${status}`, dataset: { status } }, status)
}

/** A progress bar; `fraction` in 0..1. */
export function progressBar(fraction, { label, tone } = {}) {
  const f = Math.max(0, Math.min(1, fraction ?? 0))
  return h(
    'div',
    { class: `progress${tone ? ` progress-${tone}` : ''}`, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(f * 100) },
    h('div', { class: 'progress-fill', style: `width: ${(f * 100).toFixed(1)}%` }),
    label ? h('span', { class: 'progress-label' }, label) : null,
  )
}

/**
 * Asks before something that cannot be undone: a modal dialog with the question and two buttons.
 * Resolves true when confirmed; Cancel or Escape resolve false. `confirm` labels the button.
 */
export function confirmDialog({ title, message, confirm = 'Delete' }) {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog',
      { class: 'confirm-dialog', 'aria-label': title },
      h(
        'form',
        { method: 'dialog' },
        h('h2', { class: 'card-title' }, title),
        h('p', {}, message),
        h(
          'div',
          { class: 'form-actions' },
          h('button', { type: 'submit', value: 'cancel', class: 'secondary', autofocus: true }, 'Cancel'),
          h('button', { type: 'submit', value: 'confirm', class: 'danger confirm' }, confirm),
        ),
      ),
    )
    dialog.addEventListener('close', () => {
      dialog.remove()
      resolve(dialog.returnValue === 'confirm')
    })
    document.body.append(dialog)
    dialog.showModal()
  })
}

export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', { class: 'card-title' }, title) : null, ...children)
}

export function empty(text) {
  return h('p', { class: 'empty' }, text)
}

/** <select> of datasets; `includeAll` adds an "All datasets" choice with value ''. */
export function datasetSelect(datasets, { selected, includeAll = false, id, onchange } = {}) {
  return h(
    'select',
    { id, name: 'datasetId', onchange },
    includeAll ? h('option', { value: '' }, 'All datasets') : null,
    datasets.map((d) => h('option', { value: d.id, selected: d.id === selected }, `${d.name} (${fmt.int(d.numItems)} items)`)),
  )
}

let datasetsCache
/** GET /v1/datasets, cached for the page's lifetime (the Datasets page, where they are deleted, refreshes it). */
export async function loadDatasets({ refresh = false } = {}) {
  if (!datasetsCache || refresh) datasetsCache = get('/v1/datasets').then((r) => r.datasets)
  try {
    return await datasetsCache
  } catch (e) {
    datasetsCache = undefined
    throw e
  }
}

/**
 * Run `tick` now and again until `signal` aborts or `tick` returns false. `tick` may return the
 * delay before the next run in ms (default `ms`).
 */
export function poll(tick, ms, signal) {
  let timer
  const loop = async () => {
    if (signal.aborted) return
    let next = ms
    try {
      const r = await tick()
      next = r === false ? -1 : typeof r === 'number' ? r : ms
    } catch (e) {
      if (signal.aborted) return
      console.warn('poll failed', e)
    }
    if (next >= 0 && !signal.aborted) timer = setTimeout(loop, next)
  }
  signal.addEventListener('abort', () => clearTimeout(timer))
  return loop()
}
