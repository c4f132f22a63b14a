"""Config loading: every YAML in configs/ validates; all problems come in ONE error."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import (
    COMMANDS, PrepareConfig, config_reference_markdown, load_stage_config, parse_override,
    readme_with_reference, validate_config_file,
)
from workbench.errors import ConfigError

from conftest import REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert CONFIGS, "configs/ has no YAML files"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates(path: Path):
    sections = validate_config_file(path)
    assert sections, f"{path} has no stage section"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#") and ("workbench " in first or "make " in first), \
        f"{path}: the first line must be a comment showing the command that runs it"


def test_overrides_and_shared_keys(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("run: runs/x\nseed: 3\nprepare:\n  input: a.txt\n  clean: {min_chars: 2}\n", encoding="utf-8")
    cfg = load_stage_config("prepare", cfg_file, ["clean.urls=false", "dedup.threshold=0.9", "prepare.seed=7"])
    assert isinstance(cfg, PrepareConfig)
    assert cfg.input == ["a.txt"]  # a string becomes a one-element list
    assert cfg.clean.min_chars == 2 and cfg.clean.urls is False and cfg.dedup.threshold == 0.9
    assert cfg.seed == 7 and cfg.run == "runs/x"
    assert cfg.output_path() == Path("runs/x/prepared")
    assert load_stage_config("prepare", None, ["input=[a,b]", "output=o"]).output_path() == Path("o")


def test_one_error_lists_every_problem(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(
        "seeed: 1\n"
        "prepare:\n"
        "  input: a.txt\n"
        "  clean:\n"
        "    urlz: true\n"          # unknown key, close to `urls`
        "    min_chars: lots\n"     # wrong type
        "    max_chars: 2\n"
        "  dedup: {num_perm: 100, bands: 16}\n",  # contradiction (checked once types are fine)
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as e:
        load_stage_config("prepare", cfg_file, ["split.valid_fraction=abc", "nonsense"])
    msg = str(e.value)
    for expected in ("seeed: unknown top-level key (did you mean 'seed'?)",
                     "prepare.clean.urlz: unknown key (did you mean 'urls'?)",
                     "prepare.clean.min_chars: Input should be a valid integer",
                     "prepare.split.valid_fraction",
                     "override 'nonsense' is not of the form key=value",
                     str(cfg_file)):
        assert expected in msg, msg
    assert len(e.value.problems) == 5


def test_contradictions_are_listed_together():
    with pytest.raises(ConfigError) as e:
        load_stage_config("prepare", None, [
            "input=a.csv", "read.header=false", "read.text_field=content",
            "clean.min_chars=10", "clean.max_chars=5", "dedup.num_perm=100",
            "split.valid_fraction=0.6", "split.test_fraction=0.5", "read.encoding=klingon",
        ])
    msg = str(e.value)
    for expected in ("read.header is false", "clean.max_chars (5) is below clean.min_chars (10)",
                     "dedup.bands (16) must divide dedup.num_perm (100)", "nothing is left to train on",
                     "unknown codec 'klingon'"):
        assert expected in msg, msg


def test_missing_input_is_a_config_problem():
    with pytest.raises(ConfigError, match="no corpus given; set prepare.input"):
        load_stage_config("prepare")


def test_yaml_syntax_error_names_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("prepare:\n  input: [a.txt\n  clean: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.yaml.*\n.*not valid YAML at line \d+"):
        load_stage_config("prepare", f)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_stage_config("prepare", "nope.yaml")


@pytest.mark.parametrize("raw,value", [
    ("a=1", 1), ("a=false", False), ("a=null", None), ("a=[x, y]", ["x", "y"]),
    ("a=corpus.txt", "corpus.txt"), ("a=2020-01-01", "2020-01-01"), ("a=", ""), ("a=b=c", "b=c"),
])
def test_parse_override(raw, value):
    assert parse_override(raw) == ("a", value)


def test_every_field_is_documented():
    from workbench.config import iter_fields

    for command, model in COMMANDS.items():
        assert model.__doc__, command
        for name, _, _, doc in iter_fields(model):
            assert doc, f"{command}.{name} has no doc string"


def test_readme_config_reference_is_in_sync():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_with_reference(readme) == readme, "README config reference is stale: run `make docs`"
    assert "`clean.repost_chains`" in config_reference_markdown()
