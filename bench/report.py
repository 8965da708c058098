"""The benchmark's report: machine and version facts, and result tables."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import gitsrv
from bench.apache import apache_version
from bench.gitsrv_server import PACKAGE_PARENT

SIDES = ("gitsrv", "reference")


@dataclass
class Row:
    """One measurement: its values per side, one per run."""

    name: str
    unit: str
    values: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})

    def ratio(self) -> float | None:
        if not all(self.values[side] for side in SIDES):
            return None
        reference = statistics.median(self.values["reference"])
        return statistics.median(self.values["gitsrv"]) / reference if reference else None


def _format_number(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "MiB" else f"{value:.3f}"


def format_table(rows: list[Row]) -> list[str]:
    """Format rows as a table: median, min and max per side, and the ratio of the medians."""
    name_width = max([len("measurement")] + [len(f"{row.name} ({row.unit})") for row in rows])
    header = (
        f"{'measurement':<{name_width}}  {'gitsrv median':>13} {'min':>8} {'max':>8}  "
        f"{'reference median':>16} {'min':>8} {'max':>8}  {'gitsrv/ref':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for side, median_width in (("gitsrv", 13), ("reference", 16)):
            values = row.values[side]
            if values:
                cells.append(
                    f"{_format_number(statistics.median(values), row.unit):>{median_width}} "
                    f"{_format_number(min(values), row.unit):>8} {_format_number(max(values), row.unit):>8}"
                )
            else:
                cells.append(f"{'-':>{median_width}} {'-':>8} {'-':>8}")
        ratio = row.ratio()
        ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
        lines.append(f"{row.name + ' (' + row.unit + ')':<{name_width}}  {cells[0]}  {cells[1]}  {ratio_text:>10}")
    return lines


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as source:
            for line in source:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _run(args: list[str], cwd: str | None = None) -> str | None:
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def gitsrv_revision() -> str:
    """Describe the checkout the gitsrv package comes from: commit, and whether it has changes."""
    commit = _run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_PARENT)
    if commit is None:
        return "not a git checkout"
    changed = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE_PARENT)
    return commit + (" with uncommitted changes" if changed else "")


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages from /proc/loadavg."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_lines() -> list[str]:
    memory_kib = _first_line("/proc/meminfo", "MemTotal")
    memory = f"{int(memory_kib.split()[0]) / 1024 / 1024:.1f} GiB" if memory_kib else "unknown"
    cpu = _first_line("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        gunicorn_version = importlib.metadata.version("gunicorn")
    except importlib.metadata.PackageNotFoundError:
        gunicorn_version = "not installed"
    return [
        f"machine:   {os.cpu_count()} CPUs ({usable} usable by this process), {memory} memory, {cpu}",
        f"system:    {platform.system()} {platform.release()} ({platform.machine()}), "
        f"load average {load_average()} (1, 5, 15 min) at start",
        f"git:       {_run(['git', '--version']) or 'unknown'}",
        f"python:    {platform.python_version()} ({platform.python_implementation()})",
        f"gitsrv:    {gitsrv.__version__} from {PACKAGE_PARENT} ({gitsrv_revision()}), gunicorn {gunicorn_version}",
        f"apache:    {apache_version()}",
    ]


def repository_lines(repo: Path) -> list[str]:
    """Describe a bare repository: commits, objects, pack size, refs."""

    def git(*args: str) -> str:
        return _run(["git", "--git-dir", str(repo), *args]) or ""

    counts = dict(line.split(": ", 1) for line in git("count-objects", "-v").splitlines() if ": " in line)
    objects = int(counts.get("count", 0)) + int(counts.get("in-pack", 0))
    pack_mib = int(counts.get("size-pack", 0)) / 1024
    refs = git("for-each-ref", "--format=%(refname)").splitlines()
    branches = sum(ref.startswith("refs/heads/") for ref in refs)
    tags = sum(ref.startswith("refs/tags/") for ref in refs)
    commits = git("rev-list", "--all", "--count")
    pack_dir = repo / "objects" / "pack"
    extras = [
        name
        for name, present in (
            ("bitmap", any(pack_dir.glob("*.bitmap"))),
            ("commit-graph", (repo / "objects" / "info" / "commit-graph").exists()
             or (repo / "objects" / "info" / "commit-graphs").exists()),
        )
        if present
    ]
    return [
        f"repository: {repo}",
        f"  {commits} commits, {objects} objects in {counts.get('packs', '?')} pack(s) of {pack_mib:.1f} MiB, "
        f"{len(refs)} refs ({branches} branches, {tags} tags); "
        f"{', '.join(extras) if extras else 'no bitmap or commit-graph'}",
    ]
