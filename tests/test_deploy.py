"""docker-compose.yml: the parts the README promises, and Docker's own validation where a Compose CLI exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def test_compose_file_has_every_part_wired_together():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"redis", "postgres", "web", "scheduler", "worker"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    for name in ("web", "scheduler", "worker"):
        service = services[name]  # YAML merge keys resolved: each part shares the artifact volume and URLs
        assert "artifacts:/data/artifacts" in service["volumes"]
        assert service["environment"]["GENQ_DATABASE_URL"].startswith("postgresql://")
        assert service["environment"]["GENQ_REDIS_URL"].startswith("redis://redis:")
    # the second host's worker shares no volume: its artifacts go through the web server with a worker token
    remote = services["worker-host"]
    assert remote["profiles"] == ["second-host"]
    assert remote["volumes"] == ["worker-home:/data/home"]
    assert remote["environment"]["GENQ_ARTIFACTS"].startswith("${GENQ_WEB") and "GENQ_TOKEN" in remote["environment"]


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")), reason="no Compose CLI")
def test_compose_cli_accepts_the_file():
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
        if "is not a docker command" in result.stderr or "unknown" in result.stderr.lower():
            continue  # the docker client without its compose plugin
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("no working Compose CLI")


def test_a_regular_install_ships_every_package(tmp_path):
    # The Dockerfile installs with `pip install .`, not in editable mode: every package folder must be in the
    # wheel (a model kind added as a folder under core/models/ included), the templates with them, and the
    # kernel's C++ source, which the image compiles once installed.
    root = COMPOSE.parent
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("genq-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    packages = {"genq": "genq", "core": "genq/core", "web": "genq/web", "worker": "genq/worker"}
    expected = {f"{package}/{init.relative_to(root / folder).as_posix()}"
                for folder, package in packages.items() for init in (root / folder).rglob("__init__.py")}
    assert expected - shipped == set()
    assert {"genq/core/models/gpt/recipe.py", "genq/web/templates/job.html",
            "genq/core/models/gpt/decode_attention.cpp"} <= shipped
