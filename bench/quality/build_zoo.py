"""Build the real fine-tuned zoo (the paper's M_train kind, §6) offline, once: EfficientNet-Lite0 variants (real
ImageNet weights) and MiniLM variants (real all-MiniLM-L6-v2 weights), each actually fine-tuned on a source task
available on this machine, and import them into a block store with their source classifier heads.

    python bench/quality/build_zoo.py [--out /tmp/alsatian-quality] [--image 16] [--text 12] [--seed 0]
                                      [--image-blocks 2,8]

As in the paper, each new variant copies a random model already in the zoo (the pretrained one or an earlier
variant), fine-tunes its last n blocks (Adam, lr 1e-3 for images, 2e-4 for text; the others stay frozen and are
shared with the parent) on a source task (each task about equally often), and joins the zoo. Source tasks never use
the targets' items: image sources come from the Fashion-MNIST *test* file (the image target samples the training
file) and scikit-learn's handwritten digits; text sources from the 20 Newsgroups *test* file (the text target samples
the training file), Reuters-R8 and Rotten Tomatoes.

Writes ``OUT/image/ckpts/*.safetensors`` (timm state dicts with the source head), ``OUT/text/ckpts/<name>/``
(Hugging Face folders; the head in ``source_head.safetensors``), ``OUT/zoo.json`` (lineage, task, blocks trained,
source accuracy, seconds) and ``OUT/store`` (both zoos imported, heads stored).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alsatian_pl.data import (FASHION_MNIST_DIR, ToPixels, orange_tab, read_idx, resize_pixels,  # noqa: E402
                              rotten_tomatoes, tokenize)

IMAGE_SIZE, MAX_LENGTH = 64, 64
TO_PIXELS = ToPixels([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # the search's own normalisation (ImageNet's)
TASK_ITEMS = {"image": 2400, "text": 1200}  # items each source fine-tune trains on (80%) and checks on (20%)
EPOCHS = 2


# ------------------------------------------------------------------------------------------------ source tasks
def fashion_test() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 Fashion-MNIST test images and labels (Debian package dataset-fashion-mnist)."""
    return (read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"),
            read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64))


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as uint8 images."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target.astype(np.int64)


def regroup(x: np.ndarray, y: np.ndarray, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the items of the listed classes; group ``g`` becomes label ``g``."""
    lookup = {c: g for g, members in enumerate(groups) for c in members}
    keep = np.array([c in lookup for c in y])
    return x[keep], np.array([lookup[c] for c in y[keep]], dtype=np.int64)


def image_tasks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Source tasks: class subsets and regroupings of Fashion-MNIST (test file) and of the digits, and one task
    with shuffled labels (a source whose fine-tuning teaches nothing transferable)."""
    fx, fy = fashion_test()
    dx, dy = digits()
    rng = np.random.default_rng(1)
    return {
        "fashion10": (fx, fy),
        "fashion-tops4": regroup(fx, fy, [[0], [2], [4], [6]]),
        "fashion-shoes3": regroup(fx, fy, [[5], [7], [9]]),
        "fashion-other3": regroup(fx, fy, [[1], [3], [8]]),
        "fashion-upper-vs-rest": regroup(fx, fy, [[0, 2, 4, 6], [1, 3, 5, 7, 8, 9]]),
        "fashion-shirt-vs-tshirt": regroup(fx, fy, [[0], [6]]),
        "fashion-shuffled": (fx, rng.permutation(fy)),
        "digits10": (dx, dy),
        "digits-parity": (dx, dy % 2),
        "digits-low-high": (dx, (dy >= 5).astype(np.int64)),
    }


def ng_groups(prefixes: list[list[str]], names: list[str]) -> list[list[int]]:
    return [[i for i, n in enumerate(names) if any(n.startswith(p) for p in group)] for group in prefixes]


def text_tasks() -> dict[str, tuple[list[str], np.ndarray]]:
    """Source tasks: regroupings of 20 Newsgroups (test file), Reuters-R8 whole and in part, Rotten Tomatoes
    sentiment, and shuffled 20 Newsgroups labels."""
    from alsatian_pl.data import DataSpec
    spec = DataSpec(name="text", path=None, num_items=None, image_size=IMAGE_SIZE, test_fraction=0.2, seed=0,
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    ng_file = orange_tab(spec, ("20newsgroups-test.tab",), "20 Newsgroups")
    r8 = orange_tab(spec, ("reuters-r8-train.tab", "reuters-r8-test.tab"), "Reuters-R8")
    rt = rotten_tomatoes(spec)
    ng = (np.array(ng_file.texts, dtype=object), ng_file.labels)
    names = ng_file.class_names
    rng = np.random.default_rng(2)

    def sub(groups):
        x, y = regroup(*ng, ng_groups(groups, names))
        return list(x), y
    r8x, r8y = np.array(r8.texts, dtype=object), r8.labels
    earn_acq = regroup(r8x, r8y, [[r8.class_names.index("earn")], [r8.class_names.index("acq")]])
    return {
        "ng20": (list(ng[0]), ng[1]),
        "ng-comp": sub([["comp.graphics"], ["comp.os"], ["comp.sys.ibm"], ["comp.sys.mac"], ["comp.windows"]]),
        "ng-rec": sub([["rec.autos"], ["rec.motorcycles"], ["rec.sport.baseball"], ["rec.sport.hockey"]]),
        "ng-sci": sub([["sci.crypt"], ["sci.electronics"], ["sci.med"], ["sci.space"]]),
        "ng-top6": sub([["comp."], ["rec."], ["sci."], ["talk.politics"], ["alt.", "soc.", "talk.religion"],
                        ["misc."]]),
        "ng-shuffled": (list(ng[0]), rng.permutation(ng[1])),
        "r8": (list(r8x), r8y),
        "r8-earn-vs-acq": (list(earn_acq[0]), earn_acq[1]),
        "rotten-tomatoes": (list(rt.texts), rt.labels),
    }


def sample(x, y: np.ndarray, n: int, rng: np.random.Generator):
    """A seeded sample of ``n`` items (all when fewer), split 80/20 into train and check."""
    idx = rng.permutation(len(y))[:n]
    cut = int(0.8 * len(idx))
    take = (lambda ids: x[ids]) if isinstance(x, np.ndarray) else (lambda ids: [x[i] for i in ids])
    return (take(idx[:cut]), y[idx[:cut]]), (take(idx[cut:]), y[idx[cut:]])


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] -> normalised float [N, 3, 64, 64], resized as the data module resizes."""
    return TO_PIXELS(resize_pixels(torch.from_numpy(images).unsqueeze(1), IMAGE_SIZE))


# ------------------------------------------------------------------------------------------------ fine-tuning
def fit(forward, params, train, check, *, lr: float, seed: int) -> float:
    """Adam over ``params`` for EPOCHS epochs of batches of 32; the check split's accuracy."""
    (x, y), (xc, yc) = train, check
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(y), generator=g).split(32):
            loss = F.cross_entropy(forward(x, idx, True), torch.as_tensor(y)[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        hits = sum(int((forward(xc, idx, False).argmax(1) == torch.as_tensor(yc)[idx]).sum())
                   for idx in torch.arange(len(yc)).split(256))
    return hits / len(yc)


def image_variant(parent: dict[str, torch.Tensor], n: int, x, y, seed: int) -> tuple[dict, float]:
    """Fine-tune the last ``n`` of Lite0's 18 stored blocks (stem, 16 MBConv, head) and a new classifier."""
    import timm
    torch.manual_seed(seed)
    classes = int(y.max()) + 1
    model = timm.create_model("tf_efficientnet_lite0", num_classes=classes)
    model.load_state_dict({k: v for k, v in parent.items() if not k.startswith("classifier.")}, strict=False)
    blocks = [nn.Sequential(model.conv_stem, model.bn1), *[b for s in model.blocks for b in s],
              nn.Sequential(model.conv_head, model.bn2)]
    model.requires_grad_(False)
    trained = [*blocks[-n:], model.classifier]
    for m in trained:
        m.requires_grad_(True)
    train, check = sample(x, y, TASK_ITEMS["image"], np.random.default_rng(seed))
    train, check = (image_tensor(train[0]), train[1]), (image_tensor(check[0]), check[1])

    def forward(data, idx, training):
        model.eval()
        for m in trained:
            m.train(training)
        return model(data[idx])
    acc = fit(forward, [p for p in model.parameters() if p.requires_grad], train, check, lr=1e-3, seed=seed)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, acc


def text_variant(parent: Path, n: int, x, y, seed: int):
    """Fine-tune the last ``n`` of MiniLM's 6 layers and a new linear head over mean-pooled tokens."""
    from alsatian_pl.blocks import load_encoder
    torch.manual_seed(seed)
    enc = load_encoder(parent, "mean")
    head = nn.Linear(enc.config.hidden_size, int(y.max()) + 1)
    enc.requires_grad_(False)
    layers = list(enc.encoder.layer)[-n:]
    for m in layers:
        m.requires_grad_(True)
    train, check = sample(x, y, TASK_ITEMS["text"], np.random.default_rng(seed))
    train = (tokenize(train[0], str(parent), MAX_LENGTH), train[1])
    check = (tokenize(check[0], str(parent), MAX_LENGTH), check[1])

    def forward(data, idx, training):
        enc.eval()
        for m in layers:
            m.train(training)
        ids = data[idx]
        ids, mask = (ids[:, 0], ids[:, 1]) if ids.dim() == 3 else (ids, (ids != 0).long())
        hidden = enc(input_ids=ids, attention_mask=mask).last_hidden_state
        w = mask.unsqueeze(-1).float()
        return head((hidden * w).sum(1) / w.sum(1).clamp_min(1))
    params = [p for p in enc.parameters() if p.requires_grad] + list(head.parameters())
    acc = fit(forward, params, train, check, lr=2e-4, seed=seed)
    return enc, head, acc


# ------------------------------------------------------------------------------------------------ the zoo
def lineage(count: int, blocks: tuple[int, int], tasks: list[str], rng: np.random.Generator) -> list[dict]:
    """The paper's procedure: variant i copies a random earlier model (-1: the pretrained one), trains its last
    n blocks (n uniform in ``blocks``) on a source task. The tasks come in seeded shuffles of the whole list, so each
    is used about equally often (independent draws gave 4 of the first 7 variants the shuffled-label task)."""
    order = np.concatenate([rng.permutation(len(tasks)) for _ in range(-(-count // len(tasks)))])
    return [{"name": f"v{i:02d}", "parent": int(rng.integers(-1, i)), "blocks": int(rng.integers(*blocks)),
             "task": tasks[int(order[i])]} for i in range(count)]


def build_image(out: Path, count: int, seed: int, blocks: tuple[int, int] = (2, 8)) -> list[dict]:
    """``count`` Lite0 variants as timm state dicts (with their source head) in ``out/image/ckpts``."""
    if not count:
        return []
    from alsatian_pl.zoo import efficientnet_lite0_checkpoint, load_checkpoint
    import timm
    base = timm.create_model("tf_efficientnet_lite0")
    load_checkpoint(base, efficientnet_lite0_checkpoint())
    states = {-1: base.state_dict()}
    tasks = image_tasks()
    folder = out / "image" / "ckpts"
    folder.mkdir(parents=True, exist_ok=True)
    plan = lineage(count, blocks, sorted(tasks), np.random.default_rng(seed))
    for i, v in enumerate(plan):
        t = time.perf_counter()
        states[i], v["source_accuracy"] = image_variant(states[v["parent"]], v["blocks"], *tasks[v["task"]], seed + i)
        v["seconds"] = round(time.perf_counter() - t, 1)
        save_file(states[i], folder / f"{v['name']}-{v['task']}.safetensors")
        print(f"image {v}", flush=True)
    return plan


def build_text(out: Path, count: int, seed: int) -> list[dict]:
    """``count`` MiniLM variants as Hugging Face folders in ``out/text/ckpts`` (head: source_head.safetensors)."""
    if not count:
        return []
    from alsatian_pl.blocks import model_dir
    base = model_dir("all-MiniLM-L6-v2")
    folders = {-1: base}
    tasks = text_tasks()
    plan = lineage(count, (1, 4), sorted(tasks), np.random.default_rng(seed + 1))
    for i, v in enumerate(plan):
        t = time.perf_counter()
        enc, head, v["source_accuracy"] = text_variant(folders[v["parent"]], v["blocks"], *tasks[v["task"]], seed + i)
        v["seconds"] = round(time.perf_counter() - t, 1)
        folders[i] = folder = out / "text" / "ckpts" / f"{v['name']}-{v['task']}"
        enc.save_pretrained(folder, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (base / f).is_file():
                shutil.copy(base / f, folder / f)
        save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
                  folder / "source_head.safetensors")
        print(f"text {v}", flush=True)
    return plan


def import_store(out: Path) -> dict[str, list[str]]:
    """Import both zoos into ``out/store`` (blocks shared between variants stored once; heads stored)."""
    from safetensors.torch import load_file
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import checkpoint_spec, hf_dirs_spec
    store, models = BlockStore(out / "store"), {}
    if (out / "image" / "ckpts").is_dir() and any((out / "image" / "ckpts").iterdir()):
        models["image"] = list(checkpoint_spec(name="quality_image", path=str(out / "image" / "ckpts"),
                                               arch="tf_efficientnet_lite0", image_size=IMAGE_SIZE
                                               ).build(store, progress=False).models)
    if (out / "text" / "ckpts").is_dir():
        models["text"] = list(hf_dirs_spec(name="quality_text", path=str(out / "text" / "ckpts"), pooling="mean",
                                           max_length=MAX_LENGTH).build(store, progress=False).models)
        for name in models["text"]:
            store.put_head(name, load_file(Path(store.manifest(name).source) / "source_head.safetensors"))
    return models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/alsatian-quality"))
    p.add_argument("--image", type=int, default=16)
    p.add_argument("--text", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-blocks", default="2,8", help="image variants train n blocks, n in [lo, hi) (of 18)")
    a = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    t = time.perf_counter()
    lo, hi = (int(v) for v in a.image_blocks.split(","))
    zoo = {"image": build_image(a.out, a.image, a.seed, (lo, hi)), "text": build_text(a.out, a.text, a.seed)}
    zoo["store_models"] = import_store(a.out)
    zoo["seconds"] = round(time.perf_counter() - t, 1)
    (a.out / "zoo.json").write_text(json.dumps(zoo, indent=1))
    print(f"built in {zoo['seconds']} s: {a.out / 'zoo.json'}")


if __name__ == "__main__":
    main()
