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
  const [datasets, { methods }, { jobs }] = await Promise.all([loadDatasets(), get('/v1/methods', { signal }), get('/v1/training-jobs', { signal })])
  const names = new Map(datasets.map((d) => [d.id, d.name]))
  const selectedId = args[0] ?? jobs[0]?.id
  const selectedJob = jobs.find((j) => j.id === selectedId)

  const listBody = h('tbody')
  const listError = h('div')
  const detail = selectedId ? jobDetail(selectedId, names, methods, signal) : null

  root.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', { class: 'page-title' }, 'Training jobs'), h('p', { class: 'page-sub' }, 'Progress is polled every second while a job runs.')),
    h(
      'div',
      { class: 'grid-2' },
      startForm(datasets, methods, query.get('dataset') ?? selectedJob?.datasetId),
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
      }
      first = false
      const job = detail ? await detail.refresh() : undefined
      // The detail was read after the list, so its status is the newer one: the row must not
      // still say "running" beside a detail that says "completed".
      if (job) list = list.map((j) => (j.id === job.id ? { ...j, ...job } : j))
      renderList(list)
      const anyActive = list.some((j) => ACTIVE.has(j.status)) || (job && ACTIVE.has(job.status))
      return anyActive ? FAST_MS : SLOW_MS
    },
    FAST_MS,
    signal,
  )
}

/**
 * The new-job form, built from GET /v1/methods: one choice per registered method, its summary and
 * whether it can cold-start, and its learning rates (one per parameter group) and own numeric
 * settings with the method's defaults as placeholders. Empty fields are left to the API, which
 * fills in the same defaults.
 */
function startForm(datasets, methods, selectedDataset) {
  const error = h('div', { class: 'form-error' })
  const button = h('button', { type: 'submit' }, 'Start training')
  const methodSelect = h('select', { name: 'method', id: 'job-method' }, methods.map((m) => h('option', { value: m.name, title: m.summary }, m.name)))
  const about = h('div', { class: 'method-about', id: 'job-method-about' })
  const methodFields = h('div', { class: 'method-fields', id: 'job-method-fields' })
  const hint = h('p', { class: 'hint' })
  const sharedKeys = new Set(methods.map((m) => m.configKeys).reduce((a, b) => a.filter((k) => b.includes(k)), methods[0]?.configKeys ?? []))
  // shared settings: the inputs stay (and keep what was typed); their placeholders follow the method
  const shared = [configInput('patience', 'Early-stopping patience', { id: 'job-patience', min: 1, max: 1000, step: 1 }), configInput('batchSize', 'Batch size', { id: 'job-batch-size', min: 2, max: 4096, step: 1 })]
  const form = h(
    'form',
    { class: 'form', id: 'start-job' },
    h('label', {}, h('span', {}, 'Dataset'), datasetSelect(datasets, { selected: selectedDataset, id: 'job-dataset' })),
    h('label', {}, h('span', {}, 'Method'), methodSelect),
    about,
    h('label', {}, h('span', {}, 'Max epochs'), h('input', { type: 'number', name: 'maxEpochs', id: 'job-max-epochs', min: 1, max: 1000, value: '10', required: true, dataset: { config: 'maxEpochs' } })),
    h('details', { class: 'advanced' }, h('summary', {}, 'Advanced'), h('div', { class: 'row' }, shared.map((f) => f.label)), methodFields),
    h('div', { class: 'form-actions' }, button),
    error,
  )

  const showMethod = () => {
    const method = methods.find((m) => m.name === methodSelect.value)
    if (!method) return
    form.dataset.method = method.name
    about.replaceChildren(...methodAbout(method))
    for (const f of shared) f.setDefault(method.defaults[f.key])
    methodFields.replaceChildren(...methodSettings(method, sharedKeys))
    hint.textContent = `Unset options use the paper’s defaults for ${method.name} (the epoch with the best validation ${method.defaults.selectBy === 'ndcg10' ? 'NDCG@10' : 'HR@10'} is kept). The first model of a dataset is activated automatically; later ones on the Models page.`
  }
  methodSelect.addEventListener('change', showMethod)
  showMethod()

  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const data = new FormData(form)
    showError(error, null)
    if (!data.get('datasetId')) return showError(error, new Error('Import a dataset first.'))
    button.disabled = true
    try {
      const job = await post('/v1/training-jobs', { datasetId: data.get('datasetId'), method: data.get('method'), config: filledIn(form) })
      location.hash = `#/jobs/${job.id}`
    } catch (e) {
      showError(error, e)
    } finally {
      button.disabled = false
    }
  })
  return card('Start a training job', form, hint)
}

/** The method's summary, what it reads and whether it can embed new items without retraining. */
function methodAbout(method) {
  const coldStart = method.capabilities.coldStart
  return [
    h('p', { class: 'method-summary' }, method.summary),
    h(
      'div',
      { class: 'method-badges' },
      h('span', { class: `badge ${coldStart ? 'badge-completed' : 'badge-cancelled'}`, dataset: { coldStart: String(coldStart) }, title: coldStart ? 'items added after training are embedded from their content and recommended at once' : 'items added after training are not recommended until a model is trained again' }, coldStart ? 'cold start' : 'no cold start'),
      h('span', { class: 'badge', dataset: { reads: method.reads } }, `reads ${method.reads}`),
    ),
  ]
}

/**
 * One learning rate per parameter group, then the method's own settings that take a number (the
 * others, such as IISAN's side layers, are left to the API's defaults here). `sharedKeys`: the
 * keys every method reads.
 */
function methodSettings(method, sharedKeys) {
  const rates = method.paramGroups.map((g) => configInput(g.rateKey, `${g.group} rate`, { title: g.holds, min: 0, max: 1, step: 'any' }, method.defaults[g.rateKey]))
  const own = method.configKeys.filter((k) => !sharedKeys.has(k) && typeof method.defaults[k] === 'number')
  const settings = own.map((k) => configInput(k, k, { min: 0, step: 'any' }, method.defaults[k]))
  const section = (title, fields) => (fields.length ? [h('h3', { class: 'section-title' }, title), h('div', { class: 'field-grid' }, fields.map((f) => f.label))] : [])
  return [...section('Learning rates', rates), ...section(`${method.name} settings`, settings)]
}

/** A numeric config field: empty means "the method's default", shown as its placeholder. */
function configInput(key, text, attrs, defaultValue) {
  const input = h('input', { type: 'number', name: key, ...attrs, dataset: { config: key } })
  const setDefault = (value) => {
    input.placeholder = value === undefined ? '' : `default ${value}`
    if (value === undefined) delete input.dataset.default
    else input.dataset.default = String(value)
  }
  setDefault(defaultValue)
  return { key, input, setDefault, label: h('label', { class: 'stack grow', title: attrs.title }, h('span', {}, text), input) }
}

/** The config fields that were filled in, as numbers; empty ones are left to the API's defaults. */
function filledIn(form) {
  const fields = [...form.querySelectorAll('input[data-config]')].filter((i) => i.value.trim() !== '')
  return Object.fromEntries(fields.map((i) => [i.dataset.config, Number(i.value)]))
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
function jobDetail(jobId, names, methods, signal) {
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
    facts.replaceChildren(...factsView(job, methods.find((m) => m.name === job.method)))
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

function factsView(job, method) {
  const c = job.config ?? {}
  const rows = [
    ['Job id', h('span', { class: 'mono' }, job.id)],
    ['Created', fmt.date(job.createdAt)],
    ['Started', `${fmt.date(job.startedAt)}${job.attempts > 1 ? ` · attempt ${job.attempts}` : ''}${job.progress?.resumedFromEpoch ? ` · resumed after epoch ${job.progress.resumedFromEpoch}` : ''}`],
    ['Worker heartbeat', job.heartbeatAt ? `${fmt.date(job.heartbeatAt)}${job.stale ? ' — stale: the worker is gone, another takes the job over' : ''}` : '—'],
    ...(job.retryAt && job.status === 'queued' ? [['Retry', `not before ${fmt.date(job.retryAt)}`]] : []),
    ['Finished', job.finishedAt ? `${fmt.date(job.finishedAt)} (${duration(job.startedAt, job.finishedAt)})` : ACTIVE.has(job.status) ? `running for ${duration(job.startedAt)}` : '—'],
    ['Config', `max ${c.maxEpochs} epochs · batch ${c.batchSize} · patience ${c.patience} on ${c.selectBy === 'ndcg10' ? 'NDCG@10' : 'HR@10'} · D=${c.embeddingDim}`],
    ['Learning rates', learningRates(method, c)],
    ['Model version', job.modelVersionId ? h('a', { href: '#/models', class: 'mono' }, job.modelVersionId) : h('span', { class: 'muted' }, job.status === 'completed' ? '—' : 'written when training completes')],
  ]
  return rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])
}

/**
 * Each learning rate the job trained with, by its parameter group (GET /v1/methods); a method
 * this API no longer knows shows every rate its config holds.
 */
function learningRates(method, c) {
  const rates = method ? method.paramGroups.map((g) => [g.group, g.rateKey]) : Object.keys(c).filter((k) => /^lr[A-Z]/.test(k)).map((k) => [k.slice(2), k])
  return rates.filter(([, k]) => c[k] !== undefined).map(([group, k]) => `${group} ${c[k]}`).join(' · ')
}
