"""Build the synthetic bare repository that the benchmarks serve.

The history is written as a `git fast-import` stream with fixed names,
emails, timestamps and a seeded generator, so every build yields the same
object ids. With the defaults the repository has 4,000 commits on 20
branches (7 topic branches merged back into main), about 2,000 Python-like
files three folder levels deep, 285 tags (72 of them annotated) and about 45,000
objects. After the import it is repacked with `git repack -a -d -f`, which
in a bare repository also writes a reachability bitmap, and gets a
commit-graph, as `git gc` would leave it.

Usage::

    python3 -m bench.synthetic DEST.git [--commits N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import BinaryIO

from bench.repository import git, import_repository

DEFAULT_COMMITS = 4000
# 2020-09-13 12:26:40 UTC; each step of the history is 15 minutes later.
BASE_TIMESTAMP = 1_600_000_000
STEP_SECONDS = 900
SEED = 20240601

AREAS = ("api", "core", "storage", "net", "ui", "tools", "docs", "tests")
MODULES = ("alpha", "beta", "gamma", "delta", "omega")
PACKAGES = ("base", "io", "model", "util", "view")
# 8 areas x 5 modules x 5 packages = 200 leaf folders with 8 files each.
FILES_PER_PACKAGE = 8

TOPIC_COUNT = 19
TOPIC_FIRST_STEP = 100
TOPIC_SPACING = 200
TOPIC_LIFETIME = 300
# A topic branch gets a commit on every TOPIC_PERIOD-th step while it is open.
TOPIC_PERIOD = 5
TAG_EVERY = 10
ANNOTATED_EVERY = 4

PEOPLE = (
    b"Ada Lovelace <ada@example.com>",
    b"Alan Turing <alan@example.com>",
    b"Grace Hopper <grace@example.com>",
    b"Edsger Dijkstra <edsger@example.com>",
    b"Barbara Liskov <barbara@example.com>",
    b"Donald Knuth <don@example.com>",
    b"Frances Allen <fran@example.com>",
    b"Ken Thompson <ken@example.com>",
)

WORDS = (
    "item", "value", "count", "total", "buffer", "state", "index", "limit",
    "offset", "result", "record", "entry", "token", "status", "config", "option",
    "handler", "request", "response", "cache", "store", "queue", "event", "node",
    "parent", "child", "source", "target", "window", "frame", "chunk", "block",
)

MASK64 = (1 << 64) - 1


class SplitMix64:
    """SplitMix64 pseudo-random generator.

    Used instead of `random.Random` because its output is fixed by the
    algorithm alone, not by the Python version.
    """

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        value = self.state
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
        return value ^ (value >> 31)

    def below(self, bound: int) -> int:
        """Return an integer in [0, bound); the modulo bias is below 2**-50 for small bounds."""
        return self.next() % bound

    def choice(self, items):
        return items[self.below(len(items))]


@dataclasses.dataclass(frozen=True)
class Topic:
    """A topic branch that owns one module folder while it is open."""

    number: int
    branch: str
    folder: str
    opens_at: int
    closes_at: int
    merged: bool


@dataclasses.dataclass
class BuildResult:
    path: Path
    commits: int
    branches: int
    tags: int
    annotated_tags: int
    merges: int
    files: int
    main_tip: str
    seconds: float


def leaf_folders() -> list[str]:
    return [f"{area}/{module}/{package}" for area in AREAS for module in MODULES for package in PACKAGES]


def module_folders() -> list[str]:
    return [f"{area}/{module}" for area in AREAS for module in MODULES]


def plan_topics(commits: int) -> list[Topic]:
    """Lay out the topic branches: staggered, each in its own module folder.

    At most two topics are open at a time, and every third one is merged
    back into main when it closes.
    """
    folders = module_folders()
    topics = []
    for number in range(TOPIC_COUNT):
        opens_at = TOPIC_FIRST_STEP + number * TOPIC_SPACING
        if opens_at + TOPIC_PERIOD >= commits:
            break
        folder = folders[(number * 2) % len(folders)]
        topics.append(
            Topic(
                number=number,
                branch=f"refs/heads/feature/{number:02d}-{folder.replace('/', '-')}",
                folder=folder + "/",
                opens_at=opens_at,
                closes_at=min(opens_at + TOPIC_LIFETIME, commits - 1),
                merged=number % 3 == 0,
            )
        )
    return topics


class HistoryWriter:
    """Write the fast-import stream of the synthetic history to `out`."""

    def __init__(self, out: BinaryIO, commits: int) -> None:
        self.out = out
        self.commits = commits
        self.random = SplitMix64(SEED)
        self.files: dict[str, list[str]] = {}
        self.next_mark = 1
        self.next_file_number = 0
        self.main_tip = 0
        self.main_commits = 0
        self.tags = 0
        self.annotated_tags = 0
        self.merges = 0
        self.topics = plan_topics(commits)
        # Per open topic: its tip mark and its own copy of the files of its folder.
        self.topic_tips: dict[int, int] = {}
        self.topic_files: dict[int, dict[str, list[str] | None]] = {}

    # Content

    def make_line(self) -> str:
        pick = self.random.below(6)
        first = self.random.choice(WORDS)
        second = self.random.choice(WORDS)
        number = self.random.below(1000)
        if pick == 0:
            return f"def {first}_{second}_{number}({first}, {second}):\n"
        if pick == 1:
            return f"    return {first} + {second} * {number}\n"
        if pick == 2:
            return f"    # Update the {first} of each {second} ({number} at most).\n"
        if pick == 3:
            return f"    if {first}.{second} > {number}:\n"
        return f"    {first}_{second} = compute_{first}({second}, {number})\n"

    def make_file(self) -> list[str]:
        return [self.make_line() for _ in range(30 + self.random.below(120))]

    def edit_file(self, lines: list[str]) -> list[str]:
        """Return a copy of `lines` with a few lines replaced, inserted or removed."""
        edited = list(lines)
        for _ in range(1 + self.random.below(3)):
            edited[self.random.below(len(edited))] = self.make_line()
        for _ in range(self.random.below(3)):
            edited.insert(self.random.below(len(edited) + 1), self.make_line())
        if len(edited) > 20 and self.random.below(4) == 0:
            del edited[self.random.below(len(edited))]
        return edited

    def new_path(self, folder: str) -> str:
        self.next_file_number += 1
        return f"{folder}/file_{self.next_file_number:05d}.py"

    # Stream

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def write_data(self, payload: bytes) -> None:
        self.write(b"data %d\n" % len(payload) + payload + b"\n")

    def take_mark(self) -> int:
        mark = self.next_mark
        self.next_mark += 1
        return mark

    def write_commit(
        self,
        ref: str,
        step: int,
        message: str,
        parents: list[int],
        changes: dict[str, list[str] | None],
    ) -> int:
        """Write one commit; `changes` maps a path to its new lines, or None to delete it."""
        mark = self.take_mark()
        person = PEOPLE[step % len(PEOPLE)]
        stamp = b"%d +0000" % (BASE_TIMESTAMP + step * STEP_SECONDS)
        self.write(b"commit %s\nmark :%d\n" % (ref.encode(), mark))
        self.write(b"author %s %s\ncommitter %s %s\n" % (person, stamp, person, stamp))
        self.write_data(message.encode())
        if parents:
            self.write(b"from :%d\n" % parents[0])
        for parent in parents[1:]:
            self.write(b"merge :%d\n" % parent)
        for path in sorted(changes):
            lines = changes[path]
            if lines is None:
                self.write(b"D %s\n" % path.encode())
            else:
                self.write(b"M 100644 inline %s\n" % path.encode())
                self.write_data("".join(lines).encode())
        return mark

    def write_tag(self, step: int, target: int) -> None:
        index = self.tags
        name = f"v{index // 100 + 1}.{(index // 10) % 10}.{index % 10}"
        if index % ANNOTATED_EVERY == 0:
            person = PEOPLE[(step + 3) % len(PEOPLE)]
            stamp = b"%d +0000" % (BASE_TIMESTAMP + step * STEP_SECONDS + 60)
            self.write(b"tag %s\nfrom :%d\ntagger %s %s\n" % (name.encode(), target, person, stamp))
            self.write_data(f"Release {name}\n\nTagged at step {step}.\n".encode())
            self.annotated_tags += 1
        else:
            self.write(b"reset refs/tags/%s\nfrom :%d\n\n" % (name.encode(), target))
        self.tags += 1

    # History

    def open_topic_folders(self) -> list[str]:
        return [topic.folder for topic in self.topics if topic.number in self.topic_tips]

    def pick_main_path(self, paths: list[str]) -> str:
        """Pick an existing file that no open topic branch owns."""
        owned = tuple(self.open_topic_folders())
        for _ in range(100):
            path = self.random.choice(paths)
            if not path.startswith(owned):
                return path
        raise RuntimeError("no file outside the open topic folders after 100 tries")

    def initial_commit(self) -> None:
        for folder in leaf_folders():
            for _ in range(FILES_PER_PACKAGE):
                self.files[self.new_path(folder)] = self.make_file()
        self.main_tip = self.write_commit(
            "refs/heads/main", 0, "Import the initial tree\n", [], dict(self.files)
        )

    def main_commit(self, step: int) -> None:
        paths = sorted(self.files)
        changes: dict[str, list[str] | None] = {}
        for _ in range(1 + self.random.below(4)):
            path = self.pick_main_path(paths)
            changes[path] = self.edit_file(self.files[path])
        roll = self.random.below(100)
        owned = tuple(self.open_topic_folders())
        if roll < 12:
            folder = self.random.choice([f for f in leaf_folders() if not f.startswith(owned)])
            changes[self.new_path(folder)] = self.make_file()
        elif roll < 14:
            changes[self.pick_main_path(paths)] = None
        for path, lines in changes.items():
            if lines is None:
                self.files.pop(path, None)
            else:
                self.files[path] = lines
        area = next(iter(sorted(changes))).split("/")[0]
        message = f"{area}: change {len(changes)} files\n\nStep {step} of the synthetic history.\n"
        self.main_tip = self.write_commit("refs/heads/main", step, message, [self.main_tip], changes)
        self.main_commits += 1
        if self.main_commits % TAG_EVERY == 0:
            self.write_tag(step, self.main_tip)

    def open_topic(self, topic: Topic) -> None:
        self.topic_tips[topic.number] = self.main_tip
        self.topic_files[topic.number] = {
            path: lines for path, lines in self.files.items() if path.startswith(topic.folder)
        }

    def topic_commit(self, topic: Topic, step: int) -> None:
        own = self.topic_files[topic.number]
        existing = sorted(path for path, lines in own.items() if lines is not None)
        changes: dict[str, list[str] | None] = {}
        for _ in range(1 + self.random.below(3)):
            path = self.random.choice(existing)
            changes[path] = self.edit_file(own[path])
        if self.random.below(10) == 0:
            package = self.random.choice(PACKAGES)
            changes[self.new_path(topic.folder + package)] = self.make_file()
        own.update(changes)
        message = f"{topic.folder.rstrip('/')}: work on topic {topic.number}\n\nStep {step}.\n"
        self.topic_tips[topic.number] = self.write_commit(
            topic.branch, step, message, [self.topic_tips[topic.number]], changes
        )

    def close_topic(self, topic: Topic, step: int) -> bool:
        """Close a topic; merge it into main if planned. Returns whether a commit was written."""
        tip = self.topic_tips.pop(topic.number)
        own = self.topic_files.pop(topic.number)
        if not topic.merged:
            return False
        changes = {path: lines for path, lines in own.items() if self.files.get(path) is not lines}
        for path, lines in changes.items():
            if lines is None:
                self.files.pop(path, None)
            else:
                self.files[path] = lines
        message = f"Merge branch '{topic.branch.removeprefix('refs/heads/')}'\n"
        self.main_tip = self.write_commit("refs/heads/main", step, message, [self.main_tip, tip], changes)
        self.merges += 1
        return True

    def write_history(self) -> None:
        self.write(b"feature done\n")
        self.initial_commit()
        for step in range(1, self.commits):
            self.write_step(step)
        self.write(b"done\n")

    def write_step(self, step: int) -> None:
        """Write exactly one commit: a merge, a topic commit or a main commit."""
        for topic in self.topics:
            if step == topic.opens_at:
                self.open_topic(topic)
        for topic in self.topics:
            if step == topic.closes_at and topic.number in self.topic_tips:
                if self.close_topic(topic, step):
                    return
        for topic in self.topics:
            if topic.number in self.topic_tips and (step + topic.number) % TOPIC_PERIOD == 0:
                self.topic_commit(topic, step)
                return
        self.main_commit(step)


def build(dest: Path, commits: int = DEFAULT_COMMITS) -> BuildResult:
    """Create the bare repository `dest` (which must not exist) and return its figures."""
    if commits < 2:
        raise ValueError(f"commits must be at least 2, got {commits}")
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; pass a path that does not exist")
    started = time.monotonic()
    writers: list[HistoryWriter] = []

    def write(stream: BinaryIO) -> None:
        writers.append(HistoryWriter(stream, commits))
        writers[0].write_history()

    import_repository(dest, write, timeout=300)
    [writer] = writers

    git(dest, "repack", "-a", "-d", "-f", "-q", "--window=10", "--depth=50", timeout=600)
    git(dest, "pack-refs", "--all", "--prune")
    git(dest, "commit-graph", "write", "--reachable", timeout=300)
    return BuildResult(
        path=dest,
        commits=commits,
        branches=1 + len(writer.topics),
        tags=writer.tags,
        annotated_tags=writer.annotated_tags,
        merges=writer.merges,
        files=len(writer.files),
        main_tip=git(dest, "rev-parse", "refs/heads/main"),
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.synthetic", description="Build the synthetic benchmark repository.")
    parser.add_argument("dest", type=Path, help="Path of the bare repository to create; must not exist.")
    parser.add_argument("--commits", type=int, default=DEFAULT_COMMITS, metavar="N",
                        help="Number of commits, at least 2 (default %(default)s).")
    args = parser.parse_args(argv)
    try:
        result = build(args.dest, args.commits)
    except (FileExistsError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"built {result.path} in {result.seconds:.1f} s: {result.commits} commits ({result.merges} merges), "
        f"{result.branches} branches, {result.tags} tags ({result.annotated_tags} annotated), "
        f"{result.files} files at main, main at {result.main_tip}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
