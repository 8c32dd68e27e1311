"""Named model sizes and the training defaults that go with them."""

from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    # learns the demo corpus in a couple of minutes on 2 CPU cores
    "tiny": {
        "model": {"d_model": 128, "n_heads": 4, "d_ff": 512, "n_encoder_layers": 2, "n_decoder_layers": 2,
                  "dropout": 0.1, "max_len": 256},
        "training": {"max_tokens": 2048, "warmup": 400, "lr_factor": 0.7, "eval_every": 200,
                     "max_steps": 800, "eval_samples": 200, "log_every": 25},
    },
    # Multi30k-sized. The training values are the issue-10 recipe (bench/RESULTS.md), with the final
    # weights chosen as in issue 26: the moving average of the weights at the best validation (+3.2
    # BLEU on validation over the mean of the last 5 checkpoints in a 40-minute float32 run), and
    # R-Drop (alpha 5) from update 2,000 on, where the plain recipe starts to over-fit (issue 26, runs
    # 16-17: validation 43.79 and 43.36 in 40 minutes against 41.6-42.1 without it); label smoothing
    # 0.2 with the length penalty chosen on validation after training (issue 26, runs 23-24: validation
    # 43.23 and 43.00 against 42.12 for smoothing 0.1 with its own chosen penalty, on a Zen 4 CPU); and
    # AdamW's weight decay 0.1 (issue 26, runs 29-30: the model learns faster per update, which a CPU that
    # makes ~2,300 updates in 40 minutes needs).
    "small": {
        "model": {"d_model": 256, "n_heads": 8, "d_ff": 1024, "n_encoder_layers": 3, "n_decoder_layers": 3,
                  "dropout": 0.1, "max_len": 512},
        "training": {"max_tokens": 4096, "warmup": 500, "lr_factor": 1.0, "eval_every": 200,
                     "max_steps": 6000, "precision": "auto", "ema_decay": 0.999, "r_drop": 5.0,
                     "r_drop_from": 2000, "label_smoothing": 0.2, "weight_decay": 0.1,
                     "choose_length_penalty": True},
    },
    # the paper's base model
    "base": {
        "model": {"d_model": 512, "n_heads": 8, "d_ff": 2048, "n_encoder_layers": 6, "n_decoder_layers": 6,
                  "dropout": 0.1, "max_len": 1024},
        "training": {"max_tokens": 25000, "warmup": 4000, "lr_factor": 1.0, "eval_every": 2000,
                     "max_steps": 100000, "precision": "auto"},
    },
    # the paper's big model
    "big": {
        "model": {"d_model": 1024, "n_heads": 16, "d_ff": 4096, "n_encoder_layers": 6, "n_decoder_layers": 6,
                  "dropout": 0.3, "max_len": 1024},
        "training": {"max_tokens": 25000, "warmup": 4000, "lr_factor": 1.0, "eval_every": 2000,
                     "max_steps": 300000, "precision": "auto"},
    },
}
