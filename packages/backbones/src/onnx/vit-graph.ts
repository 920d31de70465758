// ViTModel (vit.ts) as an ONNX graph built from the checkpoint's weights: the patch embedding is
// the checkpoint's own stride-P Conv2d (ORT's Conv is im2col + GEMM, no need to cut patches in
// JS), then [CLS] + learned position embeddings and pre-LN layers. The final LayerNorm applies to
// last_hidden_state only; the hidden states, like HF's, are taken before it.
//
//   input:   pixel_values [batch, C, H, W] float32, already normalised
//   outputs: cls [batch, L + 1, d] — every layer's [CLS] row, layer 0 = embeddings;
//            with allPositions also hidden_states [L + 1, batch, seq, d] and
//            last_hidden_state [batch, seq, d] (seq = numPatches + 1)
import type { VitConfig } from '../config.ts'
import { vitAttentionNames, vitLayerPrefix } from '../vit.ts'
import { GraphBuilder, type WeightReader } from './graph.ts'

export function buildVitGraph(c: VitConfig, src: WeightReader, allPositions: boolean): Uint8Array {
  const g = new GraphBuilder(src)
  const d = c.hiddenSize
  const P = c.patchSize
  const seq = c.numPatches + 1
  const pixels = g.input('pixel_values', 'float', ['batch', c.numChannels, c.imageSize, c.imageSize])

  const kernel = g.weight('embeddings.patch_embeddings.projection.weight', [d, c.numChannels, P, P])
  const bias = g.weight('embeddings.patch_embeddings.projection.bias', [d])
  const grid = g.op('Conv', [pixels, kernel, bias], { kernel_shape: [P, P], strides: [P, P] }) // [B, d, S/P, S/P]
  // row-major grid order, as HF's flatten(2).transpose(1, 2)
  const patches = g.op('Transpose', [g.op('Reshape', [grid, g.intConst([0, d, -1])])], { perm: [0, 2, 1] }) // [B, N, d]
  const batch = g.op('Shape', [pixels], { start: 0, end: 1 })
  const clsShape = g.op('Concat', [batch, g.intConst([1, d])], { axis: 0 })
  const cls = g.op('Expand', [g.weight('embeddings.cls_token', [1, 1, d]), clsShape]) // [B, 1, d]
  const tokens = g.op('Concat', [cls, patches], { axis: 1 })
  let x = g.op('Add', [tokens, g.weight('embeddings.position_embeddings', [1, seq, d])]) // [B, seq, d]

  const states = [x]
  for (let i = 0; i < c.numLayers; i++) {
    const p = vitLayerPrefix(i)
    const h = g.op('Add', [x, g.selfAttention(g.layerNorm(x, `${p}.layernorm_before`, d, c.layerNormEps), vitAttentionNames(i), d, c.numHeads, null, c.qkvBias)])
    x = g.op('Add', [h, g.feedForward(g.layerNorm(h, `${p}.layernorm_after`, d, c.layerNormEps), p, d, c.intermediateSize, c.hiddenAct)])
    states.push(x)
  }
  g.output(g.op('Concat', states.map((s) => g.firstToken(s)), { axis: 1 }), 'cls', ['batch', c.numLayers + 1, d])
  if (allPositions) {
    g.output(g.stack(states), 'hidden_states', [c.numLayers + 1, 'batch', seq, d])
    g.output(g.layerNorm(x, 'layernorm', d, c.layerNormEps), 'last_hidden_state', ['batch', seq, d])
  }
  return g.encode('vit')
}
