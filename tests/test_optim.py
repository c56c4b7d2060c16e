"""trainer.optim.adam: the fused kernel where torch has one, the same updates as the default Adam."""

from __future__ import annotations

import torch

from trainer.optim import adam


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(7, 5, 3, generator=g).requires_grad_(True),
        torch.randn(7, 3, generator=g).requires_grad_(True),
    ]


def test_adam_is_fused_on_cpu_float32() -> None:
    opt = adam(_params(0), lr=1e-2)
    assert opt.defaults["fused"] is True


def test_fused_adam_takes_the_default_kernels_steps() -> None:
    a, b, start = _params(1), _params(1), _params(1)
    fused = adam(a, lr=1e-2, betas=(0.9, 0.99))
    plain = torch.optim.Adam(b, lr=1e-2, betas=(0.9, 0.99), foreach=False)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=g) for p in a]
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert all(
        float((p - s).detach().abs().max()) > 0.05 for p, s in zip(a, start)
    )  # 20 steps of lr 1e-2 moved them


def test_adam_takes_parameter_groups_and_falls_back_without_a_fused_kernel() -> None:
    x = torch.zeros(4, dtype=torch.float64, requires_grad=True)  # float64: fused CPU Adam still works
    y = torch.zeros(3, dtype=torch.complex64, requires_grad=True)  # no fused kernel for complex
    opt = adam([{"params": [x], "lr": 0.5}, {"params": [y]}], lr=1e-3)
    assert not opt.defaults["fused"]
    assert [g["lr"] for g in opt.param_groups] == [0.5, 1e-3]
    x.grad = torch.ones(4, dtype=torch.float64)
    y.grad = torch.ones(3, dtype=torch.complex64)
    opt.step()
    assert torch.allclose(x.detach(), torch.full((4,), -0.5, dtype=torch.float64))
