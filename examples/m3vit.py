"""M3ViT, the multi-task mixture-of-experts ViT, with the configuration of the Edge-MoE FPGA accelerator.

Sources: M3ViT (Liang et al., NeurIPS 2022) and Edge-MoE (Sarkar et al., ICCAD 2023; sharc-lab/Edge-MoE,
include/model.hpp and src/moe.cpp). Edge-MoE's numbers: a 3x128x256 image cut into 16x16 patches (8x16 = 128
patches, + CLS = 129 tokens), D = 192, 3 heads of 64, 12 pre-norm blocks, LayerNorm eps 1e-6, GELU, attention scale
0.125. Even blocks have a dense MLP (hidden 768); odd blocks an MoE of 16 experts (hidden 384), top-2.

Routing, as Edge-MoE computes it (and as the compiler's reference must):
- task-level gating: one bias-free gate matrix per task, W_gate[task] in R^{D x E}; the task is fixed at export
  time, so the exported graph holds only that task's gate;
- logits = LN2(x) @ W_gate[task]; probs = softmax(logits) over all E experts;
- the top-2 experts are picked on the logits with a strict ">" scan, so ties go to the lower expert index;
- each picked expert's output is weighted by its full softmax probability (NOT renormalised over the top-2).

ONNX spelling, chosen so the file exports with the TorchScript exporter and means the same in torch and ONNX:
top-k is k rounds of ArgMax (first maximum wins in both torch.argmax and ONNX ArgMax, i.e. the tie rule above),
each followed by GatherElements (its probability) and ScatterElements (into a dense [B, T, E] combine matrix, and
-inf into the logits so the next round skips it). Experts are stacked [E, ...] weights applied densely with Einsum
("btd,edh->bteh", "bteh,ehd->bted") and combined with Einsum("bte,bted->btd"). The graph thus computes every
expert for every token; only top_k of the combine weights per token are non-zero, which is what hardware executes.
There is no final LayerNorm and no head: Edge-MoE's kernel outputs the 129 x 192 token features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class M3ViTConfig:
    """Shape of one M3ViT; units are elements (pixels, features, tokens)."""

    image_height: int = 128
    image_width: int = 256
    channels: int = 3
    patch: int = 16
    hidden: int = 192
    heads: int = 3
    layers: int = 12
    mlp_hidden: int = 768
    experts: int = 16
    top_k: int = 2
    expert_hidden: int = 384
    tasks: int = 2
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.image_height % self.patch or self.image_width % self.patch:
            raise ValueError(f"inconsistent M3ViT config: {self}")
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, experts={self.experts}]")

    @property
    def head_dim(self) -> int:
        """Features per attention head."""
        return self.hidden // self.heads

    @property
    def num_patches(self) -> int:
        """Image patches (tokens without CLS)."""
        return (self.image_height // self.patch) * (self.image_width // self.patch)

    @property
    def tokens(self) -> int:
        """Sequence length: patches + the CLS token."""
        return self.num_patches + 1

    def is_moe(self, layer: int) -> bool:
        """Edge-MoE alternates: even blocks dense, odd blocks MoE."""
        return layer % 2 == 1


#: The configuration Edge-MoE synthesises (model.hpp).
EDGE_MOE = M3ViTConfig()
#: Two blocks (one dense, one MoE) and 4 experts at small widths, for fast tests.
TINY = M3ViTConfig(image_height=32, image_width=64, hidden=64, heads=2, layers=2, mlp_hidden=256, experts=4,
                   expert_hidden=128)


class Attention(nn.Module):
    """timm-style multi-head self-attention with one fused QKV projection (Edge-MoE's l*_qkv_weight)."""

    def __init__(self, cfg: M3ViTConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.scale = cfg.head_dim**-0.5  # 0.125 for 64-wide heads, Edge-MoE's attn_scale
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """The dense feed-forward block: Linear -> GELU (erf) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TaskMoE(nn.Module):
    """Task-gated top-k mixture of MLP experts with Edge-MoE's routing (see the module docstring)."""

    def __init__(self, cfg: M3ViTConfig) -> None:
        super().__init__()
        e, d, h = cfg.experts, cfg.hidden, cfg.expert_hidden
        self.top_k = cfg.top_k
        self.task = 0  # which row of w_gate the forward uses; fixed before export
        self.w_gate = nn.Parameter(torch.empty(cfg.tasks, d, e))
        self.w1 = nn.Parameter(torch.empty(e, d, h))
        self.b1 = nn.Parameter(torch.empty(e, h))
        self.w2 = nn.Parameter(torch.empty(e, h, d))
        self.b2 = nn.Parameter(torch.empty(e, d))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (combine [B, T, E]: softmax prob on the top-k experts, 0 elsewhere; indices [B, T, k])."""
        logits = x @ self.w_gate[self.task]
        probs = torch.softmax(logits, dim=-1)
        combine = torch.zeros_like(probs)
        picked = []
        for round_ in range(self.top_k):
            idx = logits.argmax(dim=-1, keepdim=True)  # first maximum: ties go to the lower expert index
            combine = combine.scatter(-1, idx, probs.gather(-1, idx))
            picked.append(idx)
            if round_ + 1 < self.top_k:  # knock the winner out for the next round
                logits = logits.scatter(-1, idx, torch.full_like(idx, -math.inf, dtype=logits.dtype))
        return combine, torch.cat(picked, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        combine, _ = self.route(x)
        hidden = F.gelu(torch.einsum("btd,edh->bteh", x, self.w1) + self.b1)
        out = torch.einsum("bteh,ehd->bted", hidden, self.w2) + self.b2
        return torch.einsum("bte,bted->btd", combine, out)


class Block(nn.Module):
    """Pre-norm transformer block; the feed-forward half is dense or MoE."""

    def __init__(self, cfg: M3ViTConfig, moe: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ffn: nn.Module = TaskMoE(cfg) if moe else Mlp(cfg.hidden, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class M3ViT(nn.Module):
    """The M3ViT backbone: patch embedding, CLS + learned positions, `layers` blocks; output [B, tokens, hidden]."""

    def __init__(self, cfg: M3ViTConfig, *, task: int = 0, seed: int = 0) -> None:
        super().__init__()
        if not 0 <= task < cfg.tasks:
            raise ValueError(f"task={task} out of range for {cfg.tasks} tasks")
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.channels, cfg.hidden, cfg.patch, stride=cfg.patch)
        self.cls_token = nn.Parameter(torch.empty(1, 1, cfg.hidden))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.tokens, cfg.hidden))
        self.blocks = nn.ModuleList(Block(cfg, cfg.is_moe(i)) for i in range(cfg.layers))
        self.set_task(task)
        self.reset_parameters(seed)

    def set_task(self, task: int) -> None:
        """Select the gate every MoE block uses; the export bakes this choice in."""
        for block in self.blocks:
            if isinstance(block.ffn, TaskMoE):
                block.ffn.task = task

    def reset_parameters(self, seed: int) -> None:
        """Seeded fan-in scaled weights, small non-zero biases and norms, so routing and softmax are not degenerate."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if "norm" in name:
                    noise = torch.randn(p.shape, generator=gen) * (0.05 if leaf == "weight" else 0.02)
                    p.copy_(noise + (1.0 if leaf == "weight" else 0.0))
                elif leaf in ("bias", "b1", "b2") or leaf in ("cls_token", "pos_embed"):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
                else:  # weights: fan-in is every dim but the output one (Linear/Conv: dim 0; stacked: dim -2)
                    fan_in = p[0].numel() if p.dim() != 3 else p.shape[-2]
                    p.copy_(torch.randn(p.shape, generator=gen) * fan_in**-0.5)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x
