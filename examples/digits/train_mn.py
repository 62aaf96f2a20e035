"""ChainerMN variant of train.py: data-parallel training of the same MLP under MPI.

Run by SageMaker (through ``train``) with ``sagemaker_use_mpi`` or more than one instance;
``train`` starts ``mpirun ... python -m mpi4py train_mn.py ...``. Every rank reports itself;
only rank 0 evaluates the final model and saves it. Uses the ``naive`` communicator on CPUs and
``pure_nccl`` when the host has GPUs (SM_NUM_GPUS), one GPU per rank on the host.
"""

import socket

import chainer
import chainer.links as L
import chainermn
import numpy as np
from chainer import training
from chainer.training import extensions
from train import MLP, load_channel, parse_args, save


def main(argv=None):
    args = parse_args(argv)
    np.random.seed(args.seed)  # the same start on every rank: weights, then each shard's order
    use_gpu = args.num_gpus > 0
    communicator = "pure_nccl" if use_gpu else "naive"
    comm = chainermn.create_communicator(communicator)
    print(
        f"rank {comm.rank} of {comm.size} (intra rank {comm.intra_rank}, "
        f"inter rank {comm.inter_rank}) on {socket.gethostname()}, {communicator} communicator",
        flush=True,
    )
    device = chainer.get_device(f"@cupy:{comm.intra_rank}" if use_gpu else "@numpy")
    device.use()
    model = L.Classifier(MLP(args.units, 10))
    model.to_device(device)
    optimizer = chainermn.create_multi_node_optimizer(
        chainer.optimizers.Adam(alpha=args.learning_rate), comm
    )
    optimizer.setup(model)

    train = test = None
    if comm.rank == 0:
        train = load_channel(args.train, "train")
        test = load_channel(args.test, "test")
    train = chainermn.scatter_dataset(train, comm, shuffle=True, seed=args.seed)
    test = chainermn.scatter_dataset(test, comm)
    train_iter = chainer.iterators.SerialIterator(train, args.batch_size)
    test_iter = chainer.iterators.SerialIterator(test, args.batch_size, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (args.epochs, "epoch"), out=args.output_data_dir)
    evaluator = extensions.Evaluator(test_iter, model, device=device)
    trainer.extend(chainermn.create_multi_node_evaluator(evaluator, comm))
    if comm.rank == 0:
        trainer.extend(extensions.LogReport())
        trainer.extend(extensions.PrintReport(["epoch", "main/loss", "validation/main/accuracy"]))
    trainer.run()

    accuracy = float(trainer.observation["validation/main/accuracy"])
    print(f"rank {comm.rank} done", flush=True)
    if comm.rank == 0:
        metrics = {"test_accuracy": accuracy, "epochs": args.epochs, "ranks": comm.size}
        save(args, model.predictor, metrics)


if __name__ == "__main__":
    main()
