"""The README's commands stay true: CI runs exactly the README's test command,
and every experiment the README names exists."""

import re
from pathlib import Path

from vit16.config import load_tables
from vit16.experiment import DEFAULT_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = 'pip install -e ".[dev]" && python -m pytest -q'


def test_ci_runs_the_readme_test_command():
    assert f"    {TEST_COMMAND}\n" in README
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert TEST_COMMAND in ci_lines


def test_quick_start_command():
    assert "    pip install -e . && python train.py quick\n" in README


def test_experiments_named_in_readme_exist():
    tables = load_tables(DEFAULT_EXPERIMENTS)
    section = README.split("## Experiments", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M))
    named |= set(re.findall(r"python train\.py (?:--[a-z-]+ )*([a-z][a-z0-9_]+)", README))
    assert {"quick", "small_vit_cifar"} <= named
    assert named <= set(tables), f"README names unknown experiments: {named - set(tables)}"
