"""The package boundaries (docs/architecture.md): which part of kerastl may import which.

- the floor (data/, nets/, augment/ and the shared modules kerastl/*.py: app, checkpoint,
  errors, export, plots, ...) imports no method package;
- a method package (ssl, adapters, timeseries, anomaly, safety, federated) imports no other
  method package;
- nothing in kerastl/ imports apps/.

Every `import` statement counts, wherever it stands (module level, inside a function, under
`if TYPE_CHECKING:`), and relative imports are resolved against the importing module.
"""

import ast
import os
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("ssl", "adapters", "timeseries", "anomaly", "safety", "federated")


class Violation(NamedTuple):
    path: str  # relative to the root, with "/" separators
    line: int
    imported: str
    rule: str

    def __str__(self):
        return f"{self.path}:{self.line}: imports {self.imported} ({self.rule})"


def part_of(module: str) -> str:
    """'apps', 'method <name>', 'floor', or '' for modules outside the project."""
    parts = module.split(".")
    if parts[0] == "apps":
        return "apps"
    if parts[0] != "kerastl":
        return ""
    if len(parts) > 1 and parts[1] in METHODS:
        return f"method {parts[1]}"
    return "floor"


def imported_modules(tree: ast.AST, module: str, is_package: bool):
    """(line, dotted name) for every import in `tree`; `from a import b` yields `a.b` (b may be a
    submodule, and `part_of` judges an attribute of `a` the same as `a` itself)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"


def boundary_violations(root: str) -> list[Violation]:
    """Every import under `root`/kerastl and `root`/apps that crosses a boundary, in file order."""
    found = []
    for top in ("kerastl", "apps"):
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, root).replace(os.sep, "/")
                is_package = name == "__init__.py"
                module = relative[:-3].replace("/", ".")
                if is_package:
                    module = module[:-len(".__init__")]
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), filename=path)
                importer = part_of(module)
                for line, imported in sorted(imported_modules(tree, module, is_package)):
                    target = part_of(imported)
                    if importer == "apps" or target in ("", "floor", importer):
                        continue
                    if target == "apps":
                        rule = "the library never imports apps"
                    elif importer == "floor":
                        rule = f"the floor imports no method package; {imported} is {target}"
                    else:
                        rule = f"{importer} imports no other method"
                    found.append(Violation(relative, line, imported, rule))
    return sorted(found)


def test_kerastl_and_apps_keep_the_boundaries():
    violations = boundary_violations(ROOT)
    assert not violations, "imports across the package boundaries:\n" + "\n".join(map(str, violations))


def write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_wrong_import_is_reported_with_its_file_and_line(tmp_path):
    write(tmp_path, "kerastl/__init__.py", "from kerastl.errors import InputError\n")
    write(tmp_path, "kerastl/data/__init__.py", "from .arrays import check\n")
    write(tmp_path, "kerastl/data/arrays.py", "import numpy as np\n")
    write(tmp_path, "kerastl/data/bad.py", "import os\n\n\ndef load():\n    from kerastl.ssl import x\n    return x\n")
    assert [str(v) for v in boundary_violations(tmp_path)] == [
        "kerastl/data/bad.py:5: imports kerastl.ssl.x (the floor imports no method package; "
        "kerastl.ssl.x is method ssl)"]


def test_every_kind_of_import_and_every_rule(tmp_path):
    allowed = {
        "apps/app.py": "from kerastl import ssl, app\nimport kerastl.anomaly.model\nfrom . import other\n",
        "kerastl/ssl/__init__.py": "from .model import Model\nfrom . import thresholds\nfrom kerastl.data import x\n",
        "kerastl/ssl/algorithms/__init__.py": "from ..thresholds import fixed\nfrom ...nets import wide_resnet\n",
        "kerastl/export.py": "import keras\nfrom kerastl import errors\nfrom kerastl import InputError\n",
    }
    wrong = {
        "kerastl/app.py": "import os\nimport kerastl.safety.coverage as coverage\n",
        "kerastl/nets/__init__.py": "from ..timeseries import *\n",
        "kerastl/adapters/stages.py": "def f():\n    from kerastl import anomaly\n",
        "kerastl/anomaly/sub/deep.py": "from ...federated.models import m\nfrom ..detector import ok\n",
        "kerastl/checkpoint.py": "\n\nclass C:\n    def m(self):\n        import apps.flexmatch\n",
        "kerastl/data/speech.py": "from kerastl.adapters.audio import log_mel\n",
    }
    for relative, text in {**allowed, **wrong}.items():
        write(tmp_path, relative, text)
    assert [str(v) for v in boundary_violations(tmp_path)] == [
        "kerastl/adapters/stages.py:2: imports kerastl.anomaly (method adapters imports no other method)",
        "kerastl/anomaly/sub/deep.py:1: imports kerastl.federated.models.m (method anomaly imports no other method)",
        "kerastl/app.py:2: imports kerastl.safety.coverage (the floor imports no method package; "
        "kerastl.safety.coverage is method safety)",
        "kerastl/checkpoint.py:5: imports apps.flexmatch (the library never imports apps)",
        "kerastl/data/speech.py:1: imports kerastl.adapters.audio.log_mel (the floor imports no method package; "
        "kerastl.adapters.audio.log_mel is method adapters)",
        "kerastl/nets/__init__.py:1: imports kerastl.timeseries (the floor imports no method package; "
        "kerastl.timeseries is method timeseries)",
    ]
