"""setuptools reads everything from pyproject.toml except the package list, which it cannot compute there:
core/, web/ and worker/ install as genq.core, genq.web and genq.worker (package-dir in pyproject.toml), each
with every sub-package found, so a new model kind (a folder under core/models/) installs without an edit."""

from setuptools import find_packages, setup

ROOTS = {"genq": "genq", "genq.core": "core", "genq.web": "web", "genq.worker": "worker"}

setup(packages=[package for name, folder in ROOTS.items()
                for package in (name, *(f"{name}.{sub}" for sub in find_packages(folder)))])
