// Micro-batching of the serving hot path: requests that reach a model within one turn of the
// event loop are answered by one batched computation (one user-encoder forward and one matrix
// product instead of one of each per request). Nothing waits on a timer: the batch is closed
// when the event loop has taken in what arrived (setImmediate runs after the I/O of the turn),
// so a lone request is not delayed, and under load the batch grows by itself with the queue.
export class MicroBatcher<Input, Output> {
  private pending: { input: Input; resolve: (output: Output) => void; reject: (error: unknown) => void }[] = []
  private scheduled = false

  /**
   * run: answers a batch, one output per input, in order (synchronous: it owns the thread while
   * it computes). maxBatch: inputs one run takes at most; the rest wait for the next turn.
   * onBatch: told each batch's size (the operator's view of how much batching the load gives).
   */
  constructor(
    private readonly run: (inputs: Input[]) => Output[],
    private readonly maxBatch: () => number,
    private readonly onBatch?: (size: number) => void,
  ) {}

  submit(input: Input): Promise<Output> {
    return new Promise((resolve, reject) => {
      this.pending.push({ input, resolve, reject })
      this.schedule()
    })
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  /** One batch per turn, so the requests that arrive meanwhile are read (and join) between batches. */
  private flush(): void {
    this.scheduled = false
    const batch = this.pending.splice(0, Math.max(1, this.maxBatch()))
    if (this.pending.length) this.schedule()
    this.onBatch?.(batch.length)
    let outputs: Output[]
    try {
      outputs = this.run(batch.map((p) => p.input))
    } catch (error) {
      for (const p of batch) p.reject(error)
      return
    }
    batch.forEach((p, i) => p.resolve(outputs[i]))
  }
}
