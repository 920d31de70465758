#!/usr/bin/env python3
"""PyTorch reference for `npm run bench:train -- --method iisan` (bench-only; the platform never
needs torch).

A cached-IISAN training step written from the paper's description (docs/METHOD.md), at the
shapes the authors' cached code runs per step: every one of the batch's B·(T+1) item slots goes
through the side network, as in their Code_Cached (no de-duplication of items), then the SASRec
user encoder and the in-batch softmax with the popularity correction, then Adam over five
parameter groups. It is our script, not their code: the in-batch masks are built vectorised
rather than in a Python loop per user, so it is at least as fast as theirs on the same shapes.

  SAN: 3 towers (image intra, text intra, inter) × K = 7 side layers of d = 768, SANBs d → r = 64
       → d with ReLU and a residual, gates sigmoid(θ / 0.1), then F (d → d) and P (d → D = 64);
       fusion [3D → D]
  user encoder: 2 post-LN blocks, 2 heads, D = 64, T = 10, FFN 4D, dropout 0.1
  batch 64, random float32 states [B·(T+1), 13, 768] per modality, random item ids over 20,314

Prints one JSON object on stdout: the median step time over the timed steps.

  python3 bench/reference/torch_iisan_step.py [--threads 2] [--steps 20] [--warmup 2]
"""
import argparse
import json
import math
import platform
import statistics
import sys
import time

import torch
from torch import nn

B, T, D, d, r, LAYERS, ITEMS = 64, 10, 64, 768, 64, 13, 20314
SIDE = [0, 2, 4, 6, 8, 10, 12]


class Sanb(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.up = nn.Linear(d, r), nn.Linear(r, d)

    def forward(self, x):
        return x + self.up(torch.relu(self.down(x)))


class Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(len(SIDE)))
        self.blocks = nn.ModuleList(Sanb() for _ in SIDE)
        self.F, self.P = nn.Linear(d, d), nn.Linear(d, D)

    def intra(self, h):
        g = torch.sigmoid(self.theta / 0.1)
        prev = torch.zeros_like(h[0])
        for k, block in enumerate(self.blocks):
            prev = block(g[k] * h[k] + (1 - g[k]) * prev)
        return self.P(self.F(prev))

    def inter(self, text, image):
        g = torch.sigmoid(self.theta / 0.1)
        prev = torch.zeros_like(text[0])
        for k, block in enumerate(self.blocks):
            prev = block(prev + g[k] * image[k] + (1 - g[k]) * text[k])
        return self.P(self.F(prev))


class UserBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, 2, dropout=0.1, bias=False, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(D, 4 * D), nn.ReLU(), nn.Linear(4 * D, D))
        self.drop = nn.Dropout(0.1)

    def forward(self, x, mask):
        x = self.ln1(x + self.drop(self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]))
        return self.ln2(x + self.drop(self.ffn(x)))


class Step(nn.Module):
    def __init__(self):
        super().__init__()
        self.image, self.text, self.mm = Tower(), Tower(), Tower()
        self.fusion = nn.Linear(3 * D, D)
        self.pos = nn.Parameter(torch.randn(T, D) * 0.02)
        self.ln = nn.LayerNorm(D, eps=1e-6)
        self.blocks = nn.ModuleList(UserBlock() for _ in range(2))
        self.drop = nn.Dropout(0.1)

    def forward(self, text_states, image_states, ids, valid, log_pop):
        text = [text_states[:, l] for l in SIDE]
        image = [image_states[:, l] for l in SIDE]
        e = self.fusion(torch.cat([self.image.intra(image), self.text.intra(text), self.mm.inter(text, image)], 1))  # [B(T+1), D]
        seq = e.view(B, T + 1, D)[:, :T]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        h = self.drop(self.ln(seq + self.pos))
        for block in self.blocks:
            h = block(h, causal)
        states = h.reshape(B * T, D)
        logits = states @ e.t() - log_pop  # [B·T, B·(T+1)]
        # the target of (user b, position t) is slot b·(T+1) + t + 1; any other slot holding an item
        # of user b's window is masked, as are padding slots
        slot_ids = ids.view(-1)
        target = (torch.arange(B).repeat_interleave(T) * (T + 1) + torch.arange(T).repeat(B) + 1)
        same_user_item = (ids.view(B, 1, T + 1, 1) == slot_ids.view(1, 1, 1, -1)).any(2).expand(B, T, -1).reshape(B * T, -1)
        same_user_item[torch.arange(B * T), target] = False
        logits = logits.masked_fill(same_user_item | (slot_ids == 0).view(1, -1), -1e4)
        rows = valid.view(-1).nonzero().squeeze(1)
        return nn.functional.cross_entropy(logits[rows], target[rows])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Step().train()
    groups = [
        [p for n, p in model.named_parameters() if n.startswith("text.F")],
        [p for n, p in model.named_parameters() if n.startswith("image.F") or n == "image.theta"],
        [p for n, p in model.named_parameters() if n.startswith("text.blocks")],
        [p for n, p in model.named_parameters() if n.startswith("image.blocks") or n.startswith("mm.blocks")],
    ]
    grouped = {id(p) for g in groups for p in g}
    groups.append([p for p in model.parameters() if id(p) not in grouped])
    optimizer = torch.optim.Adam([{"params": g, "lr": lr} for g, lr in zip(groups, [5e-5, 1e-4, 1e-4, 1e-4, 2e-4])])
    n = B * (T + 1)
    text_states, image_states = torch.randn(n, LAYERS, d), torch.randn(n, LAYERS, d)
    log_pop = torch.log(torch.rand(n) + 1e-3)
    times = []
    for i in range(args.warmup + args.steps):
        ids = torch.randint(1, ITEMS + 1, (B, T + 1))
        valid = torch.ones(B, T, dtype=torch.bool)
        t0 = time.perf_counter()
        loss = model(text_states, image_states, ids, valid, log_pop)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            raise SystemExit("loss is not finite")
    json.dump(
        {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "trainableParams": sum(p.numel() for p in model.parameters()),
            "slotsPerStep": n,
            "steps": args.steps,
            "medianStepSeconds": statistics.median(times),
            "stepTimesSeconds": times,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
