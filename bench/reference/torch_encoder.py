#!/usr/bin/env python3
"""PyTorch reference for `npm run bench:backbones` (bench-only; the platform never needs torch).

Times a plain torch.nn.TransformerEncoder stack with the backbones' encoder shapes, random
weights, inference mode (eval, no autograd):
  bert: 12 layers, d 768, 12 heads, FFN 3072, GELU, post-LN, seq 30, batch 32
  vit:  the same stack, pre-LN, seq 197 (14x14 patches + [CLS]), batch 4
That is the bulk of each backbone's FLOPs (embeddings / patch projection left out). Each shape:
warm-up batches, then timed batches; the median batch time gives items/s. Prints one JSON
object on stdout.

  python3 bench/reference/torch_encoder.py [--threads 2] [--quick] [--only bert,vit]
"""
import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

import torch

SHAPES = {
    "bert": {"layers": 12, "d": 768, "heads": 12, "ffn": 3072, "seq": 30, "batch": 32, "norm_first": False},
    "vit": {"layers": 12, "d": 768, "heads": 12, "ffn": 3072, "seq": 197, "batch": 4, "norm_first": True},
}


def encoder(s):
    layer = torch.nn.TransformerEncoderLayer(
        d_model=s["d"],
        nhead=s["heads"],
        dim_feedforward=s["ffn"],
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=1e-12,
        batch_first=True,
        norm_first=s["norm_first"],
    )
    return torch.nn.TransformerEncoder(layer, num_layers=s["layers"], enable_nested_tensor=False).eval()


def time_shape(name, s, warmup, batches):
    torch.manual_seed(0)
    model = encoder(s)
    x = torch.randn(s["batch"], s["seq"], s["d"])
    # A key-padding mask as BERT feeds one (nothing padded: the fixed-length shape is timed).
    mask = torch.zeros(s["batch"], s["seq"], dtype=torch.bool) if name == "bert" else None
    times = []
    with torch.inference_mode():
        for i in range(warmup + batches):
            t0 = time.perf_counter()
            model(x, src_key_padding_mask=mask)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "model": name,
        "shape": f"L{s['layers']} d{s['d']} h{s['heads']} ff{s['ffn']} seq{s['seq']}",
        "batchSize": s["batch"],
        "warmupBatches": warmup,
        "timedBatches": batches,
        "medianBatchSeconds": med,
        "itemsPerSecond": s["batch"] / med,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="bert,vit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warmup, batches = (1, 3) if args.quick else (2, 7)
    rows = [time_shape(n, SHAPES[n], warmup, batches) for n in args.only.split(",") if n in SHAPES]
    blas = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    json.dump(
        {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "blas": blas.group(1) if blas else None,
            # Debian's torch calls whatever libblas.so.3 points to (reference BLAS unless OpenBLAS is installed)
            "libblas": os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3") if os.path.exists("/usr/lib/x86_64-linux-gnu/libblas.so.3") else None,
            "rows": rows,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
