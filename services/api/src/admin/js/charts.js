// Chart.js (global `Chart`, loaded by index.html) set-ups used by the pages. Charts are looked up
// again with Chart.getChart(canvas), so a page only keeps its canvases.

const Chart = /** @type {any} */ (window).Chart

export const COLORS = {
  loss: '#d9480f',
  hr: '#1971c2',
  ndcg: '#2f9e44',
  time: '#1971c2',
  params: '#ae3ec9',
  memory: '#f08c00',
  tpme: '#343a40',
}

if (Chart) {
  Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue('--font').trim() || 'system-ui, sans-serif'
  Chart.defaults.font.size = 12
  Chart.defaults.color = '#495057'
  // Live data redraws every second: no animations, so what is drawn is what the API said.
  Chart.defaults.animation = false
  Chart.defaults.maintainAspectRatio = false
}

function requireChart() {
  if (!Chart) throw new Error('Chart.js did not load (GET /admin/vendor/chart.umd.js)')
  return Chart
}

/**
 * Per-epoch training curves: train loss on the left axis, validation HR@10 and NDCG@10 on the
 * right one. Call updateTrainingChart() with new epochs.
 */
export function trainingChart(canvas, epochs) {
  const C = requireChart()
  const chart = new C(canvas, {
    type: 'line',
    data: {
      labels: [],
      datasets: [
        { label: 'train loss', data: [], borderColor: COLORS.loss, backgroundColor: COLORS.loss, yAxisID: 'yLoss', tension: 0.2, pointRadius: 4 },
        { label: 'val HR@10', data: [], borderColor: COLORS.hr, backgroundColor: COLORS.hr, yAxisID: 'yMetric', tension: 0.2, pointRadius: 4 },
        { label: 'val NDCG@10', data: [], borderColor: COLORS.ndcg, backgroundColor: COLORS.ndcg, yAxisID: 'yMetric', tension: 0.2, pointRadius: 4, borderDash: [6, 4] },
      ],
    },
    options: {
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { position: 'bottom' }, tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${Number(ctx.parsed.y).toFixed(4)}` } } },
      scales: {
        x: { title: { display: true, text: 'epoch' }, grid: { display: false } },
        yLoss: { type: 'linear', position: 'left', title: { display: true, text: 'loss' } },
        yMetric: { type: 'linear', position: 'right', min: 0, suggestedMax: 0.1, title: { display: true, text: 'HR@10 / NDCG@10' }, grid: { drawOnChartArea: false } },
      },
    },
  })
  updateTrainingChart(chart, epochs)
  return chart
}

export function updateTrainingChart(chart, epochs) {
  chart.data.labels = epochs.map((e) => e.epoch)
  chart.data.datasets[0].data = epochs.map((e) => e.trainLoss)
  chart.data.datasets[1].data = epochs.map((e) => e.valHr10)
  chart.data.datasets[2].data = epochs.map((e) => e.valNdcg10)
  chart.update('none')
}

/**
 * Grouped bars: one group per label, one bar per series. A series with `right: true` is drawn
 * against a second axis on the right (`y2Title`): two figures in different units side by side.
 * `unit` is appended to a series' tooltip values.
 */
export function barChart(canvas, { labels, series, yTitle, y2Title, max }) {
  const C = requireChart()
  const axis = (title, extra) => ({ beginAtZero: true, title: { display: Boolean(title), text: title }, ...extra })
  return new C(canvas, {
    type: 'bar',
    data: {
      labels,
      datasets: series.map((s) => ({ label: s.label, data: s.data, backgroundColor: s.color, borderRadius: 3, maxBarThickness: 42, minBarLength: 2, yAxisID: s.right ? 'y2' : 'y', unit: s.unit })),
    },
    options: {
      plugins: { legend: { position: 'bottom' }, tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${Number(ctx.parsed.y).toFixed(4)}${ctx.dataset.unit ? ` ${ctx.dataset.unit}` : ''}` } } },
      scales: {
        x: { grid: { display: false } },
        y: axis(yTitle, { max }),
        ...(series.some((s) => s.right) ? { y2: axis(y2Title, { position: 'right', grid: { drawOnChartArea: false } }) } : {}),
      },
    },
  })
}

/** Destroy the chart when the page goes away. */
export function disposeOn(signal, chart) {
  signal.addEventListener('abort', () => chart.destroy())
  return chart
}
