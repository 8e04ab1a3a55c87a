"""fixtures.training: the pieces the fixture training scripts share."""

from __future__ import annotations

import json
import stat

import torch
from torch import nn

from fixtures.training import (
    deterministic_algorithms,
    lr_factor,
    make_adamw,
    optimizer_step,
    torch_threads,
    write_fixture,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(5, 4)
        self.pos_emb = nn.Parameter(torch.zeros(3, 4))
        self.proj = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(2)


def test_adamw_decays_weight_matrices_except_the_named_ones() -> None:
    model = Tiny()
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = make_adamw(model.named_parameters(), lr=0.1, weight_decay=0.05, no_decay=("embed", "pos_emb"))
    decay, keep = ([names[id(p)] for p in group["params"]] for group in optimizer.param_groups)
    assert decay == ["proj.weight"] and keep == ["pos_emb", "embed_tokens.weight", "proj.bias", "norm.weight", "norm.bias"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0] and optimizer.defaults["betas"] == (0.9, 0.98)
    default = make_adamw(model.named_parameters(), lr=0.1, weight_decay=0.05)  # only "embed" is spared by default
    assert [names[id(p)] for p in default.param_groups[0]["params"]] == ["pos_emb", "proj.weight"]


def test_optimizer_step_clips_a_module_or_a_parameter_list() -> None:
    for as_list in (False, True):
        model = Tiny()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 10, 2))
        before = model.proj.weight.detach().clone()
        loss = 1000 * model.proj(torch.ones(1, 4)).sum()  # a huge gradient: clipping decides the step size
        optimizer_step(loss, optimizer, scheduler, clip=list(model.parameters()) if as_list else model)
        moved = (model.proj.weight.detach() - before).norm().item()
        assert 0 < moved <= 0.5 + 1e-6  # lr 1.0 x warm-up factor 0.5 x gradient norm <= 1
        assert scheduler.last_epoch == 1


def test_write_fixture_saves_model_metrics_card_readable_by_all(tmp_path) -> None:
    saved = []

    class Saver:
        def save_pretrained(self, out) -> None:
            (out / f"part{len(saved)}.bin").write_bytes(b"x")
            (out / f"part{len(saved)}.bin").chmod(0o600)  # as safetensors leaves its files
            saved.append(out)

    write_fixture(tmp_path / "f", Saver(), Saver(), {"score": 1.0}, "# card\n")
    folder = tmp_path / "f"
    assert json.loads((folder / "training_metrics.json").read_text()) == {"score": 1.0}
    assert (folder / "README.md").read_text() == "# card\n" and len(saved) == 2
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in folder.iterdir())


def test_deterministic_algorithms_are_on_inside_and_restored_after() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_backward_of_repeated_rows_is_reproducible_on_two_threads() -> None:
    """The pattern of train_llava's supervised heads (one batch row gathered once per target): the gradient must
    come out bit for bit the same every time."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(48, 160, 32, generator=generator)
    rows = torch.randint(48, (3000,), generator=generator)
    weights = torch.randn(3000, 160, 32, generator=generator)
    grads = []
    with torch_threads(2), deterministic_algorithms():
        for _ in range(3):
            leaf = keys.clone().requires_grad_()
            (leaf[rows] * weights).sum().backward()
            grads.append(leaf.grad)
    assert all(torch.equal(grads[0], grad) for grad in grads[1:])
