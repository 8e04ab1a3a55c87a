"""The two Honeybee projectors in plain PyTorch: the C-Abstractor and the D-Abstractor.

Both take the CLIP features of a batch of images, ``[B, 1 + N, vision_hidden]`` with the CLS token
first, drop the CLS token, and return ``[B, num_queries + num_eos_tokens, text_hidden]`` visual
tokens for the language model. Module and parameter names follow the released checkpoints
(timm ``RegStage`` blocks for the C-Abstractor, Deformable-DETR decoder layers for the
D-Abstractor), so converting a checkpoint only renames prefixes.

>>> import torch
>>> abstractor = build_abstractor({"projector_type": "c-abs", "num_queries": 4, "hidden_size": 32, "depth": 1},
...                               vision_hidden_size=32, text_hidden_size=64, num_patches=16)
>>> abstractor(torch.randn(2, 17, 32)).shape
torch.Size([2, 4, 64])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mllm_nb.honeybee.configuration import HoneybeeError

# ---------------------------------------------------------------------------------- C-Abstractor


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """Conv2d without bias, then LayerNorm2d (named ``bn`` as in timm), then SiLU (optional)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1, act: bool = True, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
        self.bn = LayerNorm2d(cout, eps=eps)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: global mean -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class Bottleneck(nn.Module):
    """RegNet bottleneck: 1x1 conv, 3x3 depthwise conv, squeeze-excite, 1x1 conv, residual, SiLU."""

    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, 1, eps=eps)
        self.conv2 = ConvNormAct(cout, cout, 3, groups=cout, eps=eps)
        self.se = SqueezeExcite(cout, round(cin * 0.25))
        self.conv3 = ConvNormAct(cout, cout, 1, act=False, eps=eps)
        self.downsample = ConvNormAct(cin, cout, 1, act=False, eps=eps) if cin != cout else nn.Identity()
        self.act3 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(out + self.downsample(x))


class RegStage(nn.Module):
    """``depth`` bottleneck blocks named ``b1``, ``b2``, ... (stride 1)."""

    def __init__(self, depth: int, cin: int, cout: int, eps: float):
        super().__init__()
        for i in range(depth):
            self.add_module(f"b{i + 1}", Bottleneck(cin if i == 0 else cout, cout, eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


def _mlp(depth: int, cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(cin, cout)]
    for _ in range(1, depth):
        layers += [nn.SiLU(), nn.Linear(cout, cout)]
    return nn.Sequential(*layers)


def _to_map(x: torch.Tensor) -> torch.Tensor:
    """``[B, H*W, C]`` -> ``[B, C, H, W]`` (square maps)."""
    side = math.isqrt(x.shape[1])
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H*W, C]``."""
    return x.flatten(2).transpose(1, 2)


class HoneybeeCAbstractor(nn.Module):
    """C-Abstractor: positional embedding, RegStage, adaptive average pool to sqrt(M)^2, RegStage, MLP.

    >>> from mllm_nb.honeybee.configuration import abstractor_defaults
    >>> settings = {**abstractor_defaults("c-abs"), "num_queries": 4, "hidden_size": 16, "depth": 1}
    >>> HoneybeeCAbstractor(settings, 16, 32, num_patches=16)(torch.randn(1, 17, 16)).shape
    torch.Size([1, 4, 32])
    """

    def __init__(self, settings: dict[str, Any], vision_hidden_size: int, text_hidden_size: int, num_patches: int):
        super().__init__()
        hidden, depth, eps = settings["hidden_size"], settings["depth"], settings["norm_eps"]
        side = math.isqrt(settings["num_queries"])
        self.prenorm = nn.LayerNorm(vision_hidden_size, eps=settings["prenorm_eps"]) if settings["prenorm"] else None
        self.pos_emb = nn.Parameter(torch.zeros(1, num_patches, vision_hidden_size)) if settings["pos_emb"] else None
        self.net = nn.Sequential(
            RegStage(depth, vision_hidden_size, hidden, eps),
            nn.AdaptiveAvgPool2d((side, side)),
            RegStage(depth, hidden, hidden, eps),
        )
        self.readout = _mlp(settings["mlp_depth"], hidden, text_hidden_size)
        eos = settings["num_eos_tokens"]
        self.eos_tokens = nn.Parameter(torch.zeros(1, eos, text_hidden_size)) if eos else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + N, vision_hidden]`` (CLS first) -> ``[B, M (+ eos), text_hidden]``."""
        x = features[:, 1:]
        if self.prenorm is not None:
            x = self.prenorm(x)
        if self.pos_emb is not None:
            x = x + self.pos_emb
        x = self.readout(_to_tokens(self.net(_to_map(x))))
        if self.eos_tokens is not None:
            x = torch.cat([x, self.eos_tokens.expand(x.shape[0], -1, -1)], dim=1)
        return x


# ---------------------------------------------------------------------------------- D-Abstractor


class DetrSelfAttention(nn.Module):
    """DETR multi-head self-attention: position embeddings are added to queries and keys, not values."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        with_position = hidden + position
        q, k = self._split(self.q_proj(with_position)), self._split(self.k_proj(with_position))
        out = F.scaled_dot_product_attention(q, k, self._split(self.v_proj(hidden)))
        return self.out_proj(out.transpose(1, 2).reshape(hidden.shape))


def _deformable_sample(
    value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Multi-scale deformable attention in PyTorch (bilinear ``grid_sample``, zero padding).

    ``value`` [B, S, heads, d], ``locations`` [B, Q, heads, levels, points, 2] in [0, 1],
    ``weights`` [B, Q, heads, levels, points] -> [B, Q, heads * d].
    """
    batch, _, heads, dim = value.shape
    queries, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    grids = 2 * locations - 1
    sampled = []
    for level, (value_l, (height, width)) in enumerate(zip(value.split([h * w for h, w in shapes], 1), shapes)):
        value_l = value_l.flatten(2).transpose(1, 2).reshape(batch * heads, dim, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(batch, heads * dim, queries).transpose(1, 2)


class DeformableCrossAttention(nn.Module):
    """Deformable attention of queries over the visual map around learned reference points."""

    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(
        self,
        hidden: torch.Tensor,
        position: torch.Tensor,
        visual: torch.Tensor,
        reference_points: torch.Tensor,
        shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        query = hidden + position
        batch, queries, _ = query.shape
        value = self.value_proj(visual).view(batch, visual.shape[1], self.heads, -1)
        offsets = self.sampling_offsets(query).view(batch, queries, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(batch, queries, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(batch, queries, self.heads, self.levels, self.points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(_deformable_sample(value, shapes, locations, weights))


class DeformableDecoderLayer(nn.Module):
    """Deformable-DETR decoder layer: self-attention, deformable cross-attention, FFN (post-norm)."""

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        dim, eps = settings["d_model"], settings["layer_norm_eps"]
        heads = settings["decoder_attention_heads"]
        self.self_attn = DetrSelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.encoder_attn = DeformableCrossAttention(
            dim, heads, settings["num_feature_levels"], settings["decoder_n_points"]
        )
        self.encoder_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, settings["decoder_ffn_dim"])
        self.fc2 = nn.Linear(settings["decoder_ffn_dim"], dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.activation = _activation(settings["activation_function"])

    def forward(
        self,
        hidden: torch.Tensor,
        position: torch.Tensor,
        visual: torch.Tensor,
        reference_points: torch.Tensor,
        shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        hidden = self.self_attn_layer_norm(hidden + self.self_attn(hidden, position))
        cross = self.encoder_attn(hidden, position, visual, reference_points, shapes)
        hidden = self.encoder_attn_layer_norm(hidden + cross)
        return self.final_layer_norm(hidden + self.fc2(self.activation(self.fc1(hidden))))


def _activation(name: str) -> nn.Module:
    from transformers.activations import ACT2FN

    if name not in ACT2FN:
        raise HoneybeeError(f"Unknown D-Abstractor activation_function {name!r}; use e.g. 'relu' or 'gelu'.")
    return ACT2FN[name]


def grid_reference_points(num_queries: int, side: int) -> torch.Tensor:
    """Reference points on a regular sqrt(Q) x sqrt(Q) grid over a ``side`` x ``side`` map, in [0, 1].

    >>> grid_reference_points(4, 8)[0].tolist()
    [[0.0625, 0.0625], [0.9375, 0.0625], [0.0625, 0.9375], [0.9375, 0.9375]]
    """
    steps = math.isqrt(num_queries)
    line = torch.linspace(0.5, side - 0.5, steps, dtype=torch.float32) / side
    ref_y, ref_x = torch.meshgrid(line, line, indexing="ij")
    return torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1)[None]


class HoneybeeDAbstractor(nn.Module):
    """D-Abstractor: a Deformable-DETR decoder whose queries attend to the visual map; float32 inside.

    >>> from mllm_nb.honeybee.configuration import abstractor_defaults
    >>> settings = {**abstractor_defaults("d-abs"), "num_queries": 4, "d_model": 16, "decoder_layers": 1}
    >>> HoneybeeDAbstractor(settings, 16, 32, num_patches=16)(torch.randn(1, 17, 16)).shape
    torch.Size([1, 4, 32])
    """

    def __init__(self, settings: dict[str, Any], vision_hidden_size: int, text_hidden_size: int, num_patches: int):
        super().__init__()
        dim, queries = settings["d_model"], settings["num_queries"]
        self.pooled_v_target = settings["pooled_v_target"]
        self.input_proj = (
            nn.ModuleList([nn.Linear(vision_hidden_size, dim)]) if vision_hidden_size != dim else None
        )
        self.v_pos_emb = nn.Parameter(torch.zeros(1, num_patches, dim)) if settings["pos_emb"] else None
        width = dim * 2 if self.pooled_v_target == "none" else dim
        self.query_position_embeddings = nn.Embedding(queries, width)
        self.reference_points = nn.Parameter(grid_reference_points(queries, math.isqrt(num_patches)))
        self.layers = nn.ModuleList([DeformableDecoderLayer(settings) for _ in range(settings["decoder_layers"])])
        eos = settings["num_eos_tokens"]
        self.eos_tokens = nn.Parameter(torch.zeros(1, eos, dim)) if eos else None
        self.output_proj = nn.Linear(dim, text_hidden_size)

    def _queries(self, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, position) of the queries: learned embeddings and the pooled visual map."""
        batch = visual.shape[0]
        learned = self.query_position_embeddings.weight
        if self.pooled_v_target == "none":
            position, target = learned.split(visual.shape[2], dim=1)
            return target.expand(batch, -1, -1), position.expand(batch, -1, -1)
        side = math.isqrt(learned.shape[0])
        pooled = _to_tokens(F.adaptive_avg_pool2d(_to_map(visual), (side, side)))
        learned = learned.unsqueeze(0).expand(batch, -1, -1)
        return (pooled, learned) if self.pooled_v_target == "tgt" else (learned, pooled)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + N, vision_hidden]`` (CLS first) -> ``[B, M (+ eos), text_hidden]`` in float32."""
        dtype = self.output_proj.weight.dtype  # float32 unless the caller cast the module
        with torch.autocast(features.device.type, enabled=False):
            visual = features[:, 1:].to(dtype)
            if self.input_proj is not None:
                visual = self.input_proj[0](visual)
            if self.v_pos_emb is not None:
                visual = visual + self.v_pos_emb
            side = math.isqrt(visual.shape[1])
            target, position = self._queries(visual)
            reference = self.reference_points.expand(visual.shape[0], -1, -1)[:, :, None]
            for layer in self.layers:
                target = layer(target, position, visual, reference, [(side, side)])
            if self.eos_tokens is not None:
                target = torch.cat([target, self.eos_tokens.expand(target.shape[0], -1, -1)], dim=1)
            return self.output_proj(target)


def build_abstractor(
    settings: dict[str, Any], vision_hidden_size: int, text_hidden_size: int, num_patches: int
) -> nn.Module:
    """The abstractor named by ``settings["projector_type"]`` (``"c-abs"`` or ``"d-abs"``).

    >>> type(build_abstractor({"projector_type": "d-abs", "num_queries": 4, "d_model": 32, "decoder_layers": 1},
    ...                       vision_hidden_size=32, text_hidden_size=64, num_patches=16)).__name__
    'HoneybeeDAbstractor'
    """
    from mllm_nb.honeybee.configuration import checked_abstractor

    settings = checked_abstractor(settings)
    kind = settings["projector_type"]
    cls = HoneybeeCAbstractor if kind == "c-abs" else HoneybeeDAbstractor
    return cls(settings, vision_hidden_size, text_hidden_size, num_patches)


__all__ = ["HoneybeeCAbstractor", "HoneybeeDAbstractor", "build_abstractor", "grid_reference_points"]
