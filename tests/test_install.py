"""`pip install <checkout>` (not editable) adds one top-level package, `solder`, and that copy works alone."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".solder_cache", "tests",
                              "benchmarks", "examples", ".whl", ".gl")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The checkout installed into an empty target folder, built from a copy so the checkout stays clean."""
    tmp = tmp_path_factory.mktemp("install")
    src, target = tmp / "src", tmp / "site"
    shutil.copytree(ROOT, src, ignore=SKIP)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--no-build-isolation", "--no-compile", "--target", str(target), str(src)],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return target


def test_one_top_level_package(installed):
    dist = next(importlib.metadata.distributions(path=[str(installed)]))
    assert dist.metadata["Name"] == "solder"
    tops = {pathlib.PurePosixPath(str(f)).parts[0] for f in dist.files}
    tops -= {f"solder-{dist.version}.dist-info", "bin", ".."}  # metadata, console scripts
    assert tops == {"solder"}, f"site-packages would hold {sorted(tops)}"
    for sub in ("compiler", "passes", "costmodel", "backends", "compiler/dialects", "backends/triton/templates"):
        assert (installed / "solder" / sub / "__init__.py").is_file(), sub
    assert list((installed / "solder" / "costmodel" / "shipped").glob("*/card.json")), "shipped cost models missing"


def test_installed_copy_compiles_from_outside_the_checkout(installed, tmp_path):
    code = ("import solder, torch; m = torch.nn.Linear(4, 4).eval(); x = torch.randn(2, 4)\n"
            "import solder.api as api; assert api.__file__.startswith(%r), api.__file__\n"
            "torch.testing.assert_close(solder.compile(m, target='cpu')(x), m(x)); print('ok')" % str(installed))
    env = {**os.environ, "PYTHONPATH": str(installed)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
