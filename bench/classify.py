"""Time gitsrv's ref classification on a long history, with and without a commit-graph.

Builds a bare repository whose main branch is a line of 100,000 commits,
with a branch `diverged` of 10 commits that forks from main's 50,000th
commit. It then times `ObjectInspector(repo, {}).classify_all([update])`,
the call a push makes for its ref updates, for force-pushes and
fast-forwards of `refs/heads/main`. Each case runs first on the repository
as fast-import left it (no commit-graph), then after
`git commit-graph write --reachable`.

Usage::

    python3 -m bench.classify [--commits N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.repository import git, import_repository
from gitsrv.access.policy import Classification, RefUpdate
from gitsrv.git.inspect import ObjectInspector

DEFAULT_COMMITS = 100_000
DIVERGED_COMMITS = 10
REWIND_DEPTH = 1000
DEFAULT_REPEATS = 5
# 2021-01-01 00:00:00 UTC; each commit is one minute after the previous one.
BASE_TIMESTAMP = 1_609_459_200
PERSON = b"Bench Author <bench@example.com>"


@dataclass(frozen=True)
class Case:
    label: str
    old: str
    new: str
    expected: Classification


def write_history(out, commits: int) -> None:
    """Write a fast-import stream: `commits` commits on main, and the diverged branch."""
    fork_at = commits // 2

    def commit(ref: bytes, mark: int, parent: int | None, tick: int, content: bytes) -> None:
        stamp = b"%d +0000" % (BASE_TIMESTAMP + tick * 60)
        message = b"Commit %d\n" % mark
        out.write(b"commit %s\nmark :%d\nauthor %s %s\ncommitter %s %s\n" % (ref, mark, PERSON, stamp, PERSON, stamp))
        out.write(b"data %d\n%s\n" % (len(message), message))
        if parent is not None:
            out.write(b"from :%d\n" % parent)
        out.write(b"M 100644 inline counter.txt\ndata %d\n%s\n" % (len(content), content))

    out.write(b"feature done\n")
    for number in range(1, commits + 1):
        commit(b"refs/heads/main", number, number - 1 if number > 1 else None, number, b"%d\n" % number)
    parent = fork_at
    for offset in range(1, DIVERGED_COMMITS + 1):
        mark = commits + offset
        commit(b"refs/heads/diverged", mark, parent, fork_at + offset, b"diverged %d\n" % offset)
        parent = mark
    out.write(b"done\n")


def build_repository(dest: Path, commits: int) -> None:
    import_repository(dest, lambda stream: write_history(stream, commits), timeout=600)


def make_cases(repo: Path, commits: int) -> list[Case]:
    main = git(repo, "rev-parse", "refs/heads/main")
    root = git(repo, "rev-list", "--max-parents=0", "refs/heads/main")
    return [
        Case(
            f"force-push: main -> branch forked {commits - commits // 2:,} commits back",
            main, git(repo, "rev-parse", "refs/heads/diverged"), Classification.FORCE_PUSH,
        ),
        Case(
            f"force-push: main -> main~{REWIND_DEPTH} (rewind)",
            main, git(repo, "rev-parse", f"refs/heads/main~{REWIND_DEPTH}"), Classification.FORCE_PUSH,
        ),
        Case("fast-forward: main~1 -> main", git(repo, "rev-parse", "refs/heads/main~1"), main, Classification.UPDATE),
        Case(f"fast-forward: root -> main ({commits - 1:,} commits)", root, main, Classification.UPDATE),
    ]


def time_case(repo: Path, case: Case, repeats: int) -> list[float]:
    """Return the seconds of each of `repeats` classifications; raise if one is wrong."""
    update = RefUpdate(case.old, case.new, "refs/heads/main")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        [classification] = ObjectInspector(repo, {}).classify_all([update])
        times.append(time.perf_counter() - started)
        if classification is not case.expected:
            raise RuntimeError(f"{case.label}: classified as {classification}, expected {case.expected}")
    return times


def format_seconds(times: list[float]) -> str:
    return f"{statistics.median(times):.4f} ({min(times):.4f}-{max(times):.4f})"


def run(workdir: Path, commits: int = DEFAULT_COMMITS, repeats: int = DEFAULT_REPEATS) -> list[str]:
    """Build the history under `workdir`, time every case and return the report lines."""
    repo = workdir / "classify.git"
    started = time.monotonic()
    build_repository(repo, commits)
    build_seconds = time.monotonic() - started
    cases = make_cases(repo, commits)

    without_graph = {case.label: time_case(repo, case, repeats) for case in cases}
    git(repo, "commit-graph", "write", "--reachable", timeout=600)
    with_graph = {case.label: time_case(repo, case, repeats) for case in cases}

    width = max(len(case.label) for case in cases)
    lines = [
        f"Classification: {commits:,} commits on main, {DIVERGED_COMMITS} on a branch forked at commit "
        f"{commits // 2:,}; built with fast-import in {build_seconds:.1f} s.",
        f"Seconds per ObjectInspector.classify_all([update]) call, median (min-max) of {repeats} runs.",
        "",
        f"{'case':<{width}}  {'no commit-graph':>24}  {'with commit-graph':>24}",
    ]
    for case in cases:
        lines.append(
            f"{case.label:<{width}}  {format_seconds(without_graph[case.label]):>24}  "
            f"{format_seconds(with_graph[case.label]):>24}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.classify", description="Time gitsrv's ref classification on a long history."
    )
    parser.add_argument("--commits", type=int, default=DEFAULT_COMMITS, metavar="N",
                        help="Commits on the main branch (default %(default)s; at least 2,002).")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                        help="Timed calls per case (default %(default)s).")
    args = parser.parse_args(argv)
    if args.commits < 2 * REWIND_DEPTH + 2:
        parser.error(f"--commits must be at least {2 * REWIND_DEPTH + 2}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="gitsrv-classify-") as workdir:
        print("\n".join(run(Path(workdir), args.commits, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
