#!/usr/bin/env python3
r"""Build the sample bare repository that the gitsrv tests serve.

The history is written as a `git fast-import` stream with fixed names, emails
and timestamps, so every build yields the same object ids.

Usage as a script::

    python3 repos-fixture/build.py DEST_DIR [--name NAME]

Usage as a module: call ``build_sample(dest)``, which returns the ids and ref
names listed in its docstring.

Layout of the sample (M = main, F = feature, D = diverged, B = big)::

    M1 .. M8 - M9 - M10 - M11 (merge) - M12       refs/heads/main
          \                 /
           F1 ----------- F2                       refs/heads/feature
    M4 <- refs/tags/v1.0-light (lightweight tag)
    M6 <- refs/tags/v1.0 (annotated tag object)
    M7 - D1 - D2 - D3                              refs/heads/diverged
    M12 - B1 (adds data/big.bin, 3 MiB)            refs/heads/big
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

DEFAULT_NAME = "sample.git"

ALICE = b"Alice Example <alice@example.com>"
BOB = b"Bob Example <bob@example.com>"
# 2023-11-14 22:13:20 UTC. Each commit or tag is stamped one hour after the
# previous one.
BASE_TIMESTAMP = 1_700_000_000
TIMESTAMP_STEP = 3600

BIG_FILE_PATH = "data/big.bin"
BIG_FILE_SIZE = 3 * 1024 * 1024

MAIN_REF = "refs/heads/main"
FEATURE_REF = "refs/heads/feature"
DIVERGED_REF = "refs/heads/diverged"
BIG_REF = "refs/heads/big"
LIGHT_TAG_REF = "refs/tags/v1.0-light"
ANNOTATED_TAG_REF = "refs/tags/v1.0"


def generate_big_bytes(size: int = BIG_FILE_SIZE) -> bytes:
    """Return `size` pseudo-random bytes from SHA-256 in counter mode.

    The output depends only on `size`, and zlib cannot compress it, so the
    blob stays larger than 2 MiB inside a pack.
    """
    blocks = []
    for counter in range((size + 31) // 32):
        blocks.append(hashlib.sha256(counter.to_bytes(8, "big")).digest())
    return b"".join(blocks)[:size]


class StreamWriter:
    """Writer of a `git fast-import` stream with marks and fixed timestamps."""

    def __init__(self) -> None:
        self.parts: list[bytes] = [b"feature done\n"]
        self.next_mark = 1
        self.tick = 0

    def _take_mark(self) -> int:
        mark = self.next_mark
        self.next_mark += 1
        return mark

    def _take_timestamp(self) -> bytes:
        timestamp = BASE_TIMESTAMP + self.tick * TIMESTAMP_STEP
        self.tick += 1
        return b"%d +0000" % timestamp

    @staticmethod
    def _data(payload: bytes) -> bytes:
        return b"data %d\n%s\n" % (len(payload), payload)

    def blob(self, content: bytes) -> int:
        """Write a blob and return its mark."""
        mark = self._take_mark()
        self.parts.append(b"blob\nmark :%d\n" % mark + self._data(content))
        return mark

    def commit(
        self,
        ref: str,
        message: str,
        files: dict[str, bytes | int | None],
        parents: tuple[int, ...] = (),
        author: bytes = ALICE,
    ) -> int:
        """Write a commit on `ref` and return its mark.

        `files` maps a path to its new content, to the mark of a blob that was
        written before, or to None to delete the path. fast-import starts the
        tree from the first parent and does not merge trees, so a merge commit
        must list the files it takes from its other parents.
        Empty `parents` continues the current tip of `ref`, or starts a root
        commit if `ref` is new. Otherwise the first parent becomes `from` and
        the rest become `merge` parents.
        """
        mark = self._take_mark()
        timestamp = self._take_timestamp()
        lines = [
            b"commit %s\n" % ref.encode(),
            b"mark :%d\n" % mark,
            b"author %s %s\n" % (author, timestamp),
            b"committer %s %s\n" % (author, timestamp),
            self._data(message.encode()),
        ]
        if parents:
            lines.append(b"from :%d\n" % parents[0])
            for parent in parents[1:]:
                lines.append(b"merge :%d\n" % parent)
        for path, content in files.items():
            if content is None:
                lines.append(b"D %s\n" % path.encode())
            elif isinstance(content, int):
                lines.append(b"M 100644 :%d %s\n" % (content, path.encode()))
            else:
                lines.append(b"M 100644 inline %s\n" % path.encode())
                lines.append(self._data(content))
        self.parts.append(b"".join(lines) + b"\n")
        return mark

    def reset(self, ref: str, target_mark: int) -> None:
        """Point `ref` at the commit `target_mark`, as for a lightweight tag."""
        self.parts.append(b"reset %s\nfrom :%d\n\n" % (ref.encode(), target_mark))

    def annotated_tag(self, name: str, target_mark: int, message: str) -> None:
        """Write an annotated tag object `refs/tags/<name>` for `target_mark`."""
        lines = [
            b"tag %s\n" % name.encode(),
            b"from :%d\n" % target_mark,
            b"tagger %s %s\n" % (ALICE, self._take_timestamp()),
            self._data(message.encode()),
        ]
        self.parts.append(b"".join(lines))

    def finish(self) -> bytes:
        return b"".join(self.parts) + b"done\n"


def write_history(stream: StreamWriter) -> dict[str, int]:
    """Write the whole sample history to `stream` and return the named marks."""
    readme = b"# sample\n\nA repository that the gitsrv tests clone and push to.\n"
    hello = b'def greet(name):\n    return "Hello, " + name\n'
    usage = b"Run src/hello.py.\n"
    shout = b"def shout(text):\n    return text.upper()\n"
    shout_test = b'from shout import shout\n\nassert shout("a") == "A"\n'

    main = [
        stream.commit(MAIN_REF, "Add README", {"README.md": readme}),
        stream.commit(MAIN_REF, "Add greet function", {"src/hello.py": hello}),
    ]
    readme += b"\nCode lives in src/.\n"
    main.append(stream.commit(MAIN_REF, "Describe the layout in README", {"README.md": readme}))
    main.append(stream.commit(MAIN_REF, "Add usage notes", {"docs/usage.txt": usage}))
    hello += b'\n\ndef farewell(name):\n    return "Goodbye, " + name\n'
    main.append(stream.commit(MAIN_REF, "Add farewell function", {"src/hello.py": hello}))
    main.append(
        stream.commit(MAIN_REF, "Add changelog", {"CHANGELOG.md": b"## 1.0\n\n- greet\n- farewell\n"})
    )
    usage += b"Call greet() or farewell().\n"
    main.append(stream.commit(MAIN_REF, "Document farewell", {"docs/usage.txt": usage}))
    main.append(
        stream.commit(MAIN_REF, "Add .gitignore", {".gitignore": b"__pycache__/\n*.pyc\n"})
    )

    # The feature branch starts at M8 and main moves on to M10, so merging
    # feature into main needs a real two-parent merge commit.
    feature = [
        stream.commit(
            FEATURE_REF,
            "Add shout function",
            {"src/shout.py": shout},
            parents=(main[7],),
            author=BOB,
        ),
    ]
    feature.append(
        stream.commit(FEATURE_REF, "Test shout function", {"tests/test_shout.py": shout_test}, author=BOB)
    )
    main.append(
        stream.commit(MAIN_REF, "Add license note", {"LICENSE.txt": b"Public domain.\n"})
    )
    readme += b"See LICENSE.txt.\n"
    main.append(stream.commit(MAIN_REF, "Note the license in README", {"README.md": readme}))
    # The merge lists the files from feature, because fast-import builds the
    # merge tree from the first parent only.
    main.append(
        stream.commit(
            MAIN_REF,
            "Merge branch 'feature'",
            {"src/shout.py": shout, "tests/test_shout.py": shout_test},
            parents=(main[9], feature[1]),
        )
    )
    main.append(
        stream.commit(
            MAIN_REF,
            "Add shout to changelog",
            {"CHANGELOG.md": b"## 1.1\n\n- shout\n\n## 1.0\n\n- greet\n- farewell\n"},
        )
    )

    # The diverged branch forks at M7 and has its own commits, so neither
    # tip is an ancestor of the other.
    diverged = [
        stream.commit(
            DIVERGED_REF,
            "Rewrite README for a fork",
            {"README.md": b"# sample fork\n"},
            parents=(main[6],),
            author=BOB,
        ),
    ]
    diverged.append(
        stream.commit(DIVERGED_REF, "Remove usage notes", {"docs/usage.txt": None}, author=BOB)
    )
    diverged.append(
        stream.commit(
            DIVERGED_REF,
            "Change the greeting",
            {"src/hello.py": b'def greet(name):\n    return "Hi, " + name\n'},
            author=BOB,
        )
    )

    stream.reset(LIGHT_TAG_REF, main[3])
    stream.annotated_tag(ANNOTATED_TAG_REF.removeprefix("refs/tags/"), main[5], "Release 1.0\n")

    marks = {"big_blob": stream.blob(generate_big_bytes())}
    marks["big"] = stream.commit(
        BIG_REF,
        "Add a 3 MiB binary file",
        {BIG_FILE_PATH: marks["big_blob"]},
        parents=(main[-1],),
    )

    marks["main"] = main[-1]
    marks["main_parent"] = main[-2]
    marks["merge"] = main[-2]
    marks["merge_first_parent"] = main[9]
    marks["feature"] = feature[-1]
    marks["diverged"] = diverged[-1]
    marks["diverged_base"] = main[6]
    marks["light_tag_target"] = main[3]
    marks["annotated_tag_target"] = main[5]
    marks["root"] = main[0]
    return marks


def _git_env() -> dict[str, str]:
    # GIT_DIR, GIT_INDEX_FILE and similar variables are set when this runs
    # from a git hook, and they would redirect the commands below.
    return {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


def _run_git(args: list[str], stdin: bytes | None = None) -> str:
    result = subprocess.run(
        ["git", *args], input=stdin, capture_output=True, env=_git_env()
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed with exit code {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode()


def _read_marks(path: pathlib.Path) -> dict[int, str]:
    marks = {}
    for line in path.read_text().splitlines():
        mark, object_id = line.split()
        marks[int(mark.removeprefix(":"))] = object_id
    return marks


def build_sample(dest: pathlib.Path) -> dict:
    """Create the sample bare repository at `dest` and return its ids.

    `dest` itself becomes the bare repository. It must not exist or must be
    an empty directory, and FileExistsError is raised otherwise. RuntimeError
    is raised when a git command fails, and `dest` may then be left partly
    built.

    The returned dict contains:

    - "path": `dest` as a string.
    - Commit ids "main" (tip), "main_parent", "merge" (equal to main_parent),
      "merge_first_parent", "feature", "diverged", "diverged_base" (the
      merge base of diverged and main), "big" and "root".
    - "big_blob", "big_path" and "big_size" for the 3 MiB blob that "big" adds.
    - Ref names "main_ref", "feature_ref", "diverged_ref", "big_ref",
      "light_tag_ref" and "annotated_tag_ref".
    - "light_tag_target", "annotated_tag_object" (the tag object id) and
      "annotated_tag_target" (the commit it points to).
    - "refs": every ref name mapped to its id, as `git for-each-ref` lists it.
    """
    dest = pathlib.Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(
            f"{dest} already exists and is not an empty directory. "
            "Remove it or choose another destination."
        )

    _run_git(
        ["init", "--quiet", "--bare", "--initial-branch=main", "--object-format=sha1", str(dest)]
    )

    stream = StreamWriter()
    marks = write_history(stream)
    with tempfile.TemporaryDirectory() as tmp:
        marks_file = pathlib.Path(tmp) / "marks"
        _run_git(
            [
                "--git-dir", str(dest),
                "fast-import", "--quiet", f"--export-marks={marks_file}",
            ],
            stdin=stream.finish(),
        )
        ids_by_mark = _read_marks(marks_file)

    refs = {}
    for line in _run_git(
        ["--git-dir", str(dest), "for-each-ref", "--format=%(refname) %(objectname)"]
    ).splitlines():
        name, object_id = line.split()
        refs[name] = object_id

    result: dict = {"path": str(dest)}
    result.update({name: ids_by_mark[mark] for name, mark in marks.items()})
    result.update(
        {
            "big_path": BIG_FILE_PATH,
            "big_size": BIG_FILE_SIZE,
            "main_ref": MAIN_REF,
            "feature_ref": FEATURE_REF,
            "diverged_ref": DIVERGED_REF,
            "big_ref": BIG_REF,
            "light_tag_ref": LIGHT_TAG_REF,
            "annotated_tag_ref": ANNOTATED_TAG_REF,
            "annotated_tag_object": refs[ANNOTATED_TAG_REF],
            "refs": refs,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the sample bare repository for the gitsrv tests "
        "and print its object ids as JSON."
    )
    parser.add_argument(
        "dest_dir",
        metavar="DEST_DIR",
        type=pathlib.Path,
        help="directory to create the repository in (created if missing)",
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help=f"folder name of the bare repository inside DEST_DIR (default: {DEFAULT_NAME})",
    )
    args = parser.parse_args(argv)

    if args.name in ("", ".", "..") or "/" in args.name or os.sep in args.name:
        parser.error(f"invalid --name {args.name!r}: expected a single folder name such as {DEFAULT_NAME}")

    try:
        result = build_sample(args.dest_dir / args.name)
    except (FileExistsError, RuntimeError) as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
