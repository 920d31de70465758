// BertModel (bert.ts) as an ONNX graph built from the checkpoint's weights: word + position +
// token-type-0 embeddings, LayerNorm, then post-LN layers with the 1/0 attention mask turned
// into an additive −1e9 key mask (layers.ts explains the constant). Inputs are int64 because
// ONNX's Gather and the mask arithmetic want them; the graph checks nothing — TextBackbone
// validates ids against the vocabulary before running it.
//
//   inputs:  input_ids [batch, seq] int64, attention_mask [batch, seq] int64 (1 = token)
//   outputs: cls [batch, L + 1, d] — every layer's position-0 row, layer 0 = embeddings;
//            with allPositions also hidden_states [L + 1, batch, seq, d]
import type { BertConfig } from '../config.ts'
import { bertAttentionNames, bertLayerPrefix } from '../bert.ts'
import { GraphBuilder, type WeightReader } from './graph.ts'

export function buildBertGraph(c: BertConfig, src: WeightReader, allPositions: boolean): Uint8Array {
  const g = new GraphBuilder(src)
  const d = c.hiddenSize
  const ids = g.input('input_ids', 'int64', ['batch', 'seq'])
  const mask01 = g.input('attention_mask', 'int64', ['batch', 'seq'])

  const words = g.op('Gather', [g.weight('embeddings.word_embeddings.weight', [c.vocabSize, d]), ids]) // [B, S, d]
  const seq = g.op('Shape', [ids], { start: 1, end: 2 }) // [1]: S
  const positions = g.op('Slice', [g.weight('embeddings.position_embeddings.weight', [c.maxPositions, d]), g.intConst([0]), seq, g.intConst([0])]) // [S, d]
  const types = src.read({ name: 'embeddings.token_type_embeddings.weight', shape: [c.typeVocabSize, d] })
  const tokenType0 = g.floatConst(types.slice(0, d), [d], 'token_type_0') // IISAN feeds single segments
  const summed = g.op('Add', [g.op('Add', [words, positions]), tokenType0])
  let x = g.layerNorm(summed, 'embeddings.LayerNorm', d, c.layerNormEps)

  // (1 − m)·(−1e9) as [B, 1, 1, S], broadcast over heads and query positions
  const keep = g.op('Cast', [mask01], { to: 1 })
  const dropped = g.op('Sub', [g.floatConst(Float32Array.of(1), [], 'c'), keep])
  const mask = g.op('Unsqueeze', [g.op('Mul', [dropped, g.floatConst(Float32Array.of(-1e9), [], 'c')]), g.intConst([1, 2])])

  const states = [x]
  for (let i = 0; i < c.numLayers; i++) {
    const p = bertLayerPrefix(i)
    const h = g.layerNorm(g.op('Add', [x, g.selfAttention(x, bertAttentionNames(i), d, c.numHeads, mask)]), `${p}.attention.output.LayerNorm`, d, c.layerNormEps)
    x = g.layerNorm(g.op('Add', [h, g.feedForward(h, p, d, c.intermediateSize, c.hiddenAct)]), `${p}.output.LayerNorm`, d, c.layerNormEps)
    states.push(x)
  }
  g.output(g.op('Concat', states.map((s) => g.firstToken(s)), { axis: 1 }), 'cls', ['batch', c.numLayers + 1, d])
  if (allPositions) g.output(g.stack(states), 'hidden_states', [c.numLayers + 1, 'batch', 'seq', d])
  return g.encode('bert')
}
