"""The semi-supervised algorithms by name: one registry that apps and benchmarks read.

An entry (`AlgorithmSpec`) holds the name, the `SSLAlgorithm` class, a builder that makes the
algorithm with TorchSSL's defaults for a training setting (`SSLSetting`), a one-line summary
(the apps' `--help`), the default unlabeled-to-labeled batch ratio `uratio`, the default
confidence threshold `tau` (None: the algorithm has none) and the unlabeled `views` it reads.

An algorithm's own file registers its names next to its class, e.g. in `fixmatch.py`:

```python
register_algorithm("fixmatch", FixMatch, lambda setting: fixmatch(),
                   "weak-view pseudo-labels above a fixed threshold supervise the strong view")
```

`BUILTIN_MODULES` (the end of this file) lists the files that ship with kerastl; adding an
algorithm to kerastl is its file plus its module name there. Code outside kerastl registers
its own algorithms the same way, before building an app's parser:

>>> register_algorithm("entmin", EntropyMinimisation, lambda s: EntropyMinimisation(),
...                    "supervised loss plus entropy minimisation")      # doctest: +SKIP
>>> build_algorithm("entmin", num_unlabeled=4000, num_classes=10, total_steps=1000)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from kerastl.ssl.algorithms.base import SSLAlgorithm


@dataclasses.dataclass(frozen=True)
class SSLSetting:
    """What a builder may size an algorithm by.

    Attributes:
        num_unlabeled, num_classes: per-example and per-class state (CPL's counters).
        total_steps: the run's length (ramp-ups are a share of it).
        warmup: CPL's threshold warm-up (flex algorithms).
        seed: seeds the random draws inside training steps (VAT's start direction, MixUp).
        input_scale: pixel standard deviation of the training images (VAT's eps is given in
            standardised units, as in TorchSSL).
        p_target: labeled class distribution for ReMixMatch's alignment (None: uniform).
    """

    num_unlabeled: int
    num_classes: int
    total_steps: int
    warmup: bool = True
    seed: int = 0
    input_scale: float = 1.0
    p_target: Any = None


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """One registered algorithm; `build(setting)` makes it with TorchSSL's defaults."""

    name: str
    cls: type[SSLAlgorithm]
    build: Callable[[SSLSetting], SSLAlgorithm]
    summary: str
    uratio: int
    tau: float | None

    @property
    def views(self) -> tuple[str, ...]:
        return self.cls.views


_REGISTRY: dict[str, AlgorithmSpec] = {}


def register_algorithm(name: str, cls: type[SSLAlgorithm], build: Callable[[SSLSetting], SSLAlgorithm],
                       summary: str, uratio: int | None = None, tau: float | None = None) -> AlgorithmSpec:
    """Registers the algorithm `name`, made by `build(setting)`, an instance of `cls`.

    `uratio` and `tau` default to the class's `default_uratio` and `default_tau`.

    Raises:
        ValueError: `name` is registered already, or `cls` is no `SSLAlgorithm`.
    """
    if name in _REGISTRY:
        raise ValueError(f"algorithm {name!r} is registered already ({_REGISTRY[name].cls.__name__})")
    if not (isinstance(cls, type) and issubclass(cls, SSLAlgorithm)):
        raise ValueError(f"algorithm {name!r}: {cls!r} is not a subclass of SSLAlgorithm")
    spec = AlgorithmSpec(name, cls, build, summary, cls.default_uratio if uratio is None else int(uratio),
                         cls.default_tau if tau is None else float(tau))
    _REGISTRY[name] = spec
    return spec


def unregister_algorithm(name: str) -> None:
    """Removes `name` from the registry (e.g. to register a changed version again)."""
    algorithm_spec(name)
    del _REGISTRY[name]


def algorithm_names() -> tuple[str, ...]:
    """Every registered name, in the order of registration."""
    return tuple(_REGISTRY)


def algorithm_spec(name: str) -> AlgorithmSpec:
    """The registry's entry for `name`.

    Raises:
        ValueError: no algorithm is registered under `name`.
    """
    if name not in _REGISTRY:
        raise ValueError(f"algorithm {name!r}: expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_algorithm(name: str, num_unlabeled: int, num_classes: int, total_steps: int,
                    warmup: bool = True, seed: int = 0, input_scale: float = 1.0,
                    p_target=None) -> SSLAlgorithm:
    """The algorithm `name` with TorchSSL's defaults, sized for the unlabeled set (the
    arguments are those of `SSLSetting`).

    Example:
    >>> algorithm = build_algorithm("flexmatch", num_unlabeled=4000, num_classes=10, total_steps=1000)
    """
    setting = SSLSetting(num_unlabeled, num_classes, total_steps, warmup, seed, input_scale, p_target)
    return algorithm_spec(name).build(setting)


# The algorithm files that ship with kerastl, in the order `algorithm_names()` lists their
# names: importing one registers its names.
BUILTIN_MODULES = ("fixmatch", "pseudolabel", "uda", "pimodel", "meanteacher", "vat", "mixmatch", "remixmatch",
                   "freematch", "softmatch", "supervised")
for _module in BUILTIN_MODULES:
    importlib.import_module(f"kerastl.ssl.algorithms.{_module}")
