"""Docs that cannot go stale (#13.7): the README's configuration table is generated from
pipeline.config.SETTINGS, and the dev-loop commands it shows exist in the Makefile.

    python -m tests.unit.test_docs      # rewrite README.md's configuration table from SETTINGS

(The README's bad-input table is checked the same way by tests/test_bad_input.py, against its CASES.)
"""

from __future__ import annotations

import configparser
import re
import sys

from pipeline.config import _KNOWN_KEYS, MONTHS_SECTION, PIPELINE_SECTION, SETTINGS
from pipeline.schema import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
MAKEFILE = PROJECT_ROOT / "Makefile"
README_START = (
    "<!-- configuration table: generated from pipeline.config.SETTINGS (python -m tests.unit.test_docs) -->\n"
)
README_END = "<!-- end of configuration table -->"
STALE = "README.md's configuration table differs from pipeline.config.SETTINGS: run python -m tests.unit.test_docs"


def render_table() -> str:
    rows = [
        f"| `[{PIPELINE_SECTION}] {s.key}` | {f'`{s.default}`' if s.default else ''} | {s.meaning} |" for s in SETTINGS
    ]
    rows.append(f"| `[{MONTHS_SECTION}] YYYY-MM-DD` | | drop folder of that as_of |")
    return "| key | default | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def render_readme(text: str) -> str:
    before, _, rest = text.partition(README_START)
    _, _, after = rest.partition(README_END)
    return before + README_START + render_table() + README_END + after


def readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    assert README_START in text and README_END in text, "README.md has no generated configuration table"
    return text.partition(README_START)[2].partition(README_END)[0]


def test_every_setting_is_in_the_readme_table_and_every_row_is_a_setting():
    documented = set(re.findall(rf"^\| `\[{PIPELINE_SECTION}\] (\w+)`", readme_table(), flags=re.MULTILINE))
    assert documented - _KNOWN_KEYS == set(), f"README documents keys the code does not read. {STALE}"
    assert _KNOWN_KEYS - documented == set(), f"README lacks keys the code reads. {STALE}"


def test_the_readme_configuration_table_is_generated_from_settings():
    assert readme_table() == render_table(), STALE


def test_the_repository_luigi_cfg_sets_only_declared_keys_with_valid_values():
    config = configparser.RawConfigParser()
    config.read(PROJECT_ROOT / "luigi.cfg", encoding="utf-8")
    parsers = {s.key: s.parse for s in SETTINGS}
    for key, value in config.items(PIPELINE_SECTION):
        assert key in parsers, f"luigi.cfg [{PIPELINE_SECTION}] {key} is not declared in pipeline.config.SETTINGS"
        parsers[key](value)


def test_every_make_target_the_readme_shows_exists():
    targets = set(re.findall(r"^([a-z-]+):", MAKEFILE.read_text(encoding="utf-8"), flags=re.MULTILINE))
    shown = set(re.findall(r"\bmake ([a-z-]+)", README.read_text(encoding="utf-8")))
    assert shown, "README.md shows no make command"
    assert shown <= targets, f"README.md shows make targets the Makefile lacks: {sorted(shown - targets)}"


if __name__ == "__main__":
    README.write_text(render_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote the configuration table of {README.name} ({len(SETTINGS)} settings)", file=sys.stderr)


def test_the_readmes_layout_names_every_module_of_the_package_and_nothing_else():
    """The README's "Layout of pipeline/" list and the package's modules agree (#13.7)."""
    import re

    text = README.read_text(encoding="utf-8")
    layout = text.partition("Layout of `pipeline/`")[2].partition("Besides `pipeline/`")[0]
    named = set(re.findall(r"`([a-z_]+)/?`", layout)) - {"pipeline"}
    package = PROJECT_ROOT / "pipeline"
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
    modules |= {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules |= {p.stem for p in (package / "pg").glob("*.py") if not p.stem.startswith("__")}
    assert named == modules, f"README lacks {sorted(modules - named)}; README names {sorted(named - modules)}"


def test_the_readmes_flow_diagram_follows_the_order_the_code_reaches_its_stages():
    """Each step of the diagram at the top of the README is a failpoint the month reaches (see
    pipeline/failpoints.py), and the diagram names them in the order the code reaches them."""
    from pipeline.failpoints import POINTS

    diagram = README.read_text(encoding="utf-8").partition("```\ndrop/*.csv")[2].partition("```")[0]
    steps = {"─stage─": "staged", "─merge─": "merged", "─Soda checks─": "checked", "transaction ─": "committed"}
    steps["lake/snapshots"] = "lake_half_written"
    steps["run record"] = "manifest_written"
    assert all(label in diagram for label in steps), diagram
    in_diagram = sorted(steps, key=diagram.index)
    assert [steps[label] for label in in_diagram] == [p for p in POINTS if p in steps.values()]
