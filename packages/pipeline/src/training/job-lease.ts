// A worker's hold on a running training job: the database heartbeat (what the API, cancel and
// other workers read) and the queue's lock, renewed together from a timer and from the training
// loop itself, so neither lapses while the job is alive and both lapse soon after it dies.
import { JOB_LIVENESS, heartbeatTrainingJob, type PrismaClient } from '@iisan/storage'

export interface LeaseOptions {
  /** the queue's lock on the job (BullMQ extendLock), renewed with the heartbeat */
  renewLock?(): Promise<void>
  onRenewalError?(error: unknown): void
}

export class JobLease {
  /** another worker took the job over, or it was cancelled or deleted: stop, and write nothing */
  lost = false
  private timer: NodeJS.Timeout | undefined
  private renewing: Promise<void> | undefined
  private renewedAt = 0

  constructor(
    private readonly prisma: PrismaClient,
    private readonly jobId: string,
    private readonly workerId: string,
    private readonly options: LeaseOptions = {},
  ) {}

  start(): void {
    this.renewedAt = Date.now()
    this.timer = setInterval(() => void this.renew(), JOB_LIVENESS.heartbeatMs)
    this.timer.unref()
  }

  /** From the training loop: renew if a heartbeat is due (the timer may be starved by long steps). */
  renewIfDue(): Promise<void> {
    return Date.now() - this.renewedAt >= JOB_LIVENESS.heartbeatMs ? this.renew() : Promise.resolve()
  }

  renew(): Promise<void> {
    this.renewing ??= this.beat().finally(() => {
      this.renewing = undefined
    })
    return this.renewing
  }

  stop(): void {
    clearInterval(this.timer)
  }

  private async beat(): Promise<void> {
    this.renewedAt = Date.now()
    // A database or Redis outage must not stop a healthy training: the lease just goes stale
    // (and the queue keeps its own lock alive while Redis is up).
    try {
      if (!(await heartbeatTrainingJob(this.prisma, this.jobId, this.workerId))) this.lost = true
    } catch (e) {
      this.options.onRenewalError?.(e)
    }
    try {
      await this.options.renewLock?.()
    } catch (e) {
      this.options.onRenewalError?.(e)
    }
  }
}
