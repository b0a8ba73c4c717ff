"""Shared by the head and backbone tests: box rows as a tensor, the reference smooth L1, a float64 comparison
relative to the largest value."""
import torch


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def assert_close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-10) -> None:
    scale = expected.abs().max().item()
    assert scale > 0
    assert (got - expected).abs().max().item() <= rtol * scale


def smooth_l1(x: float, beta: float = 1 / 9) -> float:
    x = abs(x)
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta
