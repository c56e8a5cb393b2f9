"""The golden-test collector fails a file whose CHECK lines are never handed to filecheck."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    (tmp_path / "tests" / "filecheck").mkdir(parents=True)
    shutil.copy(HERE / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "filecheck" / "case.mlir").write_text(text)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "tests")],
                          capture_output=True, text=True, cwd=tmp_path)


def test_checks_without_filecheck_fail(tmp_path):
    p = _run(tmp_path, "// RUN: cat %s\n// CHECK: anything\n")
    assert p.returncode == 1 and "no RUN line pipes into filecheck" in p.stdout


def test_a_failing_check_fails(tmp_path):
    p = _run(tmp_path, "// RUN: echo hello | filecheck %s\n// CHECK: goodbye\n")
    assert p.returncode == 1 and "1 failed" in p.stdout


def test_a_passing_check_passes(tmp_path):
    p = _run(tmp_path, "// RUN: echo hello | filecheck %s\n// CHECK: hello\n")
    assert p.returncode == 0, p.stdout
