// A cached-IISAN training step's item side on ONNX Runtime (issue 12): the SAN + fusion forward of
// the step's distinct items (pass 1 of ItemEncoder.forwardForStep), then, once the user side on
// tfjs has given dL/de, the backward graph (san-onnx-backward.ts) for every SAN parameter's
// gradient (pass 2). The parameters are fed as inputs each run, so one pair of sessions serves
// every step; both runs block (SyncOrtSession) because a tfjs step is synchronous.
import { SyncOrtSession, type Feeds, type OrtModule } from '@iisan/backbones/onnx/onnx-runtime'
import { readRows, statesPerItem, type CachedStates } from './cached-states.ts'
import { SAN_OUTPUT_GRAD, gradOutput, sanTrainingGraphs } from './san-onnx-backward.ts'
import { SAN_OUTPUT, presentInput, rowsInput, sanParams, type ParamRef, type SanStructure } from './san-onnx.ts'

/** Pass 1's result: the items' rows, and pass 2 for them. */
export interface SanRuntimePass {
  /** e [n, D] row-major */
  rows: Float32Array
  /** items of the step lacking each modality (0: that stand-in gets no gradient, as on tfjs) */
  absent: { text: number; image: number }
  /** dL/de [n, D] → dL/dθ by parameter name */
  backward(dE: Float32Array): Map<string, Float32Array>
}

export class SanTrainingRuntime {
  private readonly params: ParamRef[]

  private constructor(
    private readonly structure: SanStructure,
    private readonly forwardSession: SyncOrtSession,
    private readonly backwardSession: SyncOrtSession,
  ) {
    this.params = sanParams(structure)
  }

  static async create(ort: OrtModule, structure: SanStructure, threads: number): Promise<SanTrainingRuntime> {
    const graphs = sanTrainingGraphs(structure)
    const forward = await SyncOrtSession.create(ort, graphs.forward, threads)
    try {
      return new SanTrainingRuntime(structure, forward, await SyncOrtSession.create(ort, graphs.backward, threads))
    } catch (err) {
      forward.release()
      throw err
    }
  }

  /** Pass 1 for distinct item ids (≥ 1) with the parameters' current `values`. */
  forward(ids: Int32Array, stored: CachedStates, values: (ref: ParamRef) => Float32Array): SanRuntimePass {
    const n = ids.length
    const feeds: Feeds = {}
    const absent = { text: 0, image: 0 }
    for (const modality of ['text', 'image'] as const) {
      const states = stored[modality]
      const { rows, present } = readRows(states, ids)
      feeds[rowsInput(modality)] = [rows, [n, statesPerItem(states) / states.width, states.width]]
      feeds[presentInput(modality)] = [present, [n, 1]]
      absent[modality] = n - present.reduce((a, b) => a + b, 0)
    }
    for (const ref of this.params) feeds[ref.name] = [values(ref), ref.shape]
    const [rows] = this.forwardSession.run(feeds, [SAN_OUTPUT])
    return {
      rows,
      absent,
      backward: (dE) => {
        const outputs = this.params.map((ref) => gradOutput(ref.name))
        const grads = this.backwardSession.run({ ...feeds, [SAN_OUTPUT_GRAD]: [dE, [n, this.structure.embeddingDim]] }, outputs)
        return new Map(this.params.map((ref, i) => [ref.name, grads[i]]))
      },
    }
  }

  release(): void {
    this.forwardSession.release()
    this.backwardSession.release()
  }
}
