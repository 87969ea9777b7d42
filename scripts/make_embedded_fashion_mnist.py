"""Write alsatian_pl/datasets/fashion_mnist_3000.npz: a seeded, class-balanced subset (300 per class) of the
Fashion-MNIST training set, read from the Debian package ``dataset-fashion-mnist`` (MIT licence, Zalando SE).

Usage: python scripts/make_embedded_fashion_mnist.py [--source DIR] [--per-class 300] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from alsatian_pl.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_NPZ, read_idx

OUT = Path(__file__).resolve().parents[1] / "alsatian_pl" / "datasets" / FASHION_MNIST_NPZ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    images = read_idx(args.source / "train-images-idx3-ubyte.gz")
    labels = read_idx(args.source / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(args.seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), args.per_class, replace=False)
                                   for c in range(len(FASHION_MNIST_CLASSES))]))
    np.savez_compressed(args.out, images=images[keep], labels=labels[keep].astype(np.uint8),
                        class_names=np.array(FASHION_MNIST_CLASSES), source_indices=keep.astype(np.int32))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB): {len(keep)} images, "
          f"{args.per_class} per class, from {args.source} (seed {args.seed})")


if __name__ == "__main__":
    main()
