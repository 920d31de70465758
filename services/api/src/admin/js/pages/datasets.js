// Datasets: size and shape of each catalogue, what training keeps of it, what is trained on it,
// how far the embedding cache (per-item backbone hidden states) has got; deleting one.
import { api, get, isNotFound } from '../api.js'
import { card, confirmDialog, empty, errorBox, fmt, h, loadDatasets, progressBar, showError } from '../ui.js'

export async function render(root, ctx) {
  const { signal } = ctx
  const [datasets, { jobs }, { modelVersions }] = await Promise.all([
    loadDatasets({ refresh: true }),
    get('/v1/training-jobs', { signal }),
    get('/v1/model-versions', { signal }),
  ])
  root.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', { class: 'page-title' }, 'Datasets'), h('p', { class: 'page-sub' }, `${datasets.length} dataset${datasets.length === 1 ? '' : 's'}`)),
  )
  if (!datasets.length) {
    root.append(card(null, empty('No datasets yet. Import items.tsv + users.tsv with POST /v1/datasets (or npm run quickstart).')))
    return
  }
  for (const d of datasets) {
    const coverage = h('div', { class: 'coverage', dataset: { datasetId: d.id } }, h('p', { class: 'muted' }, 'Loading cache coverage…'))
    const onDeleted = () => render(root, ctx)
    root.append(datasetCard(d, jobs.filter((j) => j.datasetId === d.id), modelVersions.filter((m) => m.datasetId === d.id), coverage, onDeleted))
    loadCoverage(d.id, coverage, signal)
  }
}

function datasetCard(d, jobs, versions, coverage, onDeleted) {
  const stats = d.stats && typeof d.stats === 'object' ? d.stats : {}
  const kept = stats.protocol ?? {}
  const active = versions.find((v) => v.isActive)
  const byStatus = jobs.reduce((acc, j) => ({ ...acc, [j.status]: (acc[j.status] ?? 0) + 1 }), {})
  const errorSlot = h('div', { class: 'delete-error' })
  const stat = (label, value, key) => h('div', { class: 'stat', dataset: { stat: key } }, h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label))
  return h(
    'section',
    { class: 'card dataset', dataset: { datasetId: d.id } },
    h(
      'div',
      { class: 'card-head' },
      h('div', {}, h('h2', { class: 'card-title dataset-name' }, d.name), d.description ? h('p', { class: 'muted' }, d.description) : null),
      h(
        'div',
        { class: 'actions' },
        h('a', { class: 'button', href: `#/jobs?dataset=${d.id}` }, 'Train'),
        h('a', { class: 'button secondary', href: `#/try?dataset=${d.id}` }, 'Try it'),
        deleteButton(d, jobs, versions, errorSlot, onDeleted),
      ),
    ),
    errorSlot,
    h(
      'div',
      { class: 'stats' },
      stat('items', fmt.int(d.numItems), 'items'),
      stat('users', fmt.int(d.numUsers), 'users'),
      stat('interactions', fmt.int(d.numInteractions), 'interactions'),
      stat('mean history length', fmt.num(stats.meanSequenceLength, 1), 'meanSequenceLength'),
      stat('density (distinct user–item pairs)', stats.density === undefined ? '—' : `${(stats.density * 100).toFixed(3)}%`, 'density'),
      stat('items never interacted', fmt.int(stats.coldItems), 'coldItems'),
      stat(`users kept for training (≥ ${kept.minInteractions ?? 5} interactions)`, fmt.int(kept.usersKept), 'usersKept'),
      stat(`items kept for training (last ${(kept.maxSeqLen ?? 10) + 3} per user)`, fmt.int(kept.itemsKept), 'itemsKept'),
    ),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Active model'),
      h('dd', {}, active ? h('a', { href: '#/models' }, `${active.method} · ${fmt.shortId(active.id)}`, ` (test HR@10 ${fmt.num(active.testHr10)})`) : h('span', { class: 'muted' }, 'none yet')),
      h('dt', {}, 'Model versions'),
      h('dd', {}, String(versions.length)),
      h('dt', {}, 'Training jobs'),
      h('dd', {}, jobs.length ? Object.entries(byStatus).map(([s, n]) => `${n} ${s}`).join(' · ') : h('span', { class: 'muted' }, 'none')),
      h('dt', {}, 'Created'),
      h('dd', {}, fmt.date(d.createdAt)),
      h('dt', {}, 'Id'),
      h('dd', { class: 'mono' }, d.id),
    ),
    h('h3', { class: 'section-title' }, 'Embedding cache coverage'),
    coverage,
  )
}

/** Delete, after asking: 409 (a running job) and other failures show in the card. */
function deleteButton(d, jobs, versions, errorSlot, onDeleted) {
  const button = h('button', { type: 'button', class: 'danger delete-dataset' }, 'Delete')
  button.addEventListener('click', async () => {
    const confirmed = await confirmDialog({
      title: `Delete dataset ${d.name}?`,
      message: `Its ${fmt.int(d.numItems)} items, ${fmt.int(d.numInteractions)} interactions, ${jobs.length} training job(s) and ${versions.length} model version(s) are deleted with it. This cannot be undone.`,
    })
    if (!confirmed) return
    button.disabled = true
    showError(errorSlot, null)
    try {
      await api(`/v1/datasets/${d.id}`, { method: 'DELETE' })
      onDeleted()
    } catch (e) {
      showError(errorSlot, e)
      button.disabled = false
    }
  })
  return button
}

/** GET /v1/datasets/:id/coverage; a 404 (route not deployed, or nothing cached) reads "no cache yet". */
async function loadCoverage(datasetId, slot, signal) {
  let backbones = []
  try {
    const res = await get(`/v1/datasets/${datasetId}/coverage`, { signal })
    backbones = Array.isArray(res?.backbones) ? res.backbones : []
  } catch (e) {
    if (signal.aborted) return
    if (!isNotFound(e)) {
      slot.replaceChildren(errorBox(e))
      return
    }
  }
  if (!backbones.length) {
    slot.replaceChildren(h('p', { class: 'empty no-cache' }, 'No cache yet — no backbone hidden states have been computed for this dataset’s items.'))
    return
  }
  slot.replaceChildren(
    h(
      'table',
      { class: 'table' },
      h('thead', {}, h('tr', {}, ['modality', 'backbone', 'fingerprint', 'coverage', 'failed', 'items/s'].map((c) => h('th', {}, c)))),
      h(
        'tbody',
        {},
        backbones.map((b) =>
          h(
            'tr',
            { dataset: { modality: b.modality } },
            h('td', {}, b.modality),
            h('td', {}, b.name ?? b.modelType ?? '—'),
            h('td', { class: 'mono', title: b.fingerprint }, String(b.fingerprint).slice(0, 12)),
            h('td', { class: 'wide' }, progressBar(b.total ? b.done / b.total : 0, { label: `${fmt.int(b.done)} / ${fmt.int(b.total)}`, tone: b.done >= b.total ? 'done' : undefined })),
            h('td', { class: b.failed ? 'num warn' : 'num' }, fmt.int(b.failed)),
            h('td', { class: 'num' }, b.itemsPerSecond === null || b.itemsPerSecond === undefined ? '—' : fmt.num(b.itemsPerSecond, 1)),
          ),
        ),
      ),
    ),
  )
}
