"""`genq team create|set|list` on a real database, as the operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GENQ = str(Path(sys.executable).with_name("genq"))


def genq(settings, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "GENQ_HOME": str(settings.home), "GENQ_DATABASE_URL": settings.database_url}
    return subprocess.run([GENQ, *args], env=env, capture_output=True, text=True, timeout=120)


def test_team_create_set_and_list(settings):
    made = genq(settings, "team", "create", "vision", "--weight", "2", "--max-gpus", "4")
    assert made.returncode == 0, made.stderr
    assert "vision\tweight 2\tmax_gpus 4" in made.stdout
    changed = genq(settings, "team", "set", "vision", "--max-gpus", "none", "--gpu-hours-per-week", "100")
    assert "max_gpus -\tgpu_hours_per_week 100.0" in changed.stdout, changed.stderr
    assert "vision\tweight 2" in genq(settings, "team", "list").stdout
    bad = genq(settings, "team", "set", "vision", "--weight", "-1")
    assert bad.returncode == 2 and "weight" in bad.stderr
    for weight in ("none", "lots"):  # a quota may be lifted with 'none', a weight not
        bad = genq(settings, "team", "set", "vision", "--weight", weight)
        assert bad.returncode == 2 and f"--weight must be a number above 0, got '{weight}'" in bad.stderr, bad.stderr
    assert genq(settings, "team", "create", "vision").returncode == 2
    assert "not found" in genq(settings, "team", "set", "nobody", "--weight", "1").stderr


def test_team_names_are_checked_by_the_cli_as_by_the_api(settings):
    for team in ("alpha", "admin"):
        assert genq(settings, "token", "create", "--team", team, "--role", "admin").returncode == 0
    again = genq(settings, "token", "create", "--team", "alpha")  # stdout is the token alone, for scripts
    assert again.stdout.startswith("genq_") and len(again.stdout.split()) == 1 and again.stderr == "", again.stderr
    typo = genq(settings, "token", "create", "--team", "aplha")
    assert typo.returncode == 0 and "created team 'aplha': no team had that name" in typo.stderr
    assert typo.stdout.startswith("genq_") and len(typo.stdout.split()) == 1
    bad = genq(settings, "team", "create", "admin\n")
    assert bad.returncode == 2 and "control character" in bad.stderr, bad.stderr
    for args, existing in [(("team", "create", "ALPHA"), "alpha"), (("team", "create", "Admin"), "admin")]:
        same = genq(settings, *args)
        assert same.returncode == 2 and f"'{existing}'" in same.stderr and "case" in same.stderr, (args, same.stderr)
    other_case = genq(settings, "token", "create", "--team", "Alpha", "--role", "viewer")  # alpha's, as elsewhere
    assert other_case.returncode == 0 and other_case.stderr == "", other_case.stderr
    assert "\talpha\tviewer\t" in genq(settings, "token", "list").stdout
    listed = genq(settings, "team", "list").stdout
    assert sorted(line.split("\t")[0] for line in listed.splitlines()) == ["admin", "alpha", "aplha"], listed


def test_the_operator_creates_worker_tokens_from_the_cli(settings):
    made = genq(settings, "token", "create", "--team", "admin", "--role", "worker")
    assert made.returncode == 0 and made.stdout.strip().startswith("genq_"), made.stderr
    elsewhere = genq(settings, "token", "create", "--team", "vision", "--role", "worker")  # its admin would revoke it
    assert elsewhere.returncode == 2 and "belongs to team 'admin'" in elsewhere.stderr, elsewhere.stderr
    assert "\tadmin\tworker\t" in genq(settings, "token", "list").stdout
    past = genq(settings, "token", "revoke", "99999999999999999999999")  # past any id: refused, no traceback
    assert past.returncode == 2 and "not in the range" in past.stderr and "Traceback" not in past.stderr


def test_hours_below_a_tenth_keep_two_significant_digits():
    from genq.cli_admin import _hours

    assert [_hours(h) for h in (0, 0.0088, 0.1, 3.14159)] == ["0.00", "0.0088", "0.10", "3.14"]  # 0.0088 read "0.01"
