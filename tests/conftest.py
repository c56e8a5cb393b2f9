"""pytest set-up: golden `.mlir` tests under tests/filecheck/ are collected and run like lit tests.

Each file's `// RUN:` lines are shell commands with `%s` standing for the file; a file with CHECK
lines whose RUN lines never pipe into `filecheck` fails, so a CHECK can never silently go unchecked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_collect_file(parent, file_path: Path):
    if file_path.suffix == ".mlir" and "filecheck" in file_path.parts:
        return MlirFile.from_parent(parent, path=file_path)
    return None


class MlirFile(pytest.File):
    def collect(self):
        yield MlirItem.from_parent(self, name=self.path.name)


class GoldenFailure(Exception):
    pass


def run_lines(text: str) -> list[str]:
    lines, cur = [], ""
    for line in text.splitlines():
        m = re.match(r"\s*//\s*RUN:\s?(.*)$", line)
        if not m:
            continue
        cur += m.group(1).rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        lines.append(cur)
        cur = ""
    return lines


class MlirItem(pytest.Item):
    def runtest(self):
        text = self.path.read_text()
        runs = run_lines(text)
        if not runs:
            raise GoldenFailure("no RUN line")
        has_checks = re.search(r"//\s*CHECK(-[A-Z]+)?:", text) is not None
        if has_checks and not any("filecheck" in r for r in runs):
            raise GoldenFailure("the file has CHECK lines but no RUN line pipes into filecheck")
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(ROOT))
        for cmd in runs:
            cmd = cmd.replace("%s", str(self.path))
            p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=300)
            if p.returncode != 0:
                raise GoldenFailure(f"RUN: {cmd}\nexit {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n"
                                    f"--- stderr\n{p.stderr[-4000:]}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, GoldenFailure):
            return f"{self.path.name}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"golden: {self.path.name}"


@pytest.fixture(autouse=True)
def _compiled_code_runs(monkeypatch, request):
    """The suite tests the compiled code: the speed guard (which may pick eager on this shared machine) is off
    unless a test is marked `speed_guard`, and a failing compile raises (SOLDER_STRICT) instead of falling back
    to eager unless a test is marked `eager_fallback`."""
    if request.node.get_closest_marker("speed_guard") is None:
        monkeypatch.setenv("SOLDER_SPEED_GUARD", "off")
    if request.node.get_closest_marker("eager_fallback") is None:
        monkeypatch.setenv("SOLDER_STRICT", "1")


@pytest.fixture
def torch_threads():
    """Set torch's thread count in a test; restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def quick_timing(monkeypatch):
    """Cost-model collection that runs each generated kernel once and calls it 10 us: tests of collection check
    its bookkeeping, never numbers that depend on how loaded the machine is."""
    from solder.costmodel import collect

    def once(program, args, device, **_):
        program(args)
        return 1e-5, 1

    monkeypatch.setattr(collect, "time_program", once)
