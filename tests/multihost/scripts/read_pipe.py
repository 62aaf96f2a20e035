"""Reads the ``train`` channel in Pipe mode for two epochs, as a Pipe-mode script does.

Opens ``$SM_CHANNEL_TRAIN_0``-style FIFOs (``/opt/ml/input/data/train_<epoch>``) one after
the other and saves, per epoch, the number of bytes read and their SHA-256 to the model dir;
lists the ``extra`` channel (FastFile mode: a directory of files, as File mode).
"""

import hashlib
import json
import os
from pathlib import Path


def main() -> None:
    channel = os.environ["SM_CHANNEL_TRAIN"]  # /opt/ml/input/data/train
    epochs = []
    for epoch in range(2):
        digest = hashlib.sha256()
        size = 0
        with open(f"{channel}_{epoch}", "rb") as pipe:
            while chunk := pipe.read(65536):
                digest.update(chunk)
                size += len(chunk)
        print(f"epoch {epoch}: {size} bytes from {channel}_{epoch}", flush=True)
        epochs.append({"bytes": size, "sha256": digest.hexdigest()})
    Path(os.environ["SM_MODEL_DIR"], "epochs.json").write_text(json.dumps(epochs))
    extra = Path(os.environ["SM_CHANNEL_EXTRA"])
    print(f"extra: {sorted(p.name for p in extra.iterdir())}", flush=True)


if __name__ == "__main__":
    main()
