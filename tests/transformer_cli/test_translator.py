import torch

from transformer_cli.translator import align_words


def test_align_words_against_a_known_matrix():
    src = ["▁Ein", "▁Hund", "▁rennt", "."]
    out = ["▁A", "▁do", "g", "▁runs", "."]
    cross = torch.zeros(2, len(out) + 1, len(src) + 1)  # (heads, out + </s>, src + </s>)
    for t, s in enumerate([0, 1, 3, 2, 3]):  # "g" (second piece of dog) looks elsewhere: ignored
        cross[:, t, s] = 1.0
    assert align_words(cross, src, out) == [(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (3, 3, 1.0)]


def test_alignment_uses_the_mean_over_heads():
    cross = torch.zeros(2, 2, 3)
    cross[0, 0, 0], cross[1, 0, 1] = 0.9, 1.0  # mean: key 1 (0.5) beats key 0 (0.45)
    assert align_words(cross, ["▁a", "▁b"], ["▁x"]) == [(0, 1, 0.5)]
