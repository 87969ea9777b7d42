"""Fine-tuned checkpoints with their own heads: the extractor is matched strictly (by name, or by order and shape for
ports from other code bases), the head is stored apart and linked from the manifest."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from alsatian_pl.errors import StoreError
from alsatian_pl.zoo import import_checkpoint_folder, import_timm

SIZE = (3, 32, 32)


def _tuned(num_classes: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model("resnet18", num_classes=num_classes).eval()


def _features_and_logits(model, x):
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        return feats, model(x)


def test_a_folder_of_fine_tuned_checkpoints_imports_with_their_heads(store, tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    models = {"cars": _tuned(10, 1), "birds": _tuned(200, 2)}
    torch.save(models["cars"].state_dict(), folder / "cars.pth")
    save_file({k: v.contiguous() for k, v in models["birds"].state_dict().items()}, folder / "birds.safetensors")
    zoo = import_checkpoint_folder(store, name="mine", path=str(folder), arch="resnet18", input_size=SIZE,
                                   progress=False)
    x = torch.randn(2, *SIZE)
    for name in zoo.models:
        model = models[name.rsplit("-", 1)[1]]
        feats, logits = _features_and_logits(model, x)
        entry = store.head_info(name)
        assert (entry.in_features, entry.out_features) == (512, model.num_classes)
        tensors, same = store.read_head(name)
        assert same == entry and set(tensors) == {"fc.weight", "fc.bias"}
        torch.testing.assert_close(tensors["fc.weight"], model.fc.weight, rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(store.load_model(name)(x), feats, rtol=0, atol=0)
            torch.testing.assert_close(store.load_head(name)(feats), logits, rtol=1e-5, atol=1e-5)
    assert store.head_path(store.head_info(zoo.models[0]).hash).is_file()


def test_heads_are_content_addressed_and_survive_gc(store, tmp_path):
    model = _tuned(7)
    torch.save(model.state_dict(), tmp_path / "a.pth")
    first = import_timm(store, "a", "resnet18", checkpoint=tmp_path / "a.pth", input_size=SIZE)
    second = import_timm(store, "b", "resnet18", checkpoint=tmp_path / "a.pth", input_size=SIZE)
    assert first.head == second.head and len(list((store.root / "heads").rglob("*.safetensors"))) == 1
    store.gc()
    assert store.read_head("a")[1] == first.head
    store.delete_model("a")
    store.delete_model("b")
    store.gc()
    assert not list((store.root / "heads").rglob("*.safetensors"))


def test_old_manifests_without_a_head_still_load(store, tmp_path):
    man = import_timm(store, "plain", "resnet18", input_size=SIZE)  # random init: no checkpoint, no head
    raw = (store.models_dir / "plain.json").read_text()
    assert '"head"' not in raw and man.head is None and store.head_info("plain") is None
    with pytest.raises(StoreError, match="no stored classifier head"):
        store.read_head("plain")
    model = _tuned(3)
    torch.save(model.state_dict(), tmp_path / "t.pth")
    with_head = import_timm(store, "tuned", "resnet18", checkpoint=tmp_path / "t.pth", input_size=SIZE)
    assert json.loads((store.models_dir / "tuned.json").read_text())["head"]["out_features"] == 3
    assert store.manifest("tuned") == with_head


def test_a_damaged_head_file_is_reported(store, tmp_path):
    torch.save(_tuned(4).state_dict(), tmp_path / "a.pth")
    man = import_timm(store, "a", "resnet18", checkpoint=tmp_path / "a.pth", input_size=SIZE)
    path = store.head_path(man.head.hash)
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match its hash"):
        store.read_head("a")


def _renamed(state, fmt, keep=lambda k: True):
    return {fmt.format(i=i): v for i, (k, v) in enumerate((k, v) for k, v in state.items() if keep(k))}


PORTS = {  # name -> (state dict written from a fine-tuned resnet18, whether the head comes along)
    "sequential keys, headless": (lambda s: _renamed(s, "{i}.weight", lambda k: not k.startswith("fc.")), False),
    "features.N keys, with head": (lambda s: _renamed(s, "features.{i}.weight"), True),
    "no step counters, module. prefix": (
        lambda s: {f"module.{k}": v for k, v in s.items() if not k.endswith("num_batches_tracked")}, True),
    "torch.compile wrapper": (lambda s: {f"_orig_mod.{k}": v for k, v in s.items()}, True),
}


@pytest.mark.parametrize("case", sorted(PORTS))
def test_checkpoints_from_other_code_bases_map_by_order_and_shape(store, tmp_path, case):
    model = _tuned(10)
    write, has_head = PORTS[case]
    torch.save(write(model.state_dict()), tmp_path / "port.pth")
    man = import_timm(store, "port", "resnet18", checkpoint=tmp_path / "port.pth", input_size=SIZE)
    x = torch.randn(2, *SIZE)
    feats, logits = _features_and_logits(model, x)
    with torch.no_grad():
        torch.testing.assert_close(store.load_model("port")(x), feats, rtol=0, atol=0)
    assert (man.head is not None) == has_head
    if has_head:
        torch.testing.assert_close(store.load_head("port")(feats), logits, rtol=1e-5, atol=1e-5)


def _state():
    return _tuned(10).state_dict()


REFUSED = {  # name -> (state dict, words of the one error)
    "missing extractor tensors": (lambda: {k: v for k, v in _state().items() if not k.startswith("layer4.1.")},
                                  ["tensor(s) missing (e.g. layer4.1.bn1.bias", "only the classifier head may differ"]),
    "extra tensors": (lambda: {**_state(), "aux.weight": torch.zeros(3), "aux.bias": torch.zeros(3)},
                      ["2 unexpected tensor(s) (e.g. aux.bias, aux.weight)"]),
    "head reading other features": (lambda: {**_state(), "fc.weight": torch.zeros(10, 256)},
                                    ["classifier head that differs", "fc.weight [10, 256]"]),
    "port missing a tensor": (lambda: {f"{i}.w": v for i, v in enumerate(list(_state().values())[1:])},
                              ["do not correspond by order and shape", "first difference at position 0"]),
    "two copies": (lambda: {**{f"student.{k}": v for k, v in _state().items()},
                            **{f"teacher.{k}": v for k, v in _state().items()}},
                   ["ambiguous", "2 copies", "student., teacher."]),
    "same shapes in another order": (
        lambda: {f"{i}.w": v for i, v in enumerate(reversed([v for k, v in _state().items() if k[:3] != "fc."]))},
        ["ambiguous", "another order"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_checkpoint_that_does_not_fit_the_extractor_is_refused_in_one_message(store, tmp_path, case):
    make, words = REFUSED[case]
    torch.save(make(), tmp_path / "bad.pth")
    with pytest.raises(StoreError) as info:
        import_timm(store, "bad", "resnet18", checkpoint=tmp_path / "bad.pth", input_size=SIZE)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert store.model_names() == []


def test_a_missing_head_file_rebuilds_the_zoo(store, tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save(_tuned(10, 1).state_dict(), folder / "cars.pth")
    build = lambda: import_checkpoint_folder(store, name="mine", path=str(folder), arch="resnet18",  # noqa: E731
                                             input_size=SIZE, progress=False)
    (name,) = build().models
    head = store.head_path(store.head_info(name).hash)
    head.unlink()
    with pytest.warns(UserWarning, match="misses 1 block or head file"):
        build()
    assert head.is_file() and store.read_head(name)[1].out_features == 10
