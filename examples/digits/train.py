"""Chainer MLP on the digits data, written like the SageMaker Chainer MNIST example.

Training: SageMaker runs ``python train.py --epochs 10 ...`` with the SM_* variables set; the
script trains with a Chainer trainer and saves ``model.npz`` (and the layer width in
``model_config.json``) into the model directory. Serving: the model server imports this module
and calls :func:`model_fn`; the default input/predict/output functions do the rest.
"""

import argparse
import json
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from chainer import serializers, training
from chainer.training import extensions


class MLP(chainer.Chain):
    """Three-layer perceptron; flattens its input: (N, 784), (N, 28, 28), (N, 1, 28, 28) work."""

    def __init__(self, n_units, n_out):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(None, n_units)
            self.l2 = L.Linear(None, n_units)
            self.l3 = L.Linear(None, n_out)

    def forward(self, x):
        x = F.reshape(x, (x.shape[0], -1))
        h1 = F.relu(self.l1(x))
        h2 = F.relu(self.l2(h1))
        return self.l3(h2)


def load_channel(channel_dir, name):
    data = np.load(os.path.join(channel_dir, name + ".npz"))
    x = data["x"].astype(np.float32) / 255.0
    return chainer.datasets.TupleDataset(x, data["y"].astype(np.int32))


def parse_args(argv=None):
    env = os.environ
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--output-data-dir", default=env.get("SM_OUTPUT_DATA_DIR", "output"))
    parser.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "data/train"))
    parser.add_argument("--test", default=env.get("SM_CHANNEL_TEST", "data/test"))
    parser.add_argument("--num-gpus", type=int, default=int(env.get("SM_NUM_GPUS", "0")))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    np.random.seed(args.seed)
    device = chainer.get_device("@cupy:0" if args.num_gpus > 0 else "@numpy")
    model = L.Classifier(MLP(args.units, 10))
    model.to_device(device)
    device.use()
    optimizer = chainer.optimizers.Adam(alpha=args.learning_rate)
    optimizer.setup(model)

    train = load_channel(args.train, "train")
    test = load_channel(args.test, "test")
    train_iter = chainer.iterators.SerialIterator(train, args.batch_size)
    test_iter = chainer.iterators.SerialIterator(test, args.batch_size, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (args.epochs, "epoch"), out=args.output_data_dir)
    trainer.extend(extensions.Evaluator(test_iter, model, device=device))
    trainer.extend(extensions.LogReport())
    trainer.extend(
        extensions.PrintReport(
            [
                "epoch",
                "main/loss",
                "validation/main/loss",
                "main/accuracy",
                "validation/main/accuracy",
            ]
        )
    )
    trainer.run()

    accuracy = float(trainer.observation["validation/main/accuracy"])
    save(args, model.predictor, {"test_accuracy": accuracy, "epochs": args.epochs})


def save(args, predictor, metrics):
    """Write model.npz and model_config.json (for model_fn) and the metrics."""
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")
    os.makedirs(args.model_dir, exist_ok=True)
    serializers.save_npz(os.path.join(args.model_dir, "model.npz"), predictor)
    with open(os.path.join(args.model_dir, "model_config.json"), "w") as f:
        json.dump({"units": args.units}, f)
    with open(os.path.join(args.output_data_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def model_fn(model_dir):
    """Load the trained MLP for serving (called once per model server worker)."""
    with open(os.path.join(model_dir, "model_config.json")) as f:
        units = json.load(f)["units"]
    model = MLP(units, 10)
    serializers.load_npz(os.path.join(model_dir, "model.npz"), model)
    return model


if __name__ == "__main__":
    main()
