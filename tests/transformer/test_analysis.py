import math

import pytest
import torch

from transformer.analysis import head_stats


def test_a_diagonal_head():
    s = head_stats(torch.eye(4))
    assert (s.entropy, s.mean_max, s.diagonal) == (0.0, 1.0, 1.0)


def test_a_uniform_head_looking_at_everything():
    s = head_stats(torch.full((3, 5), 0.2))
    assert s.entropy == pytest.approx(math.log(5)) and s.mean_max == pytest.approx(0.2)
    assert s.diagonal == pytest.approx((0.4 + 0.6 + 0.4) / 3)  # keys within one of the proportional diagonal


def test_a_head_fixed_on_one_key():
    w = torch.zeros(4, 6)
    w[:, 5] = 1.0
    s = head_stats(w)
    assert s.top_key == 5 and s.entropy == 0.0 and s.mean_max == 1.0
    # centres round(r * 5 / 3) = 0, 2, 3, 5: only the last row has key 5 within one of its centre
    assert s.diagonal == pytest.approx(1 / 4)
