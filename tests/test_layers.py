"""Layers (layers.py): batch norm that normalises by its running statistics in train mode, as matterport's
heads do."""
import torch

from maskrcnn.layers import RunningStatsBatchNorm2d


def test_running_statistics_batch_norm_in_train_mode():
    norm = RunningStatsBatchNorm2d(3, eps=1e-3).train()
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
        norm.weight.copy_(torch.tensor([2.0, 1.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0, -1.0]))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = norm(x)
    mean, var = norm.running_mean[:, None, None], norm.running_var[:, None, None]
    expected = (x - mean) / torch.sqrt(var + 1e-3) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(out, expected)
    assert torch.equal(norm.running_mean, torch.tensor([1.0, 2.0, 3.0]))  # never updated
    out.sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad is not None
