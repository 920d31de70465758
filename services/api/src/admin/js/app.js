// Hash router: #/datasets, #/jobs[/<jobId>][?dataset=…], #/models[?compare=a,b], #/try[?dataset=…].
// Each page module exports render(root, ctx); ctx.signal aborts when the user navigates away
// (pages stop their polling and destroy their charts on it).
import { errorBox, h } from './ui.js'
import * as datasets from './pages/datasets.js'
import * as jobs from './pages/jobs.js'
import * as models from './pages/models.js'
import * as tryIt from './pages/try.js'

const PAGES = { datasets, jobs, models, try: tryIt }
const TITLES = { datasets: 'Datasets', jobs: 'Training jobs', models: 'Models', try: 'Try it' }

let current = null

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '')
  const [path, search = ''] = raw.split('?')
  const [page, ...args] = path.split('/').filter(Boolean).map(decodeURIComponent)
  return { page: page && page in PAGES ? page : 'datasets', args, query: new URLSearchParams(search) }
}

async function route() {
  current?.abort()
  const controller = new AbortController()
  current = controller
  const { page, args, query } = parseHash()
  for (const link of document.querySelectorAll('.nav a')) link.classList.toggle('active', link.dataset.page === page)
  document.title = `${TITLES[page]} · IISAN admin`
  const root = document.getElementById('view')
  root.replaceChildren(h('p', { class: 'loading' }, 'Loading…'))
  root.dataset.page = page
  try {
    await PAGES[page].render(root, { args, query, signal: controller.signal })
  } catch (e) {
    if (controller.signal.aborted) return
    root.replaceChildren(h('h1', { class: 'page-title' }, TITLES[page]), errorBox(e))
  }
}

async function health() {
  const el = document.getElementById('health')
  try {
    const res = await fetch('/healthz')
    const body = await res.json()
    const dot = (name, check) => h('span', { class: `dot ${check?.ok ? 'ok' : 'bad'}`, title: check?.error ?? 'ok' }, name)
    el.replaceChildren(dot('Postgres', body.postgres), dot('Redis', body.redis))
  } catch {
    el.replaceChildren(h('span', { class: 'dot bad' }, 'API unreachable'))
  }
}

window.addEventListener('hashchange', route)
route()
health()
setInterval(health, 15_000)
