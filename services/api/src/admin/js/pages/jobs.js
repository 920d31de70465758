// Training jobs: start one, watch it live (progress, per-epoch loss / HR@10 / NDCG@10 curves),
// cancel it. #/jobs/<id> selects a job; without an id the newest one is shown.
import { get, post } from '../api.js'
import { trainingChart, updateTrainingChart, disposeOn } from '../charts.js'
import { card, datasetSelect, duration, empty, fmt, h, loadDatasets, poll, progressBar, showError, statusBadge } from '../ui.js'
import { demoBadge } from './models.js'

const ACTIVE = new Set(['queued', 'running'])
const FAST_MS = 1000
const SLOW_MS = 5000

export async function render(root, { args, query, signal }) {
  const [datasets, { methods, defaults }, { jobs }] = await Promise.all([loadDatasets(), trainingRequest(signal), get('/v1/training-jobs', { signal })])
  const names = new Map(datasets.map((d) => [d.id, d.name]))
  const selectedId = args[0] ?? jobs[0]?.id
  const selectedJob = jobs.find((j) => j.id === selectedId)

  const listBody = h('tbody')
  const listError = h('div')
  const detail = selectedId ? jobDetail(selectedId, names, signal) : null

  root.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', { class: 'page-title' }, 'Training jobs'), h('p', { class: 'page-sub' }, 'Progress is polled every second while a job runs.')),
    h(
      'div',
      { class: 'grid-2' },
      startForm(datasets, methods, defaults, query.get('dataset') ?? selectedJob?.datasetId),
      card(
        'Jobs',
        listError,
        h(
          'div',
          { class: 'table-scroll' },
          h(
            'table',
            { class: 'table jobs-table' },
            h('thead', {}, h('tr', {}, ['status', 'job', 'dataset', 'method', 'progress', 'created', 'took'].map((c) => h('th', {}, c)))),
            listBody,
          ),
        ),
      ),
    ),
    detail ? detail.element : card('Job', empty('No training jobs yet: start one above.')),
  )

  const renderList = (list) => {
    listBody.replaceChildren(...(list.length ? list.map((j) => jobRow(j, names, j.id === selectedId)) : [h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No jobs yet.'))]))
  }
  renderList(jobs)

  let first = true
  await poll(
    async () => {
      let list = jobs
      if (!first) {
        try {
          list = (await get('/v1/training-jobs', { signal })).jobs
          showError(listError, null)
        } catch (e) {
          if (!signal.aborted) showError(listError, e)
        }
        renderList(list)
      }
      first = false
      const job = detail ? await detail.refresh() : undefined
      const anyActive = list.some((j) => ACTIVE.has(j.status)) || (job && ACTIVE.has(job.status))
      return anyActive ? FAST_MS : SLOW_MS
    },
    FAST_MS,
    signal,
  )
}

function startForm(datasets, methods, defaults, selectedDataset) {
  const byDefault = (name) => (defaults[name] === undefined ? undefined : `default ${defaults[name]}`)
  const error = h('div', { class: 'form-error' })
  const button = h('button', { type: 'submit' }, 'Start training')
  const form = h(
    'form',
    { class: 'form', id: 'start-job' },
    h('label', {}, h('span', {}, 'Dataset'), datasetSelect(datasets, { selected: selectedDataset, id: 'job-dataset' })),
    h('label', {}, h('span', {}, 'Method'), h('select', { name: 'method', id: 'job-method' }, methods.map((m) => h('option', { value: m }, m)))),
    h('label', {}, h('span', {}, 'Max epochs'), h('input', { type: 'number', name: 'maxEpochs', id: 'job-max-epochs', min: 1, max: 1000, value: '10', required: true })),
    h(
      'details',
      { class: 'advanced' },
      h('summary', {}, 'Advanced'),
      h(
        'div',
        { class: 'row' },
        h('label', { class: 'stack grow' }, h('span', {}, 'Early-stopping patience'), h('input', { type: 'number', name: 'patience', id: 'job-patience', min: 1, max: 1000, placeholder: byDefault('patience') })),
        h('label', { class: 'stack grow' }, h('span', {}, 'Batch size'), h('input', { type: 'number', name: 'batchSize', id: 'job-batch-size', min: 2, max: 4096, placeholder: byDefault('batchSize') })),
      ),
    ),
    h('div', { class: 'form-actions' }, button),
    error,
  )
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const data = new FormData(form)
    showError(error, null)
    if (!data.get('datasetId')) return showError(error, new Error('Import a dataset first.'))
    button.disabled = true
    try {
      const job = await post('/v1/training-jobs', {
        datasetId: data.get('datasetId'),
        method: data.get('method'),
        config: numbers(data, ['maxEpochs', 'patience', 'batchSize']),
      })
      location.hash = `#/jobs/${job.id}`
    } catch (e) {
      showError(error, e)
    } finally {
      button.disabled = false
    }
  })
  return card('Start a training job', form, h('p', { class: 'hint' }, `Unset options use the paper’s defaults (the epoch with the best validation ${defaults.selectBy === 'ndcg10' ? 'NDCG@10' : 'HR@10'} is kept). The first model of a dataset is activated automatically; later ones on the Models page.`))
}

/** The filled-in numeric fields of a form; empty ones are left to the API's defaults. */
function numbers(data, names) {
  return Object.fromEntries(names.filter((n) => String(data.get(n) ?? '').trim() !== '').map((n) => [n, Number(data.get(n))]))
}

function jobRow(j, names, selected) {
  const p = j.progress ?? {}
  return h(
    'tr',
    { class: `clickable${selected ? ' selected' : ''}`, dataset: { jobId: j.id, status: j.status }, onclick: () => (location.hash = `#/jobs/${j.id}`) },
    h('td', {}, statusBadge(j.status), j.stale ? h('span', { class: 'badge badge-failed', title: 'no sign of life from its worker: being taken over', dataset: { stale: 'true' } }, 'stale') : null),
    h('td', { class: 'mono' }, h('a', { href: `#/jobs/${j.id}` }, fmt.shortId(j.id))),
    h('td', {}, names.get(j.datasetId) ?? fmt.shortId(j.datasetId)),
    h('td', {}, j.method, ' ', demoBadge(p.warnings, p.demoBackbones)),
    h('td', { class: 'wide' }, progressBar(p.fraction ?? (j.status === 'completed' ? 1 : 0), { label: fmt.pct(p.fraction ?? 0), tone: toneOf(j.status) })),
    h('td', { class: 'nowrap' }, fmt.date(j.createdAt)),
    h('td', { class: 'nowrap' }, duration(j.startedAt, j.finishedAt)),
  )
}

const toneOf = (status) => ({ completed: 'done', failed: 'bad', cancelled: 'muted' })[status]

/** The selected job: built once, refreshed by the page's poll. */
function jobDetail(jobId, names, signal) {
  const title = h('h2', { class: 'card-title' }, `Job ${fmt.shortId(jobId)}`)
  const badge = h('span')
  const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel-job', hidden: true }, 'Cancel job')
  const failure = h('div')
  const fetchError = h('div')
  const actionError = h('div')
  const progress = h('div', { class: 'job-progress' })
  const facts = h('dl', { class: 'facts' })
  const canvas = h('canvas', { id: 'training-chart', dataset: { jobId }, 'aria-label': 'training curves per epoch' })
  const chartNote = h('p', { class: 'chart-note muted' })
  const epochsBody = h('tbody')
  const chart = disposeOn(signal, trainingChart(canvas, []))
  let shownEpochs = -1

  cancel.addEventListener('click', async () => {
    cancel.disabled = true
    showError(actionError, null)
    try {
      await post(`/v1/training-jobs/${jobId}/cancel`)
      await refresh()
    } catch (e) {
      showError(actionError, e)
      cancel.disabled = false
    }
  })

  const element = h(
    'section',
    { class: 'card job-detail', dataset: { jobId } },
    h('div', { class: 'card-head' }, h('div', { class: 'title-row' }, title, badge), cancel),
    failure,
    fetchError,
    actionError,
    progress,
    h(
      'div',
      { class: 'grid-detail' },
      h('div', { class: 'chart-panel' }, h('h3', { class: 'section-title' }, 'Per-epoch curves'), h('div', { class: 'chart-box' }, canvas), chartNote),
      h('div', {}, h('h3', { class: 'section-title' }, 'Details'), facts),
    ),
    h('h3', { class: 'section-title' }, 'Epochs'),
    h(
      'div',
      { class: 'table-scroll' },
      h(
        'table',
        { class: 'table epochs-table' },
        h('thead', {}, h('tr', {}, ['epoch', 'train loss', 'val HR@10', 'val NDCG@10', 'seconds', 'steps/s'].map((c) => h('th', { class: c === 'epoch' ? '' : 'num' }, c)))),
        epochsBody,
      ),
    ),
  )

  async function refresh() {
    let job
    try {
      job = await get(`/v1/training-jobs/${jobId}`, { signal })
    } catch (e) {
      if (!signal.aborted) showError(fetchError, e)
      return undefined
    }
    showError(fetchError, null)
    element.dataset.status = job.status
    badge.replaceChildren(statusBadge(job.status))
    title.textContent = `Job ${fmt.shortId(job.id)} · ${job.method} on ${names.get(job.datasetId) ?? fmt.shortId(job.datasetId)}`
    const active = ACTIVE.has(job.status)
    cancel.hidden = !active
    cancel.disabled = job.cancelRequested
    cancel.textContent = job.cancelRequested ? 'Cancelling…' : 'Cancel job'
    showError(failure, job.status === 'failed' ? new Error(`Training failed: ${job.error ?? 'no reason recorded'}`) : null)
    progress.replaceChildren(...progressView(job))
    facts.replaceChildren(...factsView(job))
    if (job.epochs.length !== shownEpochs) {
      shownEpochs = job.epochs.length
      updateTrainingChart(chart, job.epochs)
      epochsBody.replaceChildren(
        ...job.epochs.map((e) =>
          h(
            'tr',
            { dataset: { epoch: e.epoch } },
            h('td', {}, String(e.epoch)),
            h('td', { class: 'num' }, fmt.num(e.trainLoss, 4)),
            h('td', { class: 'num' }, fmt.num(e.valHr10, 4)),
            h('td', { class: 'num' }, fmt.num(e.valNdcg10, 4)),
            h('td', { class: 'num' }, fmt.num(e.seconds, 2)),
            h('td', { class: 'num' }, fmt.num(e.extra?.stepsPerSecond, 1)),
          ),
        ),
      )
    }
    chartNote.textContent = job.epochs.length ? '' : active ? 'The curves appear after the first epoch.' : 'No epoch finished.'
    return job
  }

  return { element, refresh }
}

function progressView(job) {
  const p = job.progress ?? {}
  const fraction = p.fraction ?? (job.status === 'completed' ? 1 : 0)
  const epochPart = p.epoch ? `epoch ${p.epoch}/${p.maxEpochs ?? '?'}` : null
  const label = [fmt.pct(fraction), epochPart].filter(Boolean).join(' · ')
  const parts = [
    ['phase', p.phase ?? job.status],
    p.epoch ? ['epoch', `${p.epoch} / ${p.maxEpochs ?? '?'}`] : null,
    p.step ? ['step', `${p.step} / ${p.stepsPerEpoch ?? '?'}`] : null,
    p.loss !== undefined ? ['loss', fmt.num(p.loss, 4)] : null,
    p.valHr10 !== undefined ? ['val HR@10', fmt.num(p.valHr10, 4)] : null,
    p.valNdcg10 !== undefined ? ['val NDCG@10', fmt.num(p.valNdcg10, 4)] : null,
    p.stepsPerSecond !== undefined ? ['steps/s', fmt.num(p.stepsPerSecond, 1)] : null,
  ].filter(Boolean)
  return [
    progressBar(fraction, { label, tone: toneOf(job.status) }),
    h(
      'div',
      { class: 'live' },
      parts.map(([k, v]) => h('span', { class: 'live-item', dataset: { field: k } }, h('span', { class: 'live-key' }, k), h('span', { class: 'live-value' }, v))),
    ),
    ...(p.warnings ?? []).map((w) => h('p', { class: 'hint', dataset: { warning: 'true' } }, w)),
  ]
}

function factsView(job) {
  const c = job.config ?? {}
  const rows = [
    ['Job id', h('span', { class: 'mono' }, job.id)],
    ['Created', fmt.date(job.createdAt)],
    ['Started', `${fmt.date(job.startedAt)}${job.attempts > 1 ? ` · attempt ${job.attempts}` : ''}${job.progress?.resumedFromEpoch ? ` · resumed after epoch ${job.progress.resumedFromEpoch}` : ''}`],
    ['Worker heartbeat', job.heartbeatAt ? `${fmt.date(job.heartbeatAt)}${job.stale ? ' — stale: the worker is gone, another takes the job over' : ''}` : '—'],
    ...(job.retryAt && job.status === 'queued' ? [['Retry', `not before ${fmt.date(job.retryAt)}`]] : []),
    ['Finished', job.finishedAt ? `${fmt.date(job.finishedAt)} (${duration(job.startedAt, job.finishedAt)})` : ACTIVE.has(job.status) ? `running for ${duration(job.startedAt)}` : '—'],
    ['Config', `max ${c.maxEpochs} epochs · batch ${c.batchSize} · patience ${c.patience} on ${c.selectBy === 'ndcg10' ? 'NDCG@10' : 'HR@10'} · D=${c.embeddingDim}`],
    ['Learning rates', learningRates(job.method, c)],
    ['Model version', job.modelVersionId ? h('a', { href: '#/models', class: 'mono' }, job.modelVersionId) : h('span', { class: 'muted' }, job.status === 'completed' ? '—' : 'written when training completes')],
  ]
  return rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])
}

let requestCache
/**
 * The methods and config defaults the API accepts, read from its OpenAPI document: the dashboard
 * never keeps a copy of them (falls back to the known two methods, no defaults).
 */
async function trainingRequest(signal) {
  if (!requestCache) {
    requestCache = get('/docs/json', { signal })
      .then((doc) => {
        const properties = doc.paths['/v1/training-jobs'].post.requestBody.content['application/json'].schema.properties
        const list = properties.method.enum ?? properties.method.anyOf?.map((s) => s.const ?? s.enum?.[0])
        const config = properties.config?.properties ?? {}
        const defaults = Object.fromEntries(Object.entries(config).flatMap(([k, v]) => (v.default === undefined ? [] : [[k, v.default]])))
        return { methods: Array.isArray(list) && list.length ? list : null, defaults }
      })
      .catch(() => ({ methods: null, defaults: {} }))
      .then(({ methods, defaults }) => ({ methods: methods ?? ['sasrec-id', 'iisan'], defaults }))
  }
  return requestCache
}

/** Each learning rate the job's method uses, by the name its config gives it. */
function learningRates(method, c) {
  const rates = method === 'sasrec-id' || !('lrTextEncoder' in c) ? ['lrItem', 'lrUser'] : ['lrTextEncoder', 'lrImageEncoder', 'lrTextAdapters', 'lrImageAdapters', 'lrUser']
  return rates.filter((k) => c[k] !== undefined).map((k) => `${k.slice(2)} ${c[k]}`).join(' · ')
}
