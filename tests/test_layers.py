"""The layering rules: the model library needs nothing of the platform (no web, queue or database, nor any
genq module outside genq.core); the web app never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import genq.core

IMPORT_ALL = """
import importlib, pkgutil, sys
import {package} as root
for module in pkgutil.walk_packages(root.__path__, "{package}."):
    importlib.import_module(module.name)
print(" ".join(sorted(name for name in sys.modules
                      if name.split(".")[0] in {forbidden!r} or name.startswith({forbidden_prefixes!r}))))
"""


@pytest.mark.parametrize(("package", "forbidden", "forbidden_prefixes"), [
    ("genq.core", ("flask", "celery", "kombu", "redis", "sqlalchemy"),
     ("genq.jobs", "genq.errors", "genq.db", "genq.web", "genq.worker", "genq.datasets", "genq.config")),
    ("genq.web", ("torch", "celery"), ()),
])
def test_package_does_not_load(package, forbidden, forbidden_prefixes):
    # A fresh interpreter: this test process has loaded everything already.
    code = IMPORT_ALL.format(package=package, forbidden=forbidden, forbidden_prefixes=forbidden_prefixes)
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{package} loads {result.stdout.strip()}"


def test_core_imports_only_genq_core():
    # Also the imports no test path runs (inside functions, behind TYPE_CHECKING): read every source file.
    root = Path(genq.core.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:  # "from genq import x" imports genq.x
                names = [f"genq.{a.name}" for a in node.names] if node.module == "genq" else [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(root)}: {name}" for name in names
                          if name.split(".")[0] == "genq" and not name.startswith("genq.core")]
    assert offenders == []


@pytest.mark.parametrize("code", [
    "from genq.core import spec; spec.registry()",  # the web validates params and estimates memory with the specs
    "import genq.core.data.formats",  # the upload check (web) and the loaders (worker) share these rules
], ids=["model specs", "dataset formats"])
def test_torch_free_parts_of_core(code):
    probe = (f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m == 'torch'\n"
             "    or (m.startswith('genq.') and not m.startswith('genq.core')))))")
    result = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{code} loads {result.stdout.strip()}"
