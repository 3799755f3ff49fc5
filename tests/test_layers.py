"""The layering rules: the model library needs no web, queue or database; the web app never loads torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

IMPORT_ALL = """
import importlib, pkgutil, sys
import {package} as root
for module in pkgutil.walk_packages(root.__path__, "{package}."):
    importlib.import_module(module.name)
print(" ".join(sorted(name for name in {forbidden!r} if name in sys.modules)))
"""


@pytest.mark.parametrize(("package", "forbidden"), [
    ("genq.core", ("flask", "celery", "kombu", "redis", "sqlalchemy")),
    ("genq.web", ("torch", "celery")),
])
def test_package_does_not_load(package, forbidden):
    # A fresh interpreter: this test process has loaded everything already.
    code = IMPORT_ALL.format(package=package, forbidden=forbidden)
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{package} loads {result.stdout.strip()}"


def test_dataset_formats_load_without_torch():
    # The upload check (web) and the loaders (worker) share these rules, so they must not need torch, nor any
    # genq module outside the model library.
    code = ("import sys, genq.core.data.formats\n"
            "print(' '.join(sorted(m for m in sys.modules if m == 'torch'\n"
            "    or (m.startswith('genq.') and not m.startswith('genq.core')))))")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"genq.core.data.formats loads {result.stdout.strip()}"
