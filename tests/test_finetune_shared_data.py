"""The finetune configs for ../shared/data read their files cleanly (no training; skips without the data)."""

from __future__ import annotations

import pytest

from conftest import REPO
from workbench.config import load_stage_config
from workbench.errors import InputError
from workbench.stages.finetune import build_label_map, read_records
from workbench.tasks.labels import check_labels


def _cfg(name: str, *overrides: str):
    cfg = load_stage_config("finetune", REPO / "configs" / name, list(overrides))
    for attr in ("train", "valid", "test"):  # paths in configs are relative to the repository root
        if getattr(cfg, attr):
            cfg = cfg.model_copy(update={attr: str(REPO / getattr(cfg, attr))})
    return cfg


@pytest.mark.parametrize("name,labels", [("chnsenticorp.yaml", ["0", "1"]),
                                         ("weibo_emotion.yaml", ["0", "1", "2", "3", "4", "5"])])
def test_classification_configs_read(shared_data, name, labels):
    cfg = _cfg(name)
    train, _ = read_records(cfg.train, cfg)
    lm = build_label_map(train, cfg)
    assert list(lm.labels) == labels and len(train) > 9000
    for path in (cfg.valid, cfg.test):
        records, check = check_labels(read_records(path, cfg)[0], lm)
        assert len(records) > 1000 and not check.unknown


def test_msra_config_needs_and_counts_repairs(shared_data):
    cfg = _cfg("msra_ner.yaml")
    valid, info = read_records(cfg.valid, cfg)  # the smaller file; train is read the same way
    assert info["scheme"] == "bio" and info["repaired"] > 0 and len(valid) > 4000
    assert {t for r in valid for _, _, t in r.spans} == {"PER", "LOC", "ORG"}
    strict = _cfg("msra_ner.yaml", "data.repair=false")
    with pytest.raises(InputError, match="does not continue an entity"):
        read_records(strict.valid, strict)
