// Try it: build a history by searching the catalogue (or name a known user) and ask
// POST /v1/recommendations for the next items; items the model skipped (it has no embedding for
// them) are marked in the typed history and in the known user's stored history. #/try?dataset=<id>
import { get, post, query as qs } from '../api.js'
import { card, datasetSelect, empty, errorBox, fmt, h, loadDatasets, showError } from '../ui.js'

const SEARCH_LIMIT = 12
const SEARCH_DELAY_MS = 200

export async function render(root, { query, signal }) {
  const datasets = await loadDatasets()
  if (!datasets.length) {
    root.replaceChildren(h('h1', { class: 'page-title' }, 'Try it'), card(null, empty('No datasets yet.')))
    return
  }
  const datasetId = datasets.some((d) => d.id === query.get('dataset')) ? query.get('dataset') : datasets[0].id
  const { modelVersions } = await get(`/v1/model-versions${qs({ datasetId })}`, { signal })

  /** @type {{ id: string, title: string }[]} */
  const history = []
  const historyList = h('ol', { class: 'history', id: 'history' })
  const searchInput = h('input', { type: 'search', id: 'item-search', placeholder: 'Search titles or item ids…', autocomplete: 'off' })
  const searchResults = h('ul', { class: 'search-results', id: 'search-results' })
  const searchInfo = h('p', { class: 'hint' })
  const userInput = h('input', { type: 'text', id: 'user-id', placeholder: 'e.g. a user id from users.tsv', autocomplete: 'off' })
  const kInput = h('input', { type: 'number', id: 'k', min: 1, max: 1000, value: '10' })
  const modelSelect = h(
    'select',
    { id: 'model-id' },
    h('option', { value: '' }, 'Active model of the dataset'),
    modelVersions.map((v) => h('option', { value: v.id }, `${v.method} · ${fmt.shortId(v.id)}${v.isActive ? ' (active)' : ''} · test HR@10 ${fmt.num(v.testHr10)}`)),
  )
  const recommendButton = h('button', { type: 'submit', id: 'recommend' }, 'Recommend')
  const formError = h('div', { id: 'try-error' })
  const results = h('div', { id: 'results' }, empty('Recommendations appear here.'))

  const modeInputs = ['history', 'user'].map((mode) => h('input', { type: 'radio', name: 'mode', value: mode, checked: mode === 'history' }))
  const historyPane = h(
    'div',
    { class: 'pane', dataset: { mode: 'history' } },
    h('label', { class: 'stack' }, h('span', {}, 'Add items'), searchInput),
    searchInfo,
    searchResults,
    h('div', { class: 'history-head' }, h('h3', { class: 'section-title' }, 'History (oldest first)'), h('button', { type: 'button', class: 'small secondary', onclick: () => setHistory([]) }, 'Clear')),
    historyList,
  )
  const userHistory = h('div', { id: 'user-history' })
  const userPane = h(
    'div',
    { class: 'pane', dataset: { mode: 'user' }, hidden: true },
    h('label', { class: 'stack' }, h('span', {}, 'User id'), userInput),
    h('p', { class: 'hint' }, 'The user’s stored history is used (and excluded from the results).'),
    userHistory,
  )
  const mode = () => modeInputs.find((i) => i.checked).value
  for (const input of modeInputs) {
    input.addEventListener('change', () => {
      historyPane.hidden = mode() !== 'history'
      userPane.hidden = mode() !== 'user'
    })
  }

  /** `skipped`: ids the last answer skipped; any edit of the history forgets them. */
  function setHistory(items, skipped = new Set()) {
    history.splice(0, history.length, ...items)
    historyList.replaceChildren(
      ...(history.length
        ? history.map((item, i) =>
            historyEntry(
              { itemId: item.id, title: item.title, skipped: skipped.has(item.id) },
              h('button', { type: 'button', class: 'icon', 'aria-label': `remove ${item.title}`, onclick: () => setHistory(history.filter((_, j) => j !== i)) }, '×'),
            ),
          )
        : [h('li', { class: 'empty' }, 'Empty: search above and click items to add them.')]),
    )
  }
  setHistory([])

  // --- search-as-you-type (the latest request wins)
  let searchTimer
  let searchSeq = 0
  const runSearch = async () => {
    const seq = ++searchSeq
    const q = searchInput.value.trim()
    try {
      // No `limit`: the API validates query strings without type coercion, so limit=12 (a string)
      // is rejected; its default page (50) is cut down here instead.
      const res = await get(`/v1/datasets/${datasetId}/items${qs({ q })}`, { signal })
      res.items = res.items.slice(0, SEARCH_LIMIT)
      if (seq !== searchSeq) return
      searchInfo.textContent = q ? `${fmt.int(res.total)} match${res.total === 1 ? '' : 'es'}${res.total > res.items.length ? `, showing ${res.items.length}` : ''}` : `${fmt.int(res.total)} items in the catalogue`
      searchResults.replaceChildren(
        ...res.items.map((item) =>
          h(
            'li',
            {},
            h(
              'button',
              { type: 'button', class: 'result', dataset: { itemId: item.id }, onclick: () => setHistory([...history, { id: item.id, title: item.title }]) },
              h('span', { class: 'item-title' }, item.title),
              h('span', { class: 'mono muted small' }, item.id),
              h('span', { class: 'add' }, '+ add'),
            ),
          ),
        ),
      )
    } catch (e) {
      if (seq === searchSeq && !signal.aborted) searchResults.replaceChildren(h('li', {}, errorBox(e)))
    }
  }
  searchInput.addEventListener('input', () => {
    clearTimeout(searchTimer)
    searchTimer = setTimeout(runSearch, SEARCH_DELAY_MS)
  })
  signal.addEventListener('abort', () => clearTimeout(searchTimer))

  // --- recommend
  const form = h(
    'form',
    { class: 'form', id: 'try-form' },
    h('div', { class: 'segmented' }, modeInputs.map((input) => h('label', {}, input, h('span', {}, input.value === 'history' ? 'Typed history' : 'Known user')))),
    historyPane,
    userPane,
    h('div', { class: 'row' }, h('label', { class: 'stack grow' }, h('span', {}, 'Model'), modelSelect), h('label', { class: 'stack k' }, h('span', {}, 'k'), kInput)),
    h('div', { class: 'form-actions' }, recommendButton),
    formError,
  )
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    showError(formError, null)
    /** @type {Record<string, unknown>} */
    const body = { datasetId, k: Number(kInput.value) }
    if (modelSelect.value) body.modelId = modelSelect.value
    if (mode() === 'history') {
      if (!history.length) return showError(formError, new Error('Add at least one item to the history.'))
      body.history = history.map((i) => i.id)
    } else {
      if (!userInput.value.trim()) return showError(formError, new Error('Enter a user id.'))
      body.userId = userInput.value.trim()
    }
    recommendButton.disabled = true
    userHistory.replaceChildren()
    try {
      const res = await post('/v1/recommendations', body, { signal })
      results.replaceChildren(resultList(res))
      if (res.history) userHistory.replaceChildren(storedHistory(body.userId, res))
      else setHistory([...history], new Set(res.skippedItemIds))
    } catch (e) {
      if (signal.aborted) return
      showError(formError, e)
      // NO_KNOWN_HISTORY names the items it skipped: mark them where they were typed
      if (body.history && Array.isArray(e.details?.skippedItemIds)) setHistory([...history], new Set(e.details.skippedItemIds))
      results.replaceChildren(empty('No recommendations: see the error on the left.'))
    } finally {
      recommendButton.disabled = false
    }
  })

  const active = modelVersions.find((v) => v.isActive)
  root.replaceChildren(
    h(
      'div',
      { class: 'page-head' },
      h('h1', { class: 'page-title' }, 'Try it'),
      h('label', { class: 'inline-field' }, h('span', {}, 'Dataset'), datasetSelect(datasets, { selected: datasetId, id: 'try-dataset', onchange: (e) => (location.hash = `#/try${qs({ dataset: e.target.value })}`) })),
    ),
    h(
      'div',
      { class: 'grid-2' },
      card('Input', active ? null : h('p', { class: 'hint' }, 'This dataset has no active model yet: pick a version below or activate one on the Models page.'), form),
      card('Recommendations', results),
    ),
  )
  runSearch()
}

const SKIPPED_HINT = 'this model has no embedding for the item (e.g. its training dropped it): left out of the history it recommends from'

/** One history item; a skipped one is marked (`data-skipped`, a badge) and explained on hover. */
function historyEntry(item, ...extra) {
  return h(
    'li',
    { class: item.skipped ? 'skipped' : null, dataset: { itemId: item.itemId, skipped: String(item.skipped) }, title: item.skipped ? SKIPPED_HINT : null },
    h('span', { class: item.skipped ? 'item-title muted' : 'item-title' }, item.title),
    h('span', { class: 'mono muted small' }, item.itemId),
    item.skipped ? h('span', { class: 'badge skipped-badge' }, 'skipped') : null,
    ...extra,
  )
}

function storedHistory(userId, res) {
  const skipped = res.history.filter((item) => item.skipped).length
  return h(
    'div',
    {},
    h('h3', { class: 'section-title' }, `History of ${userId} (oldest first)`),
    h('p', { class: 'hint', id: 'user-history-summary' }, `${fmt.int(res.history.length)} item${res.history.length === 1 ? '' : 's'}${skipped ? `, ${fmt.int(skipped)} skipped by this model` : ''}`),
    h('ol', { class: 'history' }, res.history.map((item) => historyEntry(item))),
  )
}

function resultList(res) {
  const skipped = res.skippedItemIds.length
  return h(
    'div',
    {},
    h('p', { class: 'muted' }, `${res.items.length} items from ${res.method} · ${fmt.shortId(res.modelId)}${skipped ? ` · ${skipped} history item${skipped === 1 ? '' : 's'} skipped` : ''}`),
    res.items.length
      ? h(
          'ol',
          { class: 'recommendations' },
          res.items.map((item, i) =>
            h(
              'li',
              { dataset: { itemId: item.itemId } },
              h('span', { class: 'rank' }, String(i + 1)),
              h('span', { class: 'rec-body' }, h('span', { class: 'item-title' }, item.title), h('span', { class: 'mono muted small' }, item.itemId)),
              h('span', { class: 'score', title: 'score' }, fmt.num(item.score, 4)),
            ),
          ),
        )
      : empty('Nothing left to recommend.'),
  )
}
