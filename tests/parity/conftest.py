"""Parity tests run in the `parity` tox environment (PyTorch beside kerastl's stack). The
harness lives in benchmarks/parity: benchmarks/ goes on the path, as for tests/benchmarks."""

import os
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def reference_checkout():
    """`reference_checkout(name)`: the checkout `common.reference_dir` finds (KERASTL_REF_<NAME>).
    Without it the test FAILS, saying how to get it (parity tests never skip)."""
    from parity import common

    def find(name: str) -> str:
        try:
            return common.reference_dir(name)
        except SystemExit:
            variable = "KERASTL_REF_" + name.upper().replace("-", "_")
            pytest.fail(f"reference checkout {name} missing: set {variable} to a checkout of it (repository and "
                        "commit in docs/parity.md, e.g. git clone + git checkout <commit>)", pytrace=False)

    return find


@pytest.fixture(autouse=True, scope="module")
def _forget_stub_modules():
    """The harness's stubs stay imported after their block (`common.stub_modules`). A later
    module's reference would then find a stale `torchvision` stub, which counts as installed,
    and fail on a submodule no finder serves any more: each test module starts without them,
    as a harness run (one method per process) does."""
    yield
    # The harness is imported both as `parity` (tests) and as `benchmarks.parity` (its modules).
    stub_types = tuple(common._StubModule for common in (sys.modules.get("parity.common"),
                                                          sys.modules.get("benchmarks.parity.common")) if common)
    for name in [name for name, module in sys.modules.items() if isinstance(module, stub_types)]:
        del sys.modules[name]
