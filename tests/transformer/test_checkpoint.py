import dataclasses
import json
import random

import pytest
import torch
from safetensors.torch import save_file

from transformer import Transformer
from transformer import checkpoint as ck


def make(cfg):
    torch.manual_seed(0)
    return Transformer(cfg)


def test_weights_round_trip_with_tied_embeddings(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, tgt_vocab_size=23, share_embeddings=True)
    a, b = make(cfg), Transformer(cfg)
    ck.save_weights(a, tmp_path / "m.safetensors")
    ck.load_weights(b, tmp_path / "m.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert b.generator.weight is b.tgt_embed.weight is b.src_embed.weight


def test_load_model_draws_no_initial_weights_and_reads_every_one(tiny_config, tmp_path):
    """load_model builds the model without random initial values (the file replaces them all): the
    random generator is untouched, the weights are the file's, torch.nn.init works again afterwards,
    and a file lacking a weight is refused rather than leaving it uninitialised."""
    (tmp_path / ck.CONFIG_FILE).write_text(json.dumps({"model": dataclasses.asdict(tiny_config)}))
    saved = make(tiny_config)
    ck.save_weights(saved, tmp_path / ck.MODEL_FILE)
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    loaded = ck.load_model(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(saved.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(loaded.positions.pe, saved.positions.pe)
    assert make(tiny_config).encoder.layers[0].feed_forward.w_1.weight.abs().sum() > 0  # init restored
    with pytest.raises(RuntimeError):
        with ck.initial_weights_skipped():
            raise RuntimeError("a failure while building")
    assert torch.nn.init.xavier_uniform_(torch.zeros(4, 4)).abs().sum() > 0
    tensors = ck.read_tensors(tmp_path / ck.MODEL_FILE)
    tensors.pop(next(k for k in tensors if "w_1.weight" in k))
    save_file(tensors, str(tmp_path / ck.MODEL_FILE))
    with pytest.raises(ck.CheckpointError, match="missing"):
        ck.load_model(tmp_path)


def test_refuses_foreign_and_corrupt_weights(tiny_config, tmp_path):
    ck.save_weights(make(tiny_config), tmp_path / "m.safetensors")
    bigger = Transformer(dataclasses.replace(tiny_config, d_model=64))
    with pytest.raises(ck.CheckpointError, match="shape"):
        ck.load_weights(bigger, tmp_path / "m.safetensors")
    deeper = Transformer(dataclasses.replace(tiny_config, n_encoder_layers=3))
    with pytest.raises(ck.CheckpointError, match="do not belong to this model"):
        ck.load_weights(deeper, tmp_path / "m.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ck.CheckpointError, match="not a readable safetensors file"):
        ck.load_weights(make(tiny_config), tmp_path / "bad.safetensors")


def test_checkpoint_restores_optimizer_and_rngs(tiny_config, tmp_path):
    model = make(tiny_config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    src, tgt = torch.randint(1, 19, (2, 5)), torch.randint(1, 19, (2, 4))
    model(src, tgt)[0].sum().backward()
    opt.step()
    ck.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    expected = (torch.rand(3), random.random())
    model2 = Transformer(tiny_config)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    state = ck.load_checkpoint(tmp_path / "step-0000001", model2, opt2)
    assert state == {"step": 1}
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert opt.state_dict()["state"], "the optimizer has state to compare"
    for k, v in opt.state_dict()["state"].items():
        for name, t in v.items():
            assert torch.equal(t, opt2.state_dict()["state"][k][name])


def test_checkpoint_restores_the_fp16_loss_scaler(tiny_config, tmp_path):
    model = make(tiny_config)
    opt = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.load_state_dict({**scaler.state_dict(), "_growth_tracker": 7})
    ck.save_checkpoint(tmp_path / "step-0000003", model, opt, {"step": 3}, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu")
    ck.load_checkpoint(tmp_path / "step-0000003", make(tiny_config), torch.optim.Adam(model.parameters()), fresh)
    assert fresh.state_dict() == scaler.state_dict() and fresh.get_scale() == 1024.0


def test_crash_during_save_leaves_previous_checkpoint(tiny_config, tmp_path, monkeypatch):
    model = make(tiny_config)
    opt = torch.optim.Adam(model.parameters())
    ck.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    before = (tmp_path / "step-0000001" / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path / "step-0000002", model, opt, {"step": 2})
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-0000001"]
    assert (tmp_path / "step-0000001" / "model.safetensors").read_bytes() == before


def test_a_failed_save_removes_its_partial_directory(tiny_config, tmp_path, monkeypatch):
    import errno

    model = make(tiny_config)
    opt = torch.optim.Adam(model.parameters())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path / "step-0000002", model, opt, {"step": 2})
    assert list(tmp_path.iterdir()) == [], "no partial checkpoint keeps the disk full"
    monkeypatch.setattr(ck, "save_model", full)
    with pytest.raises(OSError):
        ck.save_weights(model, tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saving_over_the_same_step_always_leaves_one_copy(tiny_config, tmp_path, monkeypatch):
    import os

    model = make(tiny_config)
    opt = torch.optim.Adam(model.parameters())
    ck.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    real_replace, seen = os.replace, []

    def watch(src, dst):
        real_replace(src, dst)
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        if len(seen) == 1:
            raise KeyboardInterrupt  # killed between moving the old copy aside and the new one in

    monkeypatch.setattr(ck.os, "replace", watch)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    monkeypatch.setattr(ck.os, "replace", real_replace)
    assert any(name.startswith(".step-0000001.old-") for name in seen[0])
    assert ck.recover_checkpoints(tmp_path) == ["restored step-0000001 from an interrupted save",
                                                f"removed the partial checkpoint .step-0000001.tmp-{os.getpid()}"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000001"]
    assert ck.load_checkpoint(tmp_path / "step-0000001", model, opt) == {"step": 1}
