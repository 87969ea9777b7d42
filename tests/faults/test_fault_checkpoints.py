"""Malicious and malformed checkpoints in a ``models=checkpoints`` folder: each is refused in one line that says what
is wrong with it (never torch's advice to load with weights_only=False), before anything is written to the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _harness import compose, in_process, one_error_line

ARCH = "mobilenetv3_small_050"


class Payload:
    """Unpickling this would run code (it creates the file ``ran``): weights_only loading must refuse it."""

    def __init__(self, ran: Path):
        self.ran = ran

    def __reduce__(self):
        return (Path.touch, (self.ran,))


def _state() -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    return timm.create_model(ARCH).state_dict()


def _malicious(path):
    torch.save({**_state(), "payload": Payload(path.parent.parent / "ran")}, path)


def _extra(path):
    torch.save({**_state(), "extra.weight": torch.zeros(3)}, path)


def _missing(path):
    state = _state()
    state.pop(next(k for k in state if k.startswith("blocks.")))
    torch.save(state, path)


def _wrong_shape(path):
    state = _state()
    key = next(k for k in state if k.endswith("conv_stem.weight"))
    state[key] = torch.zeros(1, *state[key].shape[1:])
    torch.save(state, path)


def _nan_weights(path):
    state = _state()
    key = next(k for k in state if k.endswith("conv_stem.weight"))
    state[key][0, 0] = float("nan")
    torch.save(state, path)


def _truncated_safetensors(path):
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in _state().items()})
    path.with_suffix(".safetensors").write_bytes(data[: len(data) // 3])


CASES = {  # name -> (how the folder's one checkpoint is written, words of the error line)
    "malicious pickle": (_malicious, ["holds Python objects besides tensors", "refused"]),
    "not a checkpoint": (lambda p: p.write_bytes(b"not a checkpoint at all"), ["damaged or was not written"]),
    "extra tensor": (_extra, ["1 unexpected tensor(s) (e.g. extra.weight)"]),
    "missing tensor": (_missing, ["1 tensor(s) missing (e.g. blocks."]),
    "tensor of another shape": (_wrong_shape, ["1 of another shape (e.g. conv_stem.weight)"]),
    "truncated safetensors": (_truncated_safetensors, ["cannot read checkpoint"]),
    "NaN weights": (_nan_weights, ["a.pth: tensor", "conv_stem.weight holds", "NaN or infinite"]),
    "two files with one name": (lambda p: (_extra(p), _extra(p.with_suffix(".pt"))), ["named a"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_checkpoint_is_refused_in_one_line(case, tmp_path, capsys):
    from hydra.utils import instantiate

    from alsatian_pl.store import BlockStore

    folder = tmp_path / "ckpts"
    folder.mkdir()
    write, words = CASES[case]
    write(folder / "a.pth")
    cfg = compose("models=checkpoints", f"models.path={folder}", f"models.arch={ARCH}", "dataset.image_size=32",
                  f"store.root={tmp_path / 'store'}", tiny=False)
    status, err = in_process(capsys, lambda: instantiate(cfg.models).build(BlockStore(cfg.store.root)))
    assert status == 2
    line = one_error_line(err, *words)
    assert "weights_only" not in err and not (tmp_path / "ran").exists(), line
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def test_a_fine_tuned_checkpoint_with_another_head_is_imported(tmp_path):
    """The classifier head is not stored (the store keeps the feature blocks): its class count may differ."""
    import timm

    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import import_checkpoint_folder

    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save(timm.create_model(ARCH, num_classes=7).state_dict(), folder / "tuned.pth")
    zoo = import_checkpoint_folder(BlockStore(tmp_path / "store"), name="ck", path=str(folder), arch=ARCH,
                                   input_size=(3, 32, 32), progress=False)
    assert len(zoo.models) == 1 and BlockStore(tmp_path / "store").verify() == []
