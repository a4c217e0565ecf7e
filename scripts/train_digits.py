"""Train the built-in digits ViT (gen/models/digits_vit) on sklearn digits. Needs the `train` extra.

    pip install -e .[train] && python scripts/train_digits.py

Deterministic on CPU (fixed seeds, single thread). Writes a Hugging Face style checkpoint and prints
float train/test accuracy of the numpy forward pass of the written checkpoint.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gen import checkpoint
from gen.data import digits_split
from gen.model import DIGITS_SPEC, forward, patchify

OUT = Path(__file__).resolve().parent.parent / "gen" / "models" / "digits_vit"


class Block(nn.Module):
    def __init__(self, d, heads, mlp, eps):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        B, T, D = x.shape
        a = self.ln1(x)
        sh = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = sh(self.q(a)), sh(self.k(a)), sh(self.v(a))
        att = (q @ k.transpose(-1, -2) / math.sqrt(D // self.heads)).softmax(-1)
        x = x + self.drop(self.proj((att @ v).transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.fc2(nn.functional.gelu(self.fc1(self.ln2(x)))))


class ViT(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.patch = nn.Linear(s.patch_dim, s.dim)
        self.cls = nn.Parameter(torch.zeros(s.dim))
        self.pos = nn.Parameter(0.02 * torch.randn(s.tokens, s.dim))
        self.blocks = nn.ModuleList(Block(s.dim, s.heads, s.mlp_dim, s.ln_eps)
                                    for _ in range(s.depth))
        self.ln = nn.LayerNorm(s.dim, eps=s.ln_eps)
        self.head = nn.Linear(s.dim, s.num_classes)

    def forward(self, patches):
        t = self.patch(patches)
        x = torch.cat([self.cls.expand(t.shape[0], 1, -1), t], 1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x)[:, 0])

    def export(self):
        p = {"embed.patch.weight": self.patch.weight, "embed.patch.bias": self.patch.bias,
             "embed.cls": self.cls, "embed.pos": self.pos,
             "final_ln.weight": self.ln.weight, "final_ln.bias": self.ln.bias,
             "head.weight": self.head.weight, "head.bias": self.head.bias}
        for i, b in enumerate(self.blocks):
            for n in ("ln1", "ln2", "q", "k", "v", "proj", "fc1", "fc2"):
                p[f"layers.{i}.{n}.weight"] = getattr(b, n).weight
                p[f"layers.{i}.{n}.bias"] = getattr(b, n).bias
        return {k: v.detach().numpy().astype(np.float32) for k, v in p.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    spec = DIGITS_SPEC
    x_tr, y_tr, x_te, y_te = digits_split()
    p_tr = torch.tensor(patchify(x_tr, spec))
    t_tr = torch.tensor(y_tr)
    model = ViT(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = args.epochs * math.ceil(len(p_tr) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(p_tr), generator=gen)
        for i in range(0, len(p_tr), 64):
            idx = perm[i:i + 64]
            # small pixel noise as augmentation; the quantizer sees clean images
            xb = p_tr[idx] + 0.05 * torch.randn(p_tr[idx].shape, generator=gen)
            loss = nn.functional.cross_entropy(model(xb), t_tr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 50 == 49 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}", flush=True)
    model.eval()
    params = model.export()
    checkpoint.save(args.out, spec, params)
    spec2, params2 = checkpoint.load(args.out)
    for name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        acc = (forward(spec2, params2, x).argmax(-1) == y).mean()
        print(f"float {name} accuracy (numpy forward of the saved checkpoint): {100 * acc:.2f} %")


if __name__ == "__main__":
    main()
