"""A real Spark standalone cluster on this machine: one master and N workers on 127.0.0.1.

    python deploy/local_cluster.py start DIR [--workers 2] [--cores 1] [--memory 3g] [--hide PATH]
    python deploy/local_cluster.py stop DIR

`start` prints the master URL (spark://127.0.0.1:PORT) once every worker has registered;
run jobs on it with `./spark-submit.sh JOB ... --set spark.ship_environment=pack -- --master URL`.
The pip wheel of pyspark has no sbin/start-*.sh scripts, so the daemons are started with its
`bin/spark-class`. Each worker gets its own work directory under DIR (executors run inside it)
and a clean environment: no PYTHONPATH, no virtualenv, nothing of the caller's Python.

`--hide PATH` starts the workers in their own mount namespace (Linux, root) with an empty
tmpfs over PATH: the executors cannot see what the driver sees there, as on a real cluster
where the driver's local disk is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

STATE_FILE = "cluster.json"


def spark_home() -> pathlib.Path:
    import pyspark
    return pathlib.Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def daemon_env() -> dict[str, str]:
    """The environment of the master and workers: Java and the system, none of the caller's
    Python (so executors find Python only where the application says)."""
    keep = ("HOME", "JAVA_HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    venv_bin = str(pathlib.Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                  if p and p != venv_bin)
    env["SPARK_HOME"] = str(spark_home())
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env["SPARK_NO_DAEMONIZE"] = "1"
    return env


def hidden(command: list[str], paths: list[str]) -> list[str]:
    """`command` run in a new mount namespace where each of `paths` is an empty tmpfs."""
    if not paths:
        return command
    mounts = " && ".join(f"mkdir -p {shlex.quote(p)} && mount -t tmpfs none {shlex.quote(p)}"
                         for p in paths)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"{mounts} && exec {shlex.join(command)}"]


def can_hide() -> bool:
    """Whether this machine lets us start processes with hidden paths (root, unshare)."""
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as reply:
            status = json.load(reply)
    except OSError:
        return -1
    return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")


def start(root: pathlib.Path, workers: int = 2, cores: int = 1, memory: str = "3g",
          hide: tuple[str, ...] = (), timeout_s: float = 120) -> str:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / STATE_FILE).exists():
        raise SystemExit(f"a cluster is already recorded in {root / STATE_FILE}: stop it first")
    env = daemon_env()
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, ui_port = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    pids = []

    def launch(name: str, command: list[str]) -> None:
        log = open(root / f"{name}.log", "ab")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=root, start_new_session=True)
        pids.append(process.pid)

    launch("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                      "--port", str(port), "--webui-port", str(ui_port)])
    for index in range(workers):
        work_dir = root / f"worker-{index}"
        work_dir.mkdir(exist_ok=True)
        launch(f"worker-{index}", hidden(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", str(cores), "--memory", memory, "--work-dir", str(work_dir),
             "--webui-port", str(free_port()), url], list(hide)))
    (root / STATE_FILE).write_text(json.dumps({"master": url, "ui_port": ui_port, "pids": pids,
                                               "workers": workers}))
    deadline = time.monotonic() + timeout_s
    while alive_workers(ui_port) < workers:
        if time.monotonic() > deadline:
            stop(root)
            raise SystemExit(f"the cluster did not come up within {timeout_s:.0f} s: see the logs "
                             f"in {root}")
        time.sleep(0.5)
    return url


def _gone(pid: int) -> bool:
    """Whether the daemon has exited (reaped here when this process started it)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(root: pathlib.Path) -> None:
    state_file = root.resolve() / STATE_FILE
    if not state_file.exists():
        return
    for pid in json.loads(state_file.read_text())["pids"]:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    for pid in json.loads(state_file.read_text())["pids"]:
        while time.monotonic() < deadline:
            if _gone(pid):
                break
            time.sleep(0.2)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    state_file.unlink()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("start")
    up.add_argument("dir", type=pathlib.Path)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--cores", type=int, default=1)
    up.add_argument("--memory", default="3g")
    up.add_argument("--hide", action="append", default=[])
    down = sub.add_parser("stop")
    down.add_argument("dir", type=pathlib.Path)
    args = parser.parse_args(argv)
    if args.command == "start":
        print(start(args.dir, args.workers, args.cores, args.memory, tuple(args.hide)))
    else:
        stop(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
