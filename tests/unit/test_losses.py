import pytest
import torch
import torch.nn.functional as F

from characterlab.train.losses import frozen_head_cross_entropy_sum


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_matches_cross_entropy_and_its_gradient(dtype, tol, chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(50, 16, generator=g).to(dtype)
    targets = torch.randint(0, 50, (37,), generator=g)

    ref_h = hidden.detach().clone().requires_grad_()
    acc = torch.promote_types(dtype, torch.float32)
    ref = F.cross_entropy((ref_h @ weight.t()).to(acc), targets, reduction="sum")
    (ref * 0.5).backward()

    ours = frozen_head_cross_entropy_sum(hidden, weight, targets, chunk=chunk)
    (ours * 0.5).backward()
    assert ours.dtype == torch.promote_types(dtype, torch.float32)
    assert torch.allclose(ours.double(), ref.double(), rtol=tol, atol=tol * 10)
    assert torch.allclose(hidden.grad.float(), ref_h.grad.float(), rtol=tol, atol=tol)


def test_refuses_a_trainable_head_and_handles_no_rows():
    with pytest.raises(ValueError):
        frozen_head_cross_entropy_sum(torch.randn(2, 4), torch.randn(5, 4, requires_grad=True), torch.tensor([0, 1]))
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = frozen_head_cross_entropy_sum(empty, torch.randn(5, 4), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
