"""Every third-party module the installed code imports comes from a distribution pyproject.toml declares:
one only present because another package pulls it in (tqdm through huggingface_hub, say) can vanish with
that package's next release."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_level_modules() -> dict[str, str]:
    """module -> the first file importing it, over genq/, core/, web/ and worker/."""
    found: dict[str, str] = {}
    for folder in ("genq", "core", "web", "worker"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normal(re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}
    providers = packages_distributions()
    missing = []
    for module, where in sorted(_imported_top_level_modules().items()):
        if module in sys.stdlib_module_names or module == "genq":
            continue
        dists = {_normal(d) for d in providers.get(module, [])}
        if not dists & declared:
            missing.append(f"{module} ({where}; from {', '.join(sorted(dists)) or 'nothing installed'})")
    assert missing == []
