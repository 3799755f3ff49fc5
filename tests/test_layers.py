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
