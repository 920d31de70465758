// The serving pass as ONNX graphs, for ONNX Runtime (issue 11): a batch of requests is one run
// that looks the histories up in the item matrix, runs the user encoder (user-encoder.ts, its
// inference forward written out again here), scores every item, takes out each request's
// excluded items and keeps the top k. On tfjs-wasm that was dozens of kernel dispatches, a
// product on one core at wasm's SIMD width and a top-k scan in JavaScript; here it is one call
// into MLAS and ORT's TopK.
//
// The item matrix is an input: it is fed as the view of the one copy the process holds (no copy),
// and cold-start appends need no new session. The recommend graph can also hold the rows known at
// its creation as a constant for its product (`packed`): ORT then lays them out for its GEMM
// kernel once, where an input is re-laid out on every run. That costs a second, packed copy of
// those rows and saves a fifth of the whole graph's time at batches of 16, half of a lone
// request's (bench/serving-graphs.ts); rows appended later are scored from the input (`tail`). The user
// encoder's weights are constants (a version's weights never change). Ids are int32; row 0 is
// padding and every request excludes it.
//
//   recommend  items [R, D], history [B, T] (left-padded), exclude [B, X] (0-padded), k [1]
//              (packed: + tail [R − P, D], rows P..R−1 of items; rows 0..P−1 are the constant)
//              → scores [B, K], indices [B, K]   (K = min(k, R), best first)
//   states     items, history → states [B, D]  (for the approximate index)
//   similar    items, norms [R] (0 → 1), query [B], exclude, k → scores, indices   (cosine)
//
// `exclude` is the host's: each row lists the request's excluded rows and at least one 0 (padding).
import type { GraphBuilder } from '@iisan/backbones/onnx/graph'
import { SyncOrtSession, type OrtModule } from '@iisan/backbones/onnx/onnx-runtime'
import type * as tf from '@tensorflow/tfjs-core'
import { sanGraphBuilder } from './san-onnx.ts'
import type { LayerNormWeights, UserBlock, UserEncoder } from './user-encoder.ts'

export const SERVING_INPUTS = { items: 'items', tail: 'tail', history: 'history', exclude: 'exclude', k: 'k', norms: 'norms', query: 'query' } as const
export const SERVING_OUTPUTS = { scores: 'scores', indices: 'indices', states: 'states' } as const

export interface ServingGraphs {
  recommend: Uint8Array
  states: Uint8Array
  similar: Uint8Array
  /** a [B, D] · b [M, D]ᵀ → [B, M] (the index's shortlist against a batch's states) */
  product: Uint8Array
}

/**
 * The serving graphs of a user encoder with item width D over windows of T items. `packed`: rows
 * 0..P−1 of the item matrix ([P, D]), held by the recommend graph as a constant (see the top).
 */
export function servingGraphs(encoder: UserEncoder, D: number, T: number, numHeads: number, packed?: Float32Array): ServingGraphs {
  const recommend = sanGraphBuilder()
  const users = userStates(recommend, encoder, D, T, numHeads)
  const scores = packed ? scoresForStatesPacked(recommend, users, packed, D) : scoresForStates(recommend, users)
  topK(recommend, excluded(recommend, scores))

  const states = sanGraphBuilder()
  states.output(userStates(states, encoder, D, T, numHeads), SERVING_OUTPUTS.states, ['batch', D])

  const similar = sanGraphBuilder()
  const items = similar.input(SERVING_INPUTS.items, 'float', ['rows', D])
  const norms = similar.input(SERVING_INPUTS.norms, 'float', ['rows'])
  const query = similar.input(SERVING_INPUTS.query, 'int32', ['batch'])
  // unit queries against every row, then divided by the row's norm: cosine
  const unit = similar.op('Div', [similar.op('Gather', [items, query], { axis: 0 }), similar.op('Unsqueeze', [similar.op('Gather', [norms, query], { axis: 0 }), similar.intConst([1])])])
  const cosine = similar.op('Div', [similar.op('Gemm', [unit, items], { transB: 1 }), norms])
  topK(similar, excluded(similar, cosine))

  const product = sanGraphBuilder()
  product.output(product.op('Gemm', [product.input('a', 'float', ['batch', D]), product.input('b', 'float', ['rows', D])], { transB: 1 }), SERVING_OUTPUTS.scores, ['batch', 'rows'])

  return { recommend: recommend.encode('iisan-recommend'), states: states.encode('iisan-user-states'), similar: similar.encode('iisan-similar'), product: product.encode('iisan-product') }
}

/** states [B, D] → items · statesᵀ as [B, R] (Gemm reads the item matrix transposed in place). */
function scoresForStates(g: GraphBuilder, states: string): string {
  return g.op('Gemm', [states, SERVING_INPUTS.items], { transB: 1 })
}

/** The same [B, R], from the constant rows 0..P−1 (`packed`) and the input rows P..R−1 (`tail`, possibly none). */
function scoresForStatesPacked(g: GraphBuilder, states: string, packed: Float32Array, D: number): string {
  const tail = g.input(SERVING_INPUTS.tail, 'float', ['tailRows', D])
  const known = g.op('Gemm', [states, g.floatConst(packed, [packed.length / D, D], 'packed')], { transB: 1 })
  return g.op('Concat', [known, g.op('Gemm', [states, tail], { transB: 1 })], { axis: 1 })
}

/** scores [B, R] with −∞ at each request's excluded rows (`exclude` [B, X]). */
function excluded(g: GraphBuilder, scores: string): string {
  const exclude = g.input(SERVING_INPUTS.exclude, 'int32', ['batch', 'excluded'])
  const updates = g.op('Expand', [g.floatConst(Float32Array.of(-Infinity), [1], 'c'), g.op('Shape', [exclude])])
  return g.op('ScatterElements', [scores, exclude, updates], { axis: 1 })
}

/** The top min(k, R) of each row of scores, best first (ties: the lower row first). */
function topK(g: GraphBuilder, scores: string): void {
  const k = g.input(SERVING_INPUTS.k, 'int64', [1])
  const rows = g.op('Slice', [g.op('Shape', [scores]), g.intConst([1]), g.intConst([2])])
  const K = g.op('Min', [k, rows])
  const top = g.ops('TopK', [scores, K], { axis: 1, largest: 1, sorted: 1 }, 2)
  g.output(top[0], SERVING_OUTPUTS.scores, ['batch', 'K'])
  g.output(g.op('Cast', [top[1]], { to: 6 }), SERVING_OUTPUTS.indices, ['batch', 'K'], 'int32')
}

/**
 * The user encoder's inference forward (UserEncoder.lastStates): histories [B, T] → the state
 * after the last position [B, D]. Post-LN blocks, attention without biases, ReLU FFN. As there,
 * the last block takes keys and values at every position but queries, attention output and FFN
 * at the last one alone.
 */
function userStates(g: GraphBuilder, encoder: UserEncoder, D: number, T: number, H: number): string {
  const { posEmb, lnIn, blocks, lnEps, masked } = encoder.weights
  const value = (v: tf.Variable) => g.floatConst(v.dataSync() as Float32Array, v.shape, 'p')
  const items = g.input(SERVING_INPUTS.items, 'float', ['rows', D])
  const history = g.input(SERVING_INPUTS.history, 'int32', ['batch', T])
  const norm = (x: string, ln: LayerNormWeights) => g.op('LayerNormalization', [x, value(ln.gamma), value(ln.beta)], { axis: -1, epsilon: { float: lnEps } })

  // additive mask [B, 1, T, T]: query i sees key j iff j ≤ i and j is a real item
  const causal = new Float32Array(T * T)
  for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) causal[i * T + j] = 1
  const valid = g.op('Cast', [g.op('Greater', [history, g.int32Const([0], [])])], { to: 1 }) // [B, T]
  const allowed = g.op('Mul', [g.floatConst(causal, [T, T], 'causal'), g.op('Reshape', [valid, g.intConst([-1, 1, 1, T])])])
  const mask = g.op('Mul', [g.op('Sub', [g.floatConst(Float32Array.of(1), [], 'c'), allowed]), g.floatConst(Float32Array.of(masked), [], 'c')])

  let h = norm(g.op('Add', [g.op('Gather', [items, history], { axis: 0 }), value(posEmb)]), lnIn) // [B, T, D]
  const dh = D / H
  /** [B, …, T, …] → its last position along `axis`, kept as a dimension of 1 */
  const lastPosition = (x: string, axis: number) => g.op('Slice', [x, g.intConst([T - 1]), g.intConst([T]), g.intConst([axis])])
  const last = blocks.length - 1
  for (const block of blocks.slice(0, last)) h = userBlock(h, h, mask, block)
  // the state after the last position [B, 1, D] (a user encoder has at least one block)
  const state = userBlock(lastPosition(h, 1), h, lastPosition(mask, 2), blocks[last]!)
  return g.op('Reshape', [state, g.intConst([-1, D])])

  /** One block for the query rows x [B, Q, D] (Q = T, or 1: the last position) over the keys and values of kv [B, T, D] → [B, Q, D]. */
  function userBlock(x: string, kv: string, mask: string, block: UserBlock): string {
    const heads = (rows: string, w: tf.Variable, perm: number[]) => g.op('Transpose', [g.op('Reshape', [g.op('MatMul', [rows, value(w)]), g.intConst([0, 0, H, dh])])], { perm })
    const q = heads(x, block.wq, [0, 2, 1, 3]) // [B, H, Q, dh]
    const kT = heads(kv, block.wk, [0, 2, 3, 1]) // [B, H, dh, T]
    const v = heads(kv, block.wv, [0, 2, 1, 3])
    const scores = g.op('Add', [g.op('Div', [g.op('MatMul', [q, kT]), g.floatConst(Float32Array.of(Math.sqrt(dh)), [], 'c')]), mask]) // [B, H, Q, T]
    const context = g.op('Transpose', [g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), v])], { perm: [0, 2, 1, 3] })
    const attended = g.op('MatMul', [g.op('Reshape', [context, g.intConst([0, 0, D])]), value(block.wo)])
    const y = norm(g.op('Add', [x, attended]), block.lnAttn)
    const ffn = g.op('Add', [g.op('MatMul', [g.op('Relu', [g.op('Add', [g.op('MatMul', [y, value(block.w1)]), value(block.b1)])]), value(block.w2)]), value(block.b2)])
    return norm(g.op('Add', [y, ffn]), block.lnFfn)
  }
}

/** One request's top rows as ORT's TopK gives them: scores [K], rows [K], best first. */
export interface TopRows {
  scores: Float32Array
  rows: Int32Array
  /** K: entries per request */
  width: number
}

/**
 * The serving graphs of one model version in ORT sessions (one intra-op thread each: the API's
 * replicas are what use the cores). Runs block: a micro-batch is scored in one synchronous call.
 */
export class ServingRuntime {
  private constructor(
    private readonly sessions: Record<keyof ServingGraphs, SyncOrtSession>,
    private readonly D: number,
    private readonly T: number,
    /** rows of the matrix the recommend graph holds packed (0: none) */
    private readonly packedRows: number,
  ) {}

  /** `packed`: the item matrix's rows to hold packed in the recommend graph (see the top), [P, D]; the caller may drop it. */
  static async create(ort: OrtModule, encoder: UserEncoder, D: number, T: number, numHeads: number, packed?: Float32Array): Promise<ServingRuntime> {
    const graphs = servingGraphs(encoder, D, T, numHeads, packed)
    const sessions: Partial<Record<keyof ServingGraphs, SyncOrtSession>> = {}
    try {
      for (const name of ['recommend', 'states', 'similar', 'product'] as const) sessions[name] = await SyncOrtSession.create(ort, graphs[name], 1)
    } catch (err) {
      for (const session of Object.values(sessions)) session.release()
      throw err
    }
    return new ServingRuntime(sessions as Record<keyof ServingGraphs, SyncOrtSession>, D, T, packed ? packed.length / D : 0)
  }

  /**
   * windows [B·T] (left-padded), exclude [B·X] (each row holding a 0) → each request's top k rows.
   * `items` must begin with the rows the graph holds packed (it is the matrix they were taken from, grown).
   */
  recommend(items: Float32Array, given: Int32Array, givenExclude: Int32Array, k: number): TopRows {
    const [windows, exclude] = [atLeastTwoRows(given, this.T), atLeastTwoRows(givenExclude, givenExclude.length / (given.length / this.T))]
    const B = windows.length / this.T
    const { D, packedRows } = this
    const tail: Record<string, [Float32Array, number[]]> = packedRows === 0 ? {} : { [SERVING_INPUTS.tail]: [items.subarray(packedRows * D), [items.length / D - packedRows, D]] }
    const [scores, rows] = this.sessions.recommend.run<Float32Array | Int32Array>(
      { ...this.itemFeeds(items), ...tail, [SERVING_INPUTS.history]: [windows, [B, this.T]], [SERVING_INPUTS.exclude]: [exclude, [B, exclude.length / B]], [SERVING_INPUTS.k]: [BigInt64Array.of(BigInt(k)), [1]] },
      [SERVING_OUTPUTS.scores, SERVING_OUTPUTS.indices],
    )
    return { scores: scores as Float32Array, rows: rows as Int32Array, width: scores.length / B }
  }

  /** windows [B·T] → user states [B·D]. */
  states(items: Float32Array, windows: Int32Array): Float32Array {
    const B = windows.length / this.T
    return this.sessions.states.run({ ...this.itemFeeds(items), [SERVING_INPUTS.history]: [windows, [B, this.T]] }, [SERVING_OUTPUTS.states])[0]
  }

  /** Cosine neighbours of rows `query` [B]; norms [R] with 0 replaced by 1; exclude [B·X]. */
  similar(items: Float32Array, norms: Float32Array, givenQuery: Int32Array, givenExclude: Int32Array, k: number): TopRows {
    const [query, exclude] = [atLeastTwoRows(givenQuery, 1), atLeastTwoRows(givenExclude, givenExclude.length / givenQuery.length)]
    const B = query.length
    const [scores, rows] = this.sessions.similar.run<Float32Array | Int32Array>(
      {
        ...this.itemFeeds(items),
        [SERVING_INPUTS.norms]: [norms, [norms.length]],
        [SERVING_INPUTS.query]: [query, [B]],
        [SERVING_INPUTS.exclude]: [exclude, [B, exclude.length / B]],
        [SERVING_INPUTS.k]: [BigInt64Array.of(BigInt(k)), [1]],
      },
      [SERVING_OUTPUTS.scores, SERVING_OUTPUTS.indices],
    )
    return { scores: scores as Float32Array, rows: rows as Int32Array, width: scores.length / B }
  }

  /** a [B·D] · b [M·D]ᵀ → [B·M] (the same bits for a row whatever else is in the batch). */
  product(given: Float32Array, b: Float32Array): Float32Array {
    const B = given.length / this.D
    const a = atLeastTwoRows(given, this.D)
    const scores = this.sessions.product.run({ a: [a, [a.length / this.D, this.D]], b: [b, [b.length / this.D, this.D]] }, [SERVING_OUTPUTS.scores])[0]
    return B === 1 ? scores.subarray(0, scores.length / 2) : scores
  }

  release(): void {
    for (const session of Object.values(this.sessions)) session.release()
  }

  private itemFeeds(items: Float32Array) {
    return { [SERVING_INPUTS.items]: [items, [items.length / this.D, this.D]] as [Float32Array, number[]] }
  }
}

/**
 * One request's rows repeated as a second request. MLAS scores a lone query (a [1, D] × [D, R]
 * product) with another kernel than a batch, whose sums round differently in the last bit; with
 * two rows or more every request's scores are the same bits whatever else shares its batch, so a
 * request's answer does not depend on the concurrency it arrived in. The extra answer is ignored.
 */
function atLeastTwoRows<T extends Int32Array | Float32Array>(rows: T, rowLength: number): T {
  if (rows.length !== rowLength) return rows
  const twice = new (rows.constructor as new (length: number) => T)(2 * rowLength)
  twice.set(rows)
  twice.set(rows, rowLength)
  return twice
}
