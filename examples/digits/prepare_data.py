"""Write scikit-learn's bundled digits data as SageMaker channels, shaped like MNIST.

Each 8x8 digit (values 0-16) is scaled to 0-255, enlarged 3x to 24x24 and centred in a 28x28
frame, so the example's model, payloads and shapes match the SageMaker Chainer MNIST examples:
``x`` is uint8 of shape (N, 784), ``y`` int32 labels. Files: ``<out>/train/train.npz`` and
``<out>/test/test.npz`` (a fixed 80/20 split).

    python examples/digits/prepare_data.py /tmp/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["load_digits_28x28", "write_channels"]


def load_digits_28x28() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)  # (N, 8, 8)
    big = images.repeat(3, axis=1).repeat(3, axis=2)  # (N, 24, 24)
    framed = np.zeros((len(big), 28, 28), dtype=np.uint8)
    framed[:, 2:26, 2:26] = big
    return framed.reshape(len(framed), 784), digits.target.astype(np.int32)


def write_channels(out_dir: Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, Path]:
    """Write the train and test channels under ``out_dir``; return channel name -> directory."""
    x, y = load_digits_28x28()
    order = np.random.RandomState(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test_idx, train_idx = order[:n_test], order[n_test:]
    channels = {"train": out_dir / "train", "test": out_dir / "test"}
    for name, idx in (("train", train_idx), ("test", test_idx)):
        channels[name].mkdir(parents=True, exist_ok=True)
        np.savez(channels[name] / f"{name}.npz", x=x[idx], y=y[idx])
    return channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    for name, path in write_channels(args.out_dir).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
