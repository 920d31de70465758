// Model versions: quality and efficiency of every version, activation, deletion, and a
// side-by-side comparison with TPME (docs/METHOD.md §8). #/models?dataset=<id>&compare=<id>,<id>,…
import { api, get, post, query as qs } from '../api.js'
import { COLORS, barChart, disposeOn } from '../charts.js'
import { card, confirmDialog, datasetSelect, empty, errorBox, fmt, h, loadDatasets, showError } from '../ui.js'

export async function render(root, { query, signal }) {
  const datasets = await loadDatasets()
  const names = new Map(datasets.map((d) => [d.id, d.name]))
  const datasetId = query.get('dataset') ?? ''
  const compareIds = (query.get('compare') ?? '').split(',').filter(Boolean)
  const selected = new Set(compareIds)

  const tableBody = h('tbody')
  const tableError = h('div')
  const compareButton = h('button', { type: 'button', id: 'compare-button', disabled: true }, 'Compare selected')
  const selectionNote = h('span', { class: 'muted' })
  const compareSlot = h('div', { id: 'compare' })

  const updateSelection = () => {
    compareButton.disabled = selected.size < 2
    selectionNote.textContent = selected.size < 2 ? 'Tick two or more versions to compare them.' : `${selected.size} selected`
  }
  compareButton.addEventListener('click', () => {
    location.hash = `#/models${qs({ dataset: datasetId, compare: [...selected].join(',') })}`
  })

  async function reload() {
    const { modelVersions } = await get(`/v1/model-versions${qs({ datasetId })}`, { signal })
    for (const id of [...selected]) if (!modelVersions.some((v) => v.id === id)) selected.delete(id)
    tableBody.replaceChildren(
      ...(modelVersions.length
        ? modelVersions.map((v) => versionRow(v, names, selected, updateSelection, { activate, remove }))
        : [h('tr', {}, h('td', { colspan: 13, class: 'empty' }, 'No model versions yet: train one on the Training jobs page.'))]),
    )
    updateSelection()
  }

  /** A row's action: its button stays disabled while it runs; the table reloads after it. */
  async function act(button, request) {
    button.disabled = true
    showError(tableError, null)
    try {
      await request()
      await reload()
    } catch (e) {
      showError(tableError, e)
      button.disabled = false
    }
  }
  const activate = (version, button) => act(button, () => post(`/v1/model-versions/${version.id}/activate`))
  async function remove(version, button) {
    const confirmed = await confirmDialog({
      title: `Delete model version ${version.method} · ${fmt.shortId(version.id)}?`,
      message: 'Its weights and item embeddings are deleted and no replica serves it any more; the training job that made it stays. This cannot be undone.',
    })
    if (confirmed) await act(button, () => api(`/v1/model-versions/${version.id}`, { method: 'DELETE' }))
  }

  root.replaceChildren(
    h(
      'div',
      { class: 'page-head' },
      h('h1', { class: 'page-title' }, 'Models'),
      h(
        'label',
        { class: 'inline-field' },
        h('span', {}, 'Dataset'),
        datasetSelect(datasets, { selected: datasetId, includeAll: true, id: 'models-dataset', onchange: (e) => (location.hash = `#/models${qs({ dataset: e.target.value })}`) }),
      ),
    ),
    card(
      'Model versions',
      tableError,
      h(
        'div',
        { class: 'table-scroll' },
        h(
          'table',
          { class: 'table versions-table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', {}, ''),
              ['version', 'dataset', 'created', 'epochs'].map((c) => h('th', {}, c)),
              ['val HR@10', 'val NDCG@10', 'test HR@10', 'test NDCG@10', 's / epoch', 'peak memory', 'params'].map((c) => h('th', { class: 'num' }, c)),
              h('th', {}, 'serving'),
            ),
          ),
          tableBody,
        ),
      ),
      h('div', { class: 'toolbar' }, compareButton, selectionNote),
    ),
    compareSlot,
  )
  await reload()
  if (compareIds.length >= 2) await renderComparison(compareSlot, compareIds, names, signal)
  else if (compareIds.length) compareSlot.replaceChildren(card('Comparison', empty('Pick at least two versions.')))
}

function versionRow(v, names, selected, onSelection, { activate, remove }) {
  const checkbox = h('input', { type: 'checkbox', 'aria-label': `select ${v.id}`, checked: selected.has(v.id) })
  checkbox.addEventListener('change', () => {
    if (checkbox.checked) selected.add(v.id)
    else selected.delete(v.id)
    onSelection()
  })
  const activateButton = h('button', { type: 'button', class: 'small secondary activate' }, 'Activate')
  activateButton.addEventListener('click', () => activate(v, activateButton))
  // no delete for the active version: it is its dataset's model until another is activated
  const deleteButton = h('button', { type: 'button', class: 'small danger delete-version' }, 'Delete')
  deleteButton.addEventListener('click', () => remove(v, deleteButton))
  return h(
    'tr',
    { dataset: { versionId: v.id }, class: v.isActive ? 'is-active' : '' },
    h('td', {}, checkbox),
    h('td', { class: 'nowrap' }, h('div', { class: 'strong' }, v.method), h('div', { class: 'mono muted small' }, fmt.shortId(v.id)), demoBadge(v.warnings, v.demoBackbones)),
    h('td', { class: 'dataset-cell' }, names.get(v.datasetId) ?? fmt.shortId(v.datasetId)),
    h('td', {}, fmt.date(v.createdAt)),
    h('td', { class: 'num' }, fmt.int(v.epochs)),
    h('td', { class: 'num' }, fmt.num(v.valHr10, 4)),
    h('td', { class: 'num' }, fmt.num(v.valNdcg10, 4)),
    h('td', { class: 'num' }, fmt.num(v.testHr10, 4)),
    h('td', { class: 'num' }, fmt.num(v.testNdcg10, 4)),
    h('td', { class: 'num' }, fmt.seconds(v.secondsPerEpoch)),
    h('td', { class: 'num' }, fmt.mb(v.peakMemoryMb)),
    h('td', { class: 'num', title: fmt.int(v.trainableParams) }, fmt.compact(v.trainableParams)),
    h('td', {}, v.isActive ? h('span', { class: 'badge badge-active' }, 'active') : h('div', { class: 'row-actions' }, activateButton, deleteButton)),
  )
}

/** Trained on the demo backbones (random weights): its numbers say nothing about IISAN; the title says how to fix it. */
export function demoBadge(warnings, demoBackbones) {
  if (!demoBackbones?.length) return null
  return h('span', { class: 'badge badge-queued', dataset: { demoBackbones: demoBackbones.join(',') }, title: (warnings ?? []).join('\n') }, 'demo backbones')
}

/** GET /v1/model-versions/compare: a side-by-side table and two bar charts. */
async function renderComparison(slot, ids, names, signal) {
  let result
  try {
    result = await get(`/v1/model-versions/compare${qs({ ids: ids.join(',') })}`, { signal })
  } catch (e) {
    if (!signal.aborted) slot.replaceChildren(card('Comparison', errorBox(e)))
    return
  }
  const { weights, versions } = result
  const labels = versions.map((v) => `${v.method} #${fmt.shortId(v.id)}`)
  const best = (values, pick) => {
    const present = values.filter((x) => x !== null && x !== undefined)
    return present.length ? pick(...present) : undefined
  }

  /** One table row: a label and one cell per version; `better` marks the best value. */
  const row = (field, label, value, format, better) => {
    const values = versions.map(value)
    // mark the best value only where the versions differ
    const differ = new Set(values.filter((x) => x !== null && x !== undefined)).size > 1
    const top = better && differ ? best(values, better === 'max' ? Math.max : Math.min) : undefined
    return h(
      'tr',
      { dataset: { field } },
      h('th', { scope: 'row' }, label),
      values.map((x, i) => h('td', { class: `num${top !== undefined && x === top ? ' best' : ''}`, dataset: { versionId: versions[i].id } }, format(x))),
    )
  }

  const efficiency = h('canvas', { id: 'compare-efficiency', 'aria-label': 'normalised efficiency and TPME' })
  const quality = h('canvas', { id: 'compare-quality', 'aria-label': 'test HR@10 and NDCG@10' })
  const cost = h('canvas', { id: 'compare-cost', 'aria-label': 'seconds per epoch and peak memory' })
  const unmeasured = versions.filter((v) => v.tpme === null)

  slot.replaceChildren(
    card(
      'Comparison',
      h(
        'p',
        { class: 'formula' },
        `TPME = ${weights.time}·time + ${weights.params}·params + ${weights.memory}·memory, each min–max normalised across the ${versions.length} compared versions. Lower is better.`,
      ),
      unmeasured.length ? h('p', { class: 'hint' }, `No efficiency figures for ${unmeasured.map((v) => fmt.shortId(v.id)).join(', ')}: left out of TPME.`) : null,
      h(
        'div',
        { class: 'table-scroll' },
        h(
          'table',
          { class: 'table compare-table' },
          h('thead', {}, h('tr', {}, h('th', {}, ''), versions.map((v, i) => h('th', { class: 'num', dataset: { versionId: v.id } }, labels[i], v.isActive ? h('span', { class: 'badge badge-active' }, 'active') : null)))),
          h(
            'tbody',
            {},
            row('method', 'Method', (v) => v.method, String),
            row('dataset', 'Dataset', (v) => names.get(v.datasetId) ?? fmt.shortId(v.datasetId), String),
            row('epochs', 'Epochs trained', (v) => v.epochs, fmt.int),
            row('testHr10', 'Test HR@10', (v) => v.testHr10, (x) => fmt.num(x, 4), 'max'),
            row('testNdcg10', 'Test NDCG@10', (v) => v.testNdcg10, (x) => fmt.num(x, 4), 'max'),
            row('valHr10', 'Val HR@10', (v) => v.valHr10, (x) => fmt.num(x, 4), 'max'),
            row('valNdcg10', 'Val NDCG@10', (v) => v.valNdcg10, (x) => fmt.num(x, 4), 'max'),
            row('secondsPerEpoch', 'Seconds / epoch', (v) => v.secondsPerEpoch, fmt.seconds, 'min'),
            row('peakMemoryMb', 'Peak memory', (v) => v.peakMemoryMb, fmt.mb, 'min'),
            row('trainableParams', 'Trainable params', (v) => v.trainableParams, fmt.int, 'min'),
            row('timeNorm', 'time (normalised)', (v) => v.timeNorm, (x) => fmt.num(x, 3)),
            row('paramsNorm', 'params (normalised)', (v) => v.paramsNorm, (x) => fmt.num(x, 3)),
            row('memoryNorm', 'memory (normalised)', (v) => v.memoryNorm, (x) => fmt.num(x, 3)),
            row('tpme', 'TPME', (v) => v.tpme, (x) => fmt.num(x, 3), 'min'),
          ),
        ),
      ),
      h(
        'div',
        { class: 'grid-2 charts' },
        h('div', {}, h('h3', { class: 'section-title' }, 'Efficiency (normalised, lower is better)'), h('div', { class: 'chart-box' }, efficiency)),
        h('div', {}, h('h3', { class: 'section-title' }, 'Quality on the test split'), h('div', { class: 'chart-box' }, quality)),
        h('div', {}, h('h3', { class: 'section-title' }, 'Training cost (as measured)'), h('div', { class: 'chart-box' }, cost)),
      ),
    ),
  )
  disposeOn(
    signal,
    barChart(efficiency, {
      labels,
      max: 1,
      yTitle: 'normalised (0 = best)',
      series: [
        { label: 's / epoch', data: versions.map((v) => v.timeNorm), color: COLORS.time },
        { label: 'memory', data: versions.map((v) => v.memoryNorm), color: COLORS.memory },
        { label: 'params', data: versions.map((v) => v.paramsNorm), color: COLORS.params },
        { label: 'TPME', data: versions.map((v) => v.tpme), color: COLORS.tpme },
      ],
    }),
  )
  // the raw figures behind the normalised ones: time and memory in their own units, on two axes
  disposeOn(
    signal,
    barChart(cost, {
      labels,
      yTitle: 'seconds / epoch',
      y2Title: 'peak memory (MB)',
      series: [
        { label: 's / epoch', data: versions.map((v) => v.secondsPerEpoch), color: COLORS.time, unit: 's' },
        { label: 'peak memory', data: versions.map((v) => v.peakMemoryMb), color: COLORS.memory, unit: 'MB', right: true },
      ],
    }),
  )
  disposeOn(
    signal,
    barChart(quality, {
      labels,
      yTitle: 'test metric',
      series: [
        { label: 'HR@10', data: versions.map((v) => v.testHr10), color: COLORS.hr },
        { label: 'NDCG@10', data: versions.map((v) => v.testNdcg10), color: COLORS.ndcg },
      ],
    }),
  )
}
