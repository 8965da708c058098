"""Watch a server's process tree through /proc: resident memory and git activity.

Memory figures are VmRSS from /proc/<pid>/status. A sum of RSS counts pages
that forked processes share once per process, so the tree figures are an
upper bound on the memory the tree really uses.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL = 0.05


def parent_pids() -> dict[int, int]:
    """Map the PID of every visible process to its parent's PID."""
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def children_of(root: int, parents: dict[int, int]) -> dict[int, list[int]]:
    """Map each process of the tree under `root` (included) to its direct children."""
    by_parent: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        by_parent.setdefault(parent, []).append(pid)
    tree: dict[int, list[int]] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        tree[pid] = by_parent.get(pid, [])
        pending.extend(tree[pid])
    return tree


def rss_kib(pid: int) -> int:
    """Return the VmRSS of `pid` in KiB, or 0 for a process that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


@dataclass
class TreeSample:
    """One reading of a process tree: the RSS sum and the largest direct child of the root."""

    tree_kib: int
    largest_child_kib: int
    processes: int


def sample_tree(root: int) -> TreeSample:
    tree = children_of(root, parent_pids())
    sizes = {pid: rss_kib(pid) for pid in tree}
    direct = [sizes[pid] for pid in tree[root]]
    return TreeSample(sum(sizes.values()), max(direct, default=0), len(tree))


class PeakSampler:
    """Record the peak RSS of a process tree every SAMPLE_INTERVAL seconds, in a thread.

    Use as a context manager around the operation to observe. A child that
    lives for less than one interval can be missed.
    """

    def __init__(self, root: int, interval: float = SAMPLE_INTERVAL) -> None:
        self.root = root
        self.interval = interval
        self.peak_tree_kib = 0
        self.peak_child_kib = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-sampler-{root}", daemon=True)

    def _record(self) -> None:
        sample = sample_tree(self.root)
        self.peak_tree_kib = max(self.peak_tree_kib, sample.tree_kib)
        self.peak_child_kib = max(self.peak_child_kib, sample.largest_child_kib)
        self.peak_processes = max(self.peak_processes, sample.processes)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        # One last reading, so that an operation shorter than the interval
        # still has its end state counted.
        self._record()


def git_processes(root: int) -> list[int]:
    """List the processes under `root` that run a git binary (git, git-http-backend, ...)."""
    found = []
    for pid in children_of(root, parent_pids()):
        try:
            executable = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(executable).startswith("git"):
            found.append(pid)
    return found


def wait_until_idle(root: int, quiet: float = 0.25, timeout: float = 120) -> float:
    """Wait until no git process has run under `root` for `quiet` seconds.

    Returns the seconds from the call until the last git process was seen,
    or 0 when none was seen. A process shorter than SAMPLE_INTERVAL can be
    missed. The quiet period matters because gitsrv starts repository upkeep
    in a thread after it has sent a push's response, a little after the
    client may have finished. Raises TimeoutError after `timeout` seconds.
    """
    started = time.perf_counter()
    last_busy = None
    while True:
        now = time.perf_counter()
        if git_processes(root):
            last_busy = now
        elif now - (last_busy if last_busy is not None else started) >= quiet:
            return last_busy - started if last_busy is not None else 0.0
        if now - started > timeout:
            raise TimeoutError(f"git processes still running under PID {root} after {timeout} s")
        time.sleep(SAMPLE_INTERVAL)
