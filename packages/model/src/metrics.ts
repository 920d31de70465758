// Full-ranking HR@K / NDCG@K with history exclusion (docs/METHOD.md §6).

/**
 * Rank (1-based) of `target` among items 1..N of `scores` (index 0 = padding, never ranked),
 * after removing `excluded` items. An excluded target can never be recommended, so it has no
 * rank (Infinity) — a miss, exactly as when the ranking sets its score to −∞.
 * Ties count against the target (every other item scoring at least as high is ranked before it),
 * so a collapsed model that scores everything alike cannot look perfect; a non-finite target
 * score (a diverged model) is a miss.
 */
export function rankOfTarget(scores: ArrayLike<number>, target: number, excluded: ArrayLike<number>): number {
  const excludedSet = new Set<number>(Array.from(excluded))
  if (excludedSet.has(target)) return Infinity
  const targetScore = scores[target]
  if (!Number.isFinite(targetScore)) return Infinity
  // Count every item at or above the target, then take back the excluded ones among them: a set
  // look-up per item scoring high (half the catalogue for a fresh model) cost most of an evaluation.
  let ahead = 0
  for (let j = 1; j < scores.length; j++) if (scores[j] >= targetScore) ahead++
  ahead-- // the target itself
  for (const e of excludedSet) if (e >= 1 && e < scores.length && scores[e] >= targetScore) ahead--
  return ahead + 1
}

export interface RankingMetrics {
  hr10: number
  ndcg10: number
  users: number
}

/** Accumulates HR@K and NDCG@K over users. */
export class RankingAccumulator {
  private hits = 0
  private ndcg = 0
  private count = 0

  constructor(private readonly k = 10) {}

  add(rank: number): void {
    this.count++
    if (rank <= this.k) {
      this.hits++
      this.ndcg += 1 / Math.log2(rank + 1)
    }
  }

  result(): RankingMetrics {
    return {
      hr10: this.count ? this.hits / this.count : 0,
      ndcg10: this.count ? this.ndcg / this.count : 0,
      users: this.count,
    }
  }
}
