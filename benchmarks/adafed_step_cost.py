"""Where a round of AdaFed's local engine spends its time, against PyTorch on the same network.

The FedAP parity (docs/parity.md) found kerastl's local engine 5 to 10 times slower per round
than PersonalizedFL on mnist5k with 20 clients. This script times, in one process and in
interleaved rounds (the machine is shared: ratios, not absolute times, are the result), the
pieces of one client's turn on LeNet-5-BN with the client's share of mnist5k (175 training
and 50 test images, batch 32):

- `keras_forward` / `torch_forward`: the network's inference pass over the 175 images
  (Keras inside a `tf.function`, PyTorch in eval mode without autograd);
- `keras_sgd_step` / `torch_sgd_step`: one plain SGD step on 32 images (cross-entropy);
- `local_training_call`: kerastl's `make_local_trainer` called eagerly, as the local engine
  calls it, one epoch over the client's dataset: each batch one call of the compiled step;
- `local_training_graph_loop`: the same trainer called inside a `tf.function` (as a TFF
  computation calls it): the loop over the batches inside the graph;
- `python_loop_steps`: the same 6 steps, each a call of a bare compiled step from Python on
  batches held as tensors (no dataset, no loss bookkeeping): the floor;
- `evaluation_call`: kerastl's `make_evaluator` over the 50 test images;
- `set_weights`: `model.set_weights` with the client's weights (twice per client and round).

Writes benchmarks/results/adafed_step_cost.json (medians over the rounds, the ratios, the
provenance). Needs PyTorch: run it in the parity environment.

Usage:
  .tox/parity/bin/python benchmarks/adafed_step_cost.py            # 1 thread per framework
  .tox/parity/bin/python benchmarks/adafed_step_cost.py --threads 2 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import provenance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

TRAIN, TEST, BATCH = 175, 50, 32  # one of 20 clients' share of mnist5k's 3,500 / 1,000 images


def client_data(seed: int = 0):
    """Real mnist5k digits (kerastl's loader): a client's training and test images as float32
    in [0, 1], labels int64."""
    import numpy as np

    from kerastl.data import load_image_dataset

    data = load_image_dataset("mnist5k", seed=seed)
    scale = lambda images: (images / 255.0).astype(np.float32)  # noqa: E731
    return (scale(data.x_train[:TRAIN]), data.y_train[:TRAIN].astype(np.int64),
            scale(data.x_test[:TEST]), data.y_test[:TEST].astype(np.int64))


def torch_lenet5_bn(num_classes: int):
    """LeNet-5 with BN after each convolution, the layout of kerastl's `lenet5_bn`."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


def keras_pieces(x, y, x_test, y_test, lr):
    import tensorflow as tf

    from kerastl.federated.local_training import make_evaluator, make_local_trainer
    from kerastl.federated.models import lenet5_bn

    model = lenet5_bn((28, 28, 1), 10)
    weights = model.get_weights()
    train = make_local_trainer(model, lr)
    train_in_graph = tf.function(lambda data: train(data, tf.constant(1), tf.constant(True)))
    evaluate = make_evaluator(model)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(BATCH)
    batches = [(tf.constant(x[i:i + BATCH]), tf.constant(y[i:i + BATCH])) for i in range(0, len(y), BATCH)]
    images = tf.constant(x)

    @tf.function
    def forward(inputs):
        return model(inputs, training=False)

    @tf.function
    def step(inputs, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(labels, tf.int32), logits=model(inputs, training=True)))
        for variable, gradient in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
            variable.assign_sub(lr * gradient)
        return loss

    def python_loop():
        for inputs, labels in batches:
            step(inputs, labels)

    return {
        "keras_forward": lambda: forward(images).numpy(),
        "keras_sgd_step": lambda: step(*batches[0]).numpy(),
        "local_training_call": lambda: int(train(dataset, tf.constant(1), tf.constant(True))),
        "local_training_graph_loop": lambda: int(train_in_graph(dataset)),
        "python_loop_steps": python_loop,
        "evaluation_call": lambda: [int(v) for v in evaluate(test)],
        "set_weights": lambda: model.set_weights(weights),
    }


def torch_pieces(x, y, lr):
    import torch

    net = torch_lenet5_bn(10)
    images, labels = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)

    def forward():
        net.eval()
        with torch.no_grad():
            net(images)

    def step():
        net.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images[:BATCH]), labels[:BATCH]).backward()
        optimizer.step()

    return {"torch_forward": forward, "torch_sgd_step": step}


def timed(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="compute threads of each framework (default 1)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (medians over them)")
    parser.add_argument("--repeats", type=int, default=5, help="calls of each piece per round")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "adafed_step_cost.json"))
    args = parser.parse_args(argv)
    record = provenance.start(provenance.dependency_paths(__file__))

    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    torch.set_num_threads(args.threads)
    x, y, x_test, y_test = client_data()
    pieces = {**keras_pieces(x, y, x_test, y_test, 0.01), **torch_pieces(x, y, 0.01)}
    for fn in pieces.values():  # traces and first-call costs stay out of the timings
        fn()
    times = {name: [] for name in pieces}
    for round_index in range(args.rounds):
        for name, fn in pieces.items():
            times[name].append(timed(fn, args.repeats))
        print(f"round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{name} {values[-1]:.1f}" for name, values in times.items()) + " ms", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    steps = -(-TRAIN // BATCH)
    ratios = {
        "forward_keras_over_torch": median["keras_forward"] / median["torch_forward"],
        "sgd_step_keras_over_torch": median["keras_sgd_step"] / median["torch_sgd_step"],
        "graph_loop_over_local_training_call": median["local_training_graph_loop"] / median["local_training_call"],
        "local_training_call_over_bare_steps": median["local_training_call"] / median["python_loop_steps"],
        "local_training_call_over_torch_steps": median["local_training_call"] / (steps * median["torch_sgd_step"]),
    }
    result = {
        "setting": {"network": "lenet5_bn", "train_images": TRAIN, "test_images": TEST, "batch": BATCH,
                    "steps_per_epoch": steps, "threads": args.threads, "rounds": args.rounds,
                    "repeats": args.repeats},
        "median_ms": median, "ms_per_round": times, "ratios": ratios,
        "provenance": provenance.public(provenance.finish(record)),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for name, value in median.items():
        print(f"{name:22s} {value:8.1f} ms")
    for name, value in ratios.items():
        print(f"{name:40s} {value:6.2f}x")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
