"""FlexMatch speed and memory, each measured as a ratio within one run (the machine is noisy).

1. CPL cost: FlexMatch step time / FixMatch step time on the same network and batches
   (target: at most 1.03, CPL adds no forward or backward pass).
2. Input pipeline: images/s the tf.data SSL stream produces (weak + strong views) against the
   images/s the FlexMatch training step consumes (target: pipeline at least 2x faster).
3. WRN-28-2 training throughput at batch 64 + 448 + 448 (32x32x3), with and without XLA.
4. Peak memory (max RSS) of a cpu-preset apps.flexmatch run, small CNN width 16 (the preset)
   and 32 (target: under 4 GB).
5. Precision: images/s of the whole FlexMatch step (CPL and EMA included) in float32 and in
   mixed_bfloat16 (`--mixed-precision bf16`), WRN-28-2 at 64 + 448 + 448 and the small CNN at
   32 + 224 + 224, measured interleaved; the ratio bf16 / float32 per network.

Results of an earlier invocation (parts not measured this time) are kept only when its
provenance shows today's code (--no-reuse: never).

Usage:
  python benchmarks/flexmatch_speed.py                 # all four, results to benchmarks/results/
  python benchmarks/flexmatch_speed.py --only cpl pipeline --steps 30
  python benchmarks/flexmatch_speed.py --only precision --out benchmarks/results/flexmatch_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DEPENDS_ON = ("apps.flexmatch",)  # the memory run imports it in a child process

import provenance  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastl.augment import strong_augment, weak_augment  # noqa: E402
from kerastl.data import labeled_unlabeled_split, load_image_dataset  # noqa: E402
from kerastl.data.pipeline import ssl_stream  # noqa: E402
from kerastl.nets import build_network  # noqa: E402
from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer  # noqa: E402


def digits_stream(batch_size, uratio, seed=0):
    data = load_image_dataset("mnist5k")
    labeled, unlabeled = labeled_unlabeled_split(data.y_train, 40, 10, seed)
    weak = lambda im, s: weak_augment(im, s, flip=False)  # noqa: E731
    strong = lambda im, s: strong_augment(im, s, flip=False)  # noqa: E731
    return ssl_stream(data.x_train[labeled], data.y_train[labeled], data.x_train[unlabeled], batch_size, uratio,
                      weak, (weak, strong), seed=seed), len(unlabeled)


def timed_steps(model, batches, steps):
    """Median seconds per train step over `steps` steps (after 3 warm-up steps)."""
    model.make_train_function()
    step = model.train_function
    times = []
    for i, batch in enumerate(batches[: steps + 3]):
        start = time.perf_counter()
        logs = step(iter([batch]))
        float(logs["loss"])  # wait for the step to finish
        if i >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def ssl_model(algorithm, num_unlabeled, net="small_cnn", shape=(28, 28, 1), jit=False, width=32, policy="float32"):
    """A compiled SemiSupervisedModel; `policy` is the Keras dtype policy its layers are built
    under (the global policy is float32 again on return)."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = SemiSupervisedModel(build_network(net, shape, 10, 0.9, width),
                                    build_algorithm(algorithm, num_unlabeled, 10, 1000), ema_warmup=True)
        model.compile(optimizer=torchssl_optimizer(0.03, 1000), jit_compile=jit)
        model.optimizer.build(model.network.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def bench_cpl(steps):
    stream, n = digits_stream(32, 7)
    batches = list(stream.take(steps + 3))
    # Interleave the two measurements so that machine load hits both alike.
    fix, flex = ssl_model("fixmatch", n), ssl_model("flexmatch", n)
    t_fix, t_flex = [], []
    for _ in range(3):
        t_fix.append(timed_steps(fix, batches, steps))
        t_flex.append(timed_steps(flex, batches, steps))
    fix_s, flex_s = float(np.median(t_fix)), float(np.median(t_flex))
    return {"fixmatch_step_s": fix_s, "flexmatch_step_s": flex_s, "ratio_flexmatch_over_fixmatch": flex_s / fix_s,
            "target": "<= 1.03", "batch": "32 labeled + 224 weak + 224 strong, 28x28x1, small_cnn width 32"}


def bench_pipeline(steps):
    stream, n = digits_stream(32, 7)
    images_per_step = 32 + 2 * 224
    iterator = iter(stream)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    produced = images_per_step * steps / (time.perf_counter() - start)
    batches = list(stream.take(steps + 3))
    consumed = images_per_step / timed_steps(ssl_model("flexmatch", n), batches, steps)
    return {"pipeline_images_per_s": produced, "train_step_images_per_s": consumed,
            "ratio_pipeline_over_training": produced / consumed, "target": ">= 2"}


def bench_wrn(steps):
    batch = wrn_batch(np.random.default_rng(0))
    out = {}
    for jit in (False, True):
        model = ssl_model("flexmatch", 1000, net="wrn_28_2", shape=(32, 32, 3), jit=jit)
        seconds = timed_steps(model, [batch] * (steps + 3), steps)
        out["xla" if jit else "no_xla"] = {"step_s": seconds, "images_per_s": 960 / seconds}
    out["speedup_xla"] = out["no_xla"]["step_s"] / out["xla"]["step_s"]
    out["batch"] = "64 labeled + 448 weak + 448 strong, 32x32x3, WRN-28-2"
    return out


def wrn_batch(rng):
    images = lambda n: tf.constant(rng.uniform(0, 1, (n, 32, 32, 3)).astype("float32"))  # noqa: E731
    return ((images(64), tf.constant(rng.integers(0, 10, 64))),
            (tf.range(448, dtype=tf.int64), images(448), images(448)))


def bench_precision(steps):
    out = {}
    digits, n = digits_stream(32, 7)
    setups = {"small_cnn": (dict(num_unlabeled=n), list(digits.take(steps + 3)), 32 + 2 * 224,
                            "32 labeled + 224 weak + 224 strong, 28x28x1, width 32"),
              "wrn_28_2": (dict(net="wrn_28_2", shape=(32, 32, 3)), [wrn_batch(np.random.default_rng(0))] * (steps + 3),
                           960, "64 labeled + 448 weak + 448 strong, 32x32x3")}
    for name, (kwargs, batches, images, batch) in setups.items():
        kwargs = {"num_unlabeled": 1000, **kwargs}
        models = {policy: ssl_model("flexmatch", policy=policy, **kwargs) for policy in ("float32", "mixed_bfloat16")}
        times = {policy: [] for policy in models}
        for _ in range(3):  # interleaved, so that machine load hits both alike
            for policy, model in models.items():
                times[policy].append(timed_steps(model, batches, steps))
        step_s = {policy: float(np.median(t)) for policy, t in times.items()}
        out[name] = {"float32_images_per_s": images / step_s["float32"],
                     "bf16_images_per_s": images / step_s["mixed_bfloat16"],
                     "ratio_bf16_over_float32": step_s["float32"] / step_s["mixed_bfloat16"],
                     "step_s": step_s, "batch": batch}
    out["cpu_bf16_flags"] = sorted(flag for flag in cpu_flags() if "bf16" in flag or flag.startswith("amx"))
    return out


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []


def bench_memory():
    return {f"width_{width}": peak_memory(width) for width in (16, 32)}


def peak_memory(width):
    import tempfile

    # The peak is sampled inside the child: ru_maxrss would be useless here, because Linux
    # carries a forked parent's high-water mark across exec (this process holds WRNs).
    with tempfile.TemporaryDirectory() as folder:
        script = ("import threading, time, psutil, sys\n"
                  "peak = [0]\n"
                  "def watch():\n"
                  "    process = psutil.Process()\n"
                  "    while True:\n"
                  "        peak[0] = max(peak[0], process.memory_info().rss); time.sleep(0.02)\n"
                  "threading.Thread(target=watch, daemon=True).start()\n"
                  "from kerastl import app\nfrom apps import flexmatch\n"
                  "code = app.main(flexmatch.build_parser, flexmatch.run, ['--preset', 'cpu', '--iterations', '200', "
                  f"'--eval-every', '100', '--width', '{width}', '--output', {folder + '/run'!r}, '--no-export'])\n"
                  "print('PEAK_RSS_BYTES', peak[0]); sys.exit(code)\n")
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             cwd=os.path.dirname(HERE))
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    peak = int(next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("PEAK_RSS_BYTES")))
    return {"peak_rss_gb": peak / 2**30, "target": "< 4 GB", "sampled_every_s": 0.02,
            "run": f"apps.flexmatch --preset cpu --width {width} (mnist5k, small_cnn, B 32, mu 7), 200 iterations"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=("cpl", "pipeline", "wrn", "memory", "precision"),
                        default=["cpl", "pipeline", "wrn", "memory"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "flexmatch_speed.json"))
    provenance.add_reuse_option(parser)
    args = parser.parse_args()
    dependencies = provenance.dependency_paths(__file__)
    record = provenance.start(dependencies)
    benches = {"cpl": bench_cpl, "pipeline": bench_pipeline, "wrn": bench_wrn, "memory": bench_memory,
               "precision": bench_precision}
    results = {}
    for name in args.only:
        results[name] = benches[name](args.steps) if name != "memory" else benches[name]()
        print(name, json.dumps(results[name], indent=1), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    previous = {}
    if os.path.exists(args.out) and provenance.may_reuse(args.out, dependencies, args.reuse):
        with open(args.out) as f:
            previous = json.load(f)
        previous.setdefault("commands", [previous["provenance"]["command"]])
    previous.update(results)
    previous["provenance"] = provenance.public(provenance.finish(record))
    previous["commands"] = [*previous.get("commands", []), previous["provenance"]["command"]]
    with open(args.out, "w") as f:
        json.dump(previous, f, indent=2)
    print("written", args.out)


if __name__ == "__main__":
    main()
