"""Communication volume and a scaling model for one video split over GPUs, from the shapes alone.

``python -m vidcore.distributed.costs`` prints the table in bench/RESULTS.md
(Wan2.2 A14B at 1280x720, 81 frames). Counts are bytes *sent by one rank*
(NCCL's all-to-all and ring sends are symmetric: the same amount arrives).

Per self-attention layer, for L tokens of width ``dim`` over P = U x R ranks:

- Ulysses: q, k, v go token-split -> head-split and the output back: four
  all-to-alls; each rank keeps 1/U of each tensor and sends the rest:
  ``4 * (L / P) * dim * bytes * (U - 1) / U``;
- ring: each rank's K and V chunk (after Ulysses, L*U/P tokens of dim/U)
  travel R - 1 hops: ``2 * (L / P) * dim * bytes * (R - 1)``;
- per forward, once: the stack's state gathered again on exit
  (``L * dim * state_bytes * (P - 1) / P`` received), and with CFG
  parallelism one denoised latent exchanged per step (negligible).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiTShape:
    tokens: int
    dim: int
    heads: int
    layers: int
    ffn: int
    text_tokens: int
    act_bytes: int = 2  # bf16 q/k/v/out
    state_bytes: int = 4  # Wan keeps its residual stream in float32

    def forward_flops(self) -> float:
        """Matmul FLOPs of one forward (2 per multiply-add): projections, self/cross attention, FFN."""
        L, d, f, t = self.tokens, self.dim, self.ffn, self.text_tokens
        per_layer = 8 * L * d * d + 4 * L * L * d + 4 * L * d * d + 4 * t * d * d + 4 * L * t * d + 4 * L * d * f
        return float(per_layer * self.layers)


def wan_a14b_720p_81f() -> DiTShape:
    """Wan2.2 T2V-A14B expert: dim 5120, 40 heads, 40 layers, FFN 13824, 512 text tokens; 1280x720x81 ->
    latent 21 x 90 x 160 (VAE 4x8x8) -> patches 1x2x2 -> 21 x 45 x 80 = 75,600 tokens."""
    frames = (81 - 1) // 4 + 1
    return DiTShape(tokens=frames * (720 // 16) * (1280 // 16), dim=5120, heads=40, layers=40, ffn=13824,
                    text_tokens=512)


def layer_bytes(s: DiTShape, ulysses: int, ring: int) -> dict[str, float]:
    """Bytes one rank sends per self-attention layer (one forward)."""
    p = ulysses * ring
    share = s.tokens / p * s.dim * s.act_bytes
    return {"ulysses": 4 * share * (ulysses - 1) / ulysses, "ring": 2 * share * (ring - 1)}


def step_model(s: DiTShape, ulysses: int, ring: int, cfg: int, *, tflops: float = 450.0,
               all_to_all_gbs: float = 350.0, p2p_gbs: float = 400.0) -> dict[str, float]:
    """One sampling step with classifier-free guidance (two forwards) on ``cfg * ring * ulysses`` GPUs.

    ``tflops``: sustained bf16 matmul+attention rate per GPU; ``*_gbs``: achieved
    NCCL bandwidth per GPU per direction (all-to-all bus bandwidth; ring
    neighbour sends). Ring sends overlap the block computations; the
    all-to-alls and gathers are counted as not overlapped (a pessimistic bound).
    """
    p = ulysses * ring
    forwards = 2 // cfg  # the passes each rank runs per step
    lb = layer_bytes(s, ulysses, ring)
    a2a = lb["ulysses"] * s.layers * forwards
    ring_bytes = lb["ring"] * s.layers * forwards
    gather = s.tokens * s.dim * s.state_bytes * (p - 1) / p * forwards if p > 1 else 0.0
    compute = s.forward_flops() * forwards / p / (tflops * 1e12)
    attn_per_layer = 4 * s.tokens * s.tokens * s.dim / p / (tflops * 1e12)  # what a ring hop can hide behind
    ring_exposed = max(0.0, lb["ring"] / (p2p_gbs * 1e9) - attn_per_layer) * s.layers * forwards
    comm = (a2a + gather) / (all_to_all_gbs * 1e9) + ring_exposed
    single = s.forward_flops() * 2 / (tflops * 1e12)
    total = compute + comm
    return {"gpus": cfg * p, "a2a_gb": a2a / 1e9, "ring_gb": ring_bytes / 1e9, "gather_gb": gather / 1e9,
            "compute_s": compute, "comm_s": comm, "step_s": total, "speedup": single / total,
            "efficiency": single / total / (cfg * p)}


def table() -> str:
    s = wan_a14b_720p_81f()
    lines = [f"tokens {s.tokens:,}, dim {s.dim}, heads {s.heads}, layers {s.layers}; "
             f"one forward {s.forward_flops() / 1e15:.2f} PFLOP",
             "", "| split (U x R x CFG) | GPUs | a2a GB/layer | ring GB/layer | a2a GB/step | ring GB/step | "
             "gather GB/step | compute s/step | comm s/step | step s | speedup | efficiency |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for u, r, c in [(1, 1, 1), (1, 1, 2), (2, 1, 1), (4, 1, 1), (8, 1, 1), (4, 1, 2), (1, 8, 1), (2, 4, 1),
                    (4, 2, 1), (2, 2, 2)]:
        lb = layer_bytes(s, u, r)
        m = step_model(s, u, r, c)
        lines.append(f"| {u} x {r} x {c} | {m['gpus']} | {lb['ulysses'] / 1e9:.3f} | {lb['ring'] / 1e9:.3f} | "
                     f"{m['a2a_gb']:.1f} | {m['ring_gb']:.1f} | {m['gather_gb']:.1f} | {m['compute_s']:.2f} | "
                     f"{m['comm_s']:.3f} | {m['step_s']:.2f} | {m['speedup']:.2f} | {m['efficiency']:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
