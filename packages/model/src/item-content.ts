// What the methods that run the backbones inside a training step read instead of cached states:
// each item's tokenised title and, where it has one, its preprocessed image (docs/METHOD.md §7).
// Images are fetched per batch through `image`, since 224×224×3 float32 pixels for a whole
// catalogue would not fit in memory (20k items ≈ 12 GB).

export interface ItemTextContent {
  /** [N+1, seqLen] token ids per item index; row 0 (padding) is unused */
  inputIds: Int32Array
  /** [N+1, seqLen], 1 = real token, 0 = padding */
  attentionMask: Int32Array
  seqLen: number
}

export interface ItemContent {
  /** N: items 1..N */
  numItems: number
  text: ItemTextContent
  /** [C, H, W] pixel values of item `index` (the image backbone's preprocessing), or null where it has no image */
  image(index: number): Float32Array | null
}
