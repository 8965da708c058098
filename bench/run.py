"""Compare gitsrv with git's own `git http-backend` under Apache on one repository.

Both servers serve copies of the same bare repository on 127.0.0.1: gitsrv
through `gitsrv serve` with a token as the basic-auth password, the
reference through bench.apache without authentication. Every measurement
runs once per side and run, alternating gitsrv and reference, and the
report gives the median, min and max per side and the ratio of the medians.
Apache must be installed (Debian: `apt-get install -y apache2`).

Usage::

    python3 -m bench.run [--repo PATH] [--runs N] [--quick] [--out FILE] [--keep]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import classify, synthetic
from bench.apache import ReferenceServer
from bench.clients import COMMAND_TIMEOUT, GitClient, Pusher
from bench.gitsrv_server import ALL_SOURCE_SCOPES, GitsrvServer
from bench.processes import PeakSampler, sample_tree, wait_until_idle
from bench.report import (
    Row,
    format_table,
    load_average,
    machine_lines,
    repository_lines,
)
from gitsrv.cli import serve as serve_command

DEFAULT_RUNS = 5
QUICK_RUNS = 2
CONCURRENT_CLIENTS = 16
REPO = "bench"
# Unmeasured ls-remote calls per side before the first measurement, so that
# each gitsrv worker has served a request and process start-up is not timed.
WARMUP_REQUESTS = 4
PR_SET_CHILD_SUBREAPER = 36


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def become_subreaper() -> None:
    """Adopt orphaned descendants, so that the Apache parent, which daemonizes, is reaped here.

    Without this it becomes a child of PID 1, which in some containers never
    reaps it, and stays a zombie after it stops.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Output:
    """The report: printed as it grows, and written to a file at the end if asked."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)

    def save(self) -> None:
        if self.path is not None:
            self.path.write_text("\n".join(self.lines) + "\n")


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Side:
    """One server under test, as the measurements see it."""

    name: str
    client: GitClient
    base_url: str
    repos_dir: Path
    workdir: Path
    root_pid: Callable[[], int]
    create_empty: Callable[[str], Path]
    clear_pack_cache: Callable[[], None]

    def url(self, repo: str = REPO) -> str:
        return f"{self.base_url}/{repo}.git"

    def repo_path(self, repo: str = REPO) -> Path:
        return self.repos_dir / f"{repo}.git"

    def wait_until_idle(self) -> float:
        """Wait until the server runs no git process; return the seconds waited."""
        return wait_until_idle(self.root_pid())

    def scratch(self, name: str) -> Path:
        """Return a path under this side's work folder, removing what was there."""
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path)
        return path


class Benchmark:
    """The measurements, run against both sides in alternation."""

    def __init__(self, sides: list[Side], runs: int, source: Path, branch: str) -> None:
        self.sides = sides
        self.runs = runs
        self.source = source
        self.branch = branch
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.change_number = 0

    def alternate(self, row: Row, measure: Callable[[Side, int], float]) -> None:
        """Run `measure` for each run on each side in turn (ABAB...) and record the values.

        Each measurement starts when neither server has run a git process
        for a quarter of a second, so that upkeep gitsrv runs in the
        background after a push never overlaps the next measurement.
        """
        self.rows.append(row)
        for run in range(self.runs):
            for side in self.sides:
                for other in self.sides:
                    other.wait_until_idle()
                value = measure(side, run)
                row.values[side.name].append(value)
                progress(f"{row.name}: run {run + 1}/{self.runs} {side.name} {value:.3f} {row.unit}")

    def expected_refs(self, side: Side) -> dict[str, str]:
        refs = side.client.refs(side.repo_path())
        return {ref: value for ref, value in refs.items() if ref.startswith(("refs/heads/", "refs/tags/"))}

    def check_clone(self, side: Side, clone: Path, expected: dict[str, str]) -> None:
        got = side.client.refs(clone)
        if got != expected:
            missing = sorted(set(expected) - set(got))[:5]
            raise RuntimeError(
                f"{side.name}: clone {clone} has {len(got)} refs, expected {len(expected)} (missing e.g. {missing})"
            )

    def clone(self, side: Side, name: str) -> float:
        """Clone the benchmark repository bare, check its refs, remove it; return the seconds."""
        destination = side.scratch(name)
        expected = self.expected_refs(side)
        seconds = side.client.timed("clone", "--quiet", "--bare", side.url(), str(destination))
        self.check_clone(side, destination, expected)
        shutil.rmtree(destination)
        return seconds

    def warm_up(self) -> None:
        for side in self.sides:
            for _ in range(WARMUP_REQUESTS):
                side.client.run("ls-remote", side.url())

    # Clones

    def measure_cold_clone(self) -> None:
        def cold(side: Side, run: int) -> float:
            side.clear_pack_cache()
            return self.clone(side, "clone-cold")

        self.alternate(Row("full clone, cold", "s"), cold)

    def measure_warm_clone(self) -> None:
        for side in self.sides:
            self.clone(side, "clone-warm")
        self.alternate(Row("full clone, warm", "s"), lambda side, run: self.clone(side, "clone-warm"))

    # Fetches

    def mirror_clone(self, side: Side, name: str) -> Path:
        path = side.scratch(name)
        side.client.run("clone", "--quiet", "--mirror", side.url(), str(path))
        return path

    def measure_noop_fetch(self) -> None:
        clones = {side.name: self.mirror_clone(side, "fetch-noop") for side in self.sides}

        def fetch(side: Side, run: int) -> float:
            return side.client.timed("--git-dir", str(clones[side.name]), "fetch", "--quiet", "origin")

        self.alternate(Row("no-op fetch", "s"), fetch)

    def pushers(self, name: str) -> dict[str, Pusher]:
        pushers = {}
        for side in self.sides:
            pusher = Pusher(side.client, side.scratch(name), side.url(), self.branch)
            pusher.clone()
            pushers[side.name] = pusher
        return pushers

    def next_change(self) -> int:
        self.change_number += 1
        return self.change_number

    def measure_incremental_fetch(self) -> None:
        clones = {side.name: self.mirror_clone(side, "fetch-incremental") for side in self.sides}
        pushers = self.pushers("pusher-fetch")
        ref = f"refs/heads/{self.branch}"
        changes: dict[int, int] = {}

        def fetch(side: Side, run: int) -> float:
            # Both sides get the same commit, so their repositories stay equal.
            if run not in changes:
                changes[run] = self.next_change()
            number = changes[run]
            pusher = pushers[side.name]
            commit = pusher.commit(number)
            pusher.push()
            side.wait_until_idle()
            clone = clones[side.name]
            seconds = side.client.timed("--git-dir", str(clone), "fetch", "--quiet", "origin")
            if side.client.refs(clone).get(ref) != commit:
                raise RuntimeError(f"{side.name}: fetch did not bring {ref} to the pushed commit {commit}")
            return seconds

        self.alternate(Row("fetch of 1 new commit", "s"), fetch)

    # Pushes

    def measure_fast_forward_push(self) -> None:
        pushers = self.pushers("pusher-ff")
        changes: dict[int, int] = {}

        def push(side: Side, run: int) -> float:
            if run not in changes:
                changes[run] = self.next_change()
            pusher = pushers[side.name]
            commit = pusher.commit(changes[run])
            seconds = pusher.push()
            if side.client.refs(side.repo_path()).get(f"refs/heads/{self.branch}") != commit:
                raise RuntimeError(f"{side.name}: push did not move {self.branch} to {commit}")
            return seconds

        self.alternate(Row("push of 1 commit (fast-forward)", "s"), push)

    def push_mirror(self, side: Side, name: str) -> tuple[Path, float]:
        """Create the empty repository `name` and push every ref of the source into it.

        Returns the repository's path and the seconds `git push --mirror` took.
        """
        target = side.create_empty(name)
        seconds = side.client.timed("--git-dir", str(self.source), "push", "--quiet", "--mirror", side.url(name))
        return target, seconds

    def check_and_remove_mirror(self, side: Side, target: Path) -> None:
        """Check that a mirror push left every source ref in `target`, then remove it.

        Call only when the server runs no git process, because gitsrv keeps
        working on a pushed repository in the background.
        """
        source_refs = side.client.refs(self.source)
        target_refs = side.client.refs(target)
        if target_refs != source_refs:
            raise RuntimeError(
                f"{side.name}: mirror push left {len(target_refs)} refs in {target}, expected {len(source_refs)}"
            )
        shutil.rmtree(target)

    def measure_mirror_push(self) -> None:
        targets: list[tuple[Side, Path]] = []

        def push(side: Side, run: int) -> float:
            target, seconds = self.push_mirror(side, f"mirror-{run}")
            targets.append((side, target))
            return seconds

        self.alternate(Row("push --mirror into an empty repo", "s"), push)
        for side, target in targets:
            side.wait_until_idle()
            self.check_and_remove_mirror(side, target)

    # Load

    def concurrent_clones(self, side: Side, run: int, failures: dict[str, list[str]]) -> float:
        """Start CONCURRENT_CLIENTS bare clones at once; return the wall time until the last one ends."""
        folder = side.scratch(f"concurrent-{run}")
        folder.mkdir(parents=True)
        expected = self.expected_refs(side)

        processes = []
        started = time.perf_counter()
        for index in range(CONCURRENT_CLIENTS):
            processes.append(
                side.client.popen(
                    "clone", "--quiet", "--bare", side.url(), str(folder / f"clone-{index}.git"),
                    log=folder / f"clone-{index}.log",
                )
            )
        deadline = started + COMMAND_TIMEOUT
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        seconds = time.perf_counter() - started

        for index, process in enumerate(processes):
            clone = folder / f"clone-{index}.git"
            reason = None
            if process.returncode != 0:
                log_text = (folder / f"clone-{index}.log").read_text(errors="replace").strip()
                reason = f"exit {process.returncode}: {side.client.redact(log_text)[-300:]}"
            else:
                try:
                    self.check_clone(side, clone, expected)
                except RuntimeError as error:
                    reason = str(error)
            if reason:
                failures[side.name].append(f"run {run + 1} clone {index}: {reason}")
        shutil.rmtree(folder)
        return seconds

    def measure_concurrency(self) -> None:
        # The pushes above changed the repository: one clone first, so that
        # the concurrent clones all see a warm state.
        for side in self.sides:
            self.clone(side, "clone-before-concurrency")
        failures: dict[str, list[str]] = {side.name: [] for side in self.sides}
        self.alternate(
            Row(f"{CONCURRENT_CLIENTS} concurrent full clones, wall time", "s"),
            lambda side, run: self.concurrent_clones(side, run, failures),
        )
        total = self.runs * CONCURRENT_CLIENTS
        self.notes.append(
            "Failed concurrent clones: "
            + ", ".join(f"{side.name} {len(failures[side.name])} of {total}" for side in self.sides)
            + "."
        )
        for side in self.sides:
            for failure in failures[side.name][:5]:
                self.notes.append(f"  {side.name} {failure}")

    # Memory

    def measure_memory(self) -> list[Row]:
        rows = {
            key: Row(name, "MiB")
            for key, name in (
                ("clone-tree", "clone, cold: whole process tree"),
                ("clone-process", "clone, cold: largest worker process"),
                ("push-tree", "push --mirror: whole process tree"),
                ("push-process", "push --mirror: largest worker process"),
            )
        }
        for run in range(self.runs):
            for side in self.sides:
                for other in self.sides:
                    other.wait_until_idle()
                side.clear_pack_cache()
                with PeakSampler(side.root_pid()) as clone_sampler:
                    self.clone(side, "clone-memory")
                # The push's sample includes the upkeep gitsrv runs after it.
                with PeakSampler(side.root_pid()) as push_sampler:
                    target, _seconds = self.push_mirror(side, f"mirror-memory-{run}")
                    side.wait_until_idle()
                self.check_and_remove_mirror(side, target)
                for key, kib in (
                    ("clone-tree", clone_sampler.peak_tree_kib),
                    ("clone-process", clone_sampler.peak_child_kib),
                    ("push-tree", push_sampler.peak_tree_kib),
                    ("push-process", push_sampler.peak_child_kib),
                ):
                    rows[key].values[side.name].append(kib / 1024)
                progress(
                    f"memory: run {run + 1}/{self.runs} {side.name} clone tree {clone_sampler.peak_tree_kib / 1024:.1f} MiB, "
                    f"push tree {push_sampler.peak_tree_kib / 1024:.1f} MiB"
                )
        return list(rows.values())


def idle_memory_line(side: Side) -> str:
    sample = sample_tree(side.root_pid())
    return (
        f"  {side.name}: {sample.tree_kib / 1024:.1f} MiB in {sample.processes} processes, "
        f"largest worker process {sample.largest_child_kib / 1024:.1f} MiB"
    )


def head_branch(repo: Path) -> str:
    result = subprocess.run(
        ["git", "--git-dir", str(repo), "symbolic-ref", "--short", "HEAD"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    branch = result.stdout.strip()
    if result.returncode != 0 or not branch:
        raise SystemExit(f"error: {repo}: HEAD is not a symbolic ref to a branch")
    verify = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if verify.returncode != 0:
        raise SystemExit(f"error: {repo}: HEAD names {branch}, which has no commits")
    return branch


def check_bare_repository(repo: Path) -> None:
    result = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "--is-bare-repository"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if result.returncode != 0 or result.stdout.strip() != "true":
        raise SystemExit(
            f"error: {repo} is not a bare git repository; make one with: git clone --mirror SOURCE {repo.name}.git"
        )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.run",
        description="Compare gitsrv with git http-backend under Apache 2.4 on the same bare repository.",
    )
    parser.add_argument("--repo", type=Path, metavar="PATH",
                        help="Bare repository to serve (copied, never changed). Default: build the synthetic one.")
    parser.add_argument("--runs", type=int, metavar="N", help=f"Runs per measurement and side (default {DEFAULT_RUNS}).")
    parser.add_argument("--quick", action="store_true",
                        help=f"Smoke run: {QUICK_RUNS} runs, no concurrency measurement, 2 classification repeats.")
    parser.add_argument("--out", type=Path, metavar="FILE", help="Also write the report to this file.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary work folder and print its path.")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.repo is not None:
        args.repo = args.repo.absolute()
        check_bare_repository(args.repo)
    return args


def stop_quietly(stop: Callable[[], None], name: str) -> None:
    try:
        stop()
    except Exception as error:  # noqa: BLE001 - report every failure to stop, then go on with the rest
        progress(f"stopping {name} failed: {error}")


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    become_subreaper()
    # A SIGTERM unwinds like Ctrl-C, so the servers are stopped.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))

    workdir = Path(tempfile.mkdtemp(prefix="gitsrv-bench-"))
    # Apache's children run as www-data and must reach the reference's folders.
    workdir.chmod(0o755)
    out = Output(args.out)
    stops: list[tuple[str, Callable[[], None]]] = []
    try:
        run_benchmark(args, workdir, out, stops)
        return 0
    finally:
        for name, stop in reversed(stops):
            stop_quietly(stop, name)
        out.save()
        if args.keep:
            progress(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, workdir: Path, out: Output, stops: list) -> None:
    out.line("gitsrv benchmark: gitsrv against git http-backend under Apache, same repository")
    out.line(f"command:   {shlex.join(sys.orig_argv)}")
    out.line(f"date:      {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    for line in machine_lines():
        out.line(line)

    if args.repo is None:
        progress("building the synthetic repository")
        built = synthetic.build(workdir / "source.git")
        source = built.path
        out.line(
            f"source:    synthetic repository (bench/synthetic.py), built in {built.seconds:.1f} s, "
            f"main at {built.main_tip}"
        )
    else:
        source = args.repo
        out.line(f"source:    {source}")
    branch = head_branch(source)
    for line in repository_lines(source):
        out.line(line)

    sides, gitsrv = start_servers(source, workdir, out, stops)
    out.line(
        f"runs:      {args.runs} per measurement and side, alternating gitsrv and reference; "
        f"push commits go to {branch}"
    )

    benchmark = Benchmark(sides, args.runs, source, branch)
    progress("warming up both servers")
    benchmark.warm_up()
    out.line("")
    out.line("Idle memory after warm-up (sum of VmRSS):")
    for side in sides:
        out.line(idle_memory_line(side))

    benchmark.measure_cold_clone()
    benchmark.notes.append(
        f"gitsrv pack cache folder {gitsrv.pack_cache_dir.relative_to(workdir)}: "
        + ("present, cleared before each cold clone." if gitsrv.pack_cache_dir.exists()
           else "absent after the cold clones, so gitsrv cached no packs.")
    )
    benchmark.measure_warm_clone()
    benchmark.measure_noop_fetch()
    benchmark.measure_incremental_fetch()
    benchmark.measure_fast_forward_push()
    benchmark.measure_mirror_push()
    if args.quick:
        benchmark.notes.append("Concurrent clones: skipped (--quick).")
    else:
        benchmark.measure_concurrency()
    memory_rows = benchmark.measure_memory()
    print_results(out, benchmark, memory_rows)

    for name, stop in reversed(stops):
        stop_quietly(stop, name)
    stops.clear()

    progress("classification micro-benchmark")
    out.line("")
    classify_dir = workdir / "classify"
    classify_dir.mkdir()
    for line in classify.run(classify_dir, repeats=2 if args.quick else classify.DEFAULT_REPEATS):
        out.line(line)


def start_servers(source: Path, workdir: Path, out: Output, stops: list) -> tuple[list[Side], GitsrvServer]:
    """Copy `source` into both servers' roots, start both servers and describe them.

    Appends each server's stop function to `stops` before starting it.
    """
    # gitsrv: the repository under DATA/repos, a token with every source scope.
    gitsrv = GitsrvServer(workdir / "gitsrv-data", free_port(), workdir / "gitsrv.log")
    gitsrv.repos_dir.mkdir(parents=True)
    shutil.copytree(source, gitsrv.repos_dir / f"{REPO}.git", symlinks=True)
    token = gitsrv.create_token()

    # The reference: its own project root, handed to the CGI's user.
    reference_root = workdir / "reference-repos"
    reference = ReferenceServer(workdir / "reference-state", reference_root, free_port())
    reference_root.mkdir(mode=0o755)
    shutil.copytree(source, reference_root / f"{REPO}.git", symlinks=True)
    reference.hand_over(reference_root)

    def create_reference_repo(name: str) -> Path:
        path = reference_root / f"{name}.git"
        subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True, timeout=60, stdin=subprocess.DEVNULL)
        reference.hand_over(path)
        return path

    def clear_gitsrv_pack_cache() -> None:
        if gitsrv.pack_cache_dir.exists():
            shutil.rmtree(gitsrv.pack_cache_dir)

    stops.append(("gitsrv", gitsrv.stop))
    progress("starting gitsrv")
    gitsrv.start()
    stops.append(("apache", reference.stop))
    progress("starting apache")
    reference.start()

    sides = [
        Side(
            name="gitsrv",
            client=GitClient(workdir / "client-home-gitsrv", secrets=(token,)),
            base_url=f"http://bench:{token}@127.0.0.1:{gitsrv.port}",
            repos_dir=gitsrv.repos_dir,
            workdir=workdir / "work-gitsrv",
            root_pid=gitsrv.main_pid,
            create_empty=gitsrv.create_repository,
            clear_pack_cache=clear_gitsrv_pack_cache,
        ),
        Side(
            name="reference",
            client=GitClient(workdir / "client-home-reference"),
            base_url=reference.base_url,
            repos_dir=reference_root,
            workdir=workdir / "work-reference",
            root_pid=reference.main_pid,
            create_empty=create_reference_repo,
            clear_pack_cache=lambda: None,
        ),
    ]
    for side in sides:
        side.workdir.mkdir()

    serve_defaults = {param.name: param.default for param in serve_command.params}
    out.line(
        f"gitsrv:    {shlex.join(gitsrv.serve_command())}\n"
        f"           {serve_defaults.get('workers')} workers x {serve_defaults.get('threads')} threads (the defaults), "
        f"embedded SQLite; a token with {', '.join(ALL_SOURCE_SCOPES)} is the basic-auth password\n"
        f"           settings: {gitsrv.settings_text()}"
    )
    out.line(
        f"reference: apache2 -f {reference.config_path} -k start\n"
        f"           event MPM (StartServers 2, ThreadsPerChild 25, MaxRequestWorkers 150), mod_cgid, "
        f"git-http-backend, no authentication{', CGI as www-data' if reference.run_as else ''}"
    )
    return sides, gitsrv


MEMORY_LEGEND = """\
Peak resident memory of the server during the operation, sampled every 50 ms
(sums of VmRSS, so pages shared between forked processes count once per process).
'whole process tree': for gitsrv the gunicorn master, its workers and every
process they start (git, the pack-cache hook); for the reference Apache's
parent, its children, the cgid daemon and the CGI and git processes.
'largest worker process': the largest direct child of the server's parent
process, which is a gunicorn worker (Python) for gitsrv and an Apache child
for the reference.
"""


def print_results(out: Output, benchmark: Benchmark, memory_rows: list[Row]) -> None:
    out.line("")
    out.line("Time in seconds per operation, as the git client sees it:")
    out.line("")
    for line in format_table(benchmark.rows):
        out.line(line)
    out.line("")
    for line in MEMORY_LEGEND.splitlines():
        out.line(line)
    out.line("")
    for line in format_table(memory_rows):
        out.line(line)
    out.line("")
    for note in benchmark.notes:
        out.line(note)
    out.line(f"Load average at the end of the measurements: {load_average()} (1, 5, 15 min).")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        progress("interrupted; the servers were stopped")
        sys.exit(130)
