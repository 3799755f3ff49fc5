"""Checkpoint upload and download through each artifact store backend, against a plain file copy on the same
machine in the same run, and the memory a move takes.

Not part of the test suite. Makes one file of --size-mb (default 1024) and moves it up (put) and back (get)
through: a folder store on another folder of the same disk, S3 (moto's server, started here, on 127.0.0.1),
and the web server's proxy (`genq web`, started here, with a worker token; the web server stores in a folder).
Each transfer runs in a process of its own, so its peak resident memory (VmHWM) is its own; each backend's
baseline is the same transfer of a 1 KiB file (the libraries and connections, no payload). Peer:
`shutil.copyfile` of the same file. For the proxy, the web server's own peak is read too. Goal (issue 13):
memory flat whatever the size: the big file's peak at most 100 MB above the 1 KiB file's. Exits 1 when a copy
comes back different or a transfer misses the memory goal.

    .venv/bin/python bench/artifacts.py                 # 1 GiB
    .venv/bin/python bench/artifacts.py --size-mb 128   # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL_MB = 100.0
BLOCK = 8 * 1024 * 1024


def peak_mb(pid: int | str = "self") -> float:
    """A process' peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(action: str, spec: str, key: str, path: str) -> None:
    """One transfer in this process; prints {"seconds", "peak_mb"} as JSON."""
    from genq.store import open_store

    store = open_store(spec, os.environ.get("GENQ_TOKEN"))
    started = time.perf_counter()
    if action == "put":
        store.put(key, Path(path))
    elif action == "get":
        store.get(key, Path(path))
    elif action == "copy":
        shutil.copyfile(key, path)
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_mb": peak_mb()}))


def run_child(env: dict, *args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{result.stderr[-3000:].strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def make_file(path: Path, size_mb: int) -> None:
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        for i in range(size_mb * 1024 * 1024 // BLOCK):
            f.write(block[:16] + i.to_bytes(8, "little") + block[24:])  # no two blocks alike
    os.sync()


def start_web(home: Path, env: dict) -> tuple[subprocess.Popen, str, str]:
    from genq.api_tokens import create_token
    from genq.client import wait_until_serving
    from genq.db import Database
    from genq.redis_server import free_port

    db = Database(f"sqlite:///{home / 'genq.db'}")
    db.upgrade()
    with db.session() as s:
        token = create_token(s, "admin", "worker")
    db.dispose()
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "genq", "web", "--workers", "1", "--threads", "4"],
                           env={**env, "GENQ_HOME": str(home), "GENQ_PORT": str(port),
                                "GENQ_DATABASE_URL": f"sqlite:///{home / 'genq.db'}",
                                "GENQ_ARTIFACTS": str(home / "artifacts"), "GENQ_MAX_EVENT_STREAMS": "0"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    if not wait_until_serving(url, web):
        raise RuntimeError("the web server did not start")
    return web, url, token


def web_worker_pid(web: subprocess.Popen) -> int:
    children = Path(f"/proc/{web.pid}/task/{web.pid}/children").read_text().split()
    return int(children[0]) if children else web.pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--only", default="folder,s3,web", help="backends to measure: folder, s3, web")
    args = parser.parse_args()
    from tests.s3_server import S3_ENV, moto_server

    failures = []
    with tempfile.TemporaryDirectory(prefix="genq-bench-artifacts-", dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        source = tmp / "model.safetensors"
        make_file(source, args.size_mb)
        want = sha256(source)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        tiny = tmp / "tiny.bin"
        tiny.write_bytes(os.urandom(1024))
        rows = []

        def measure(name: str, spec: str, extra_env: dict | None = None) -> None:
            e = {**env, **(extra_env or {})}
            key = "jobs/1/a1/checkpoints/step-00000001/model.safetensors"
            small = [run_child(e, "put", spec, "jobs/1/tiny.bin", str(tiny)),
                     run_child(e, "get", spec, "jobs/1/tiny.bin", str(tmp / "tiny-back.bin"))]
            try:
                up = run_child(e, "put", spec, key, str(source))
                back = tmp / f"back-{name}.bin"
                os.sync()
                down = run_child(e, "get", spec, key, str(back))
            except RuntimeError as exc:
                failures.append(f"{name}: {str(exc).splitlines()[-1][:300]}")
                return
            if sha256(back) != want:
                failures.append(f"{name}: the file came back different")
            back.unlink()
            up["base_mb"], down["base_mb"] = small[0]["peak_mb"], small[1]["peak_mb"]
            rows.append((name, up, down))

        copy = run_child(env, "copy", "", str(source), str(tmp / "copy.bin"))
        (tmp / "copy.bin").unlink()
        copy["base_mb"] = run_child(env, "copy", "", str(tiny), str(tmp / "copy.bin"))["peak_mb"]
        rows.append(("plain file copy (peer)", copy, copy))
        only = set(args.only.split(","))
        if "folder" in only:
            measure("folder store", str(tmp / "store"))
            shutil.rmtree(tmp / "store")
        with moto_server(tmp / "moto.log") as endpoint:
            if "s3" not in only:
                endpoint = None
            if endpoint:
                measure("S3 (moto server)", "s3://genq/bench", {**S3_ENV, "GENQ_S3_ENDPOINT_URL": endpoint})
            if any(f.startswith("S3") for f in failures):
                print("moto's log ends:\n" + (tmp / "moto.log").read_text(errors="replace")[-3000:])
        web_peak = None
        if "web" in only:
            web, url, token = start_web(tmp / "web", env)
            try:
                measure("web proxy", url, {"GENQ_TOKEN": token})
                web_peak = peak_mb(web_worker_pid(web))
            finally:
                web.terminate()
                web.wait(30)

    size = args.size_mb
    print(f"\nmoving a {size} MiB checkpoint (peak: the process' peak resident memory, 1 KiB file -> this file)\n")
    print(f"{'path':<24}{'up MiB/s':>10}{'down MiB/s':>12}{'up vs copy':>12}{'down vs copy':>14}"
          f"{'peak up':>14}{'peak down':>14}")
    copy_rate = size / rows[0][1]["seconds"]
    for name, up, down in rows:
        up_rate, down_rate = size / up["seconds"], size / down["seconds"]
        print(f"{name:<24}{up_rate:>10.0f}{down_rate:>12.0f}{up_rate / copy_rate:>12.2f}{down_rate / copy_rate:>14.2f}"
              f"{up['base_mb']:>7.0f}->{up['peak_mb']:.0f}M{down['base_mb']:>7.0f}->{down['peak_mb']:.0f}M")
        for direction, result in (("up", up), ("down", down)):
            if result["peak_mb"] - result["base_mb"] > GOAL_MB:
                failures.append(f"{name} {direction}: peak {result['peak_mb']:.0f} MiB, "
                                f"{result['peak_mb'] - result['base_mb']:.0f} above the 1 KiB transfer's "
                                f"(goal {GOAL_MB:.0f})")
    if web_peak is not None:
        print(f"\nthe web server's own peak while proxying: {web_peak:.0f} MiB")
    print("(folder store: a hard link when both folders share a file system, so it moves no bytes)")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        action = sys.argv[2]
        child(action, *sys.argv[3:6])
        sys.exit(0)
    sys.exit(main())
