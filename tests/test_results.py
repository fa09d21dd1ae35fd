"""results.json: schema content, JSON conversion, atomic writes and completeness checks."""

import json
import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from equiv import results as R
from equiv.errors import WriteError


def _config() -> dict:
    return {
        "seed": 3,
        "exp_name": "unit",
        "task": {"name": "image_classification"},
        "method": {"name": "equitune"},
        "backbone": {"name": "resnet50"},
        "group": {"name": "rot90"},
    }


def test_build_results_fields():
    started = 1_700_000_000.0
    res = R.build_results(
        config=_config(),
        metrics={"test_accuracy": np.float32(0.75), "loss": float("nan")},
        curves={"test_accuracy": [{"step": 0, "value": torch.tensor(0.5)}]},
        started_at=started,
        wall_time_s=12.5,
        device="cpu",
        extra={"notes": "x"},
    )
    assert res["schema_version"] == R.SCHEMA_VERSION
    assert res["status"] == "complete"
    assert (res["task"], res["method"], res["backbone"], res["group"]) == (
        "image_classification",
        "equitune",
        "resnet50",
        "rot90",
    )
    assert res["seed"] == 3
    assert res["pretrained"] is True
    assert res["metrics"] == {"test_accuracy": 0.75, "loss": None}
    assert res["curves"]["test_accuracy"] == [{"step": 0, "value": 0.5}]
    assert res["config"]["exp_name"] == "unit"
    assert res["device"] == "cpu"
    assert res["wall_time_s"] == 12.5
    assert res["notes"] == "x"
    parsed = datetime.fromisoformat(res["started_at"])
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
    assert parsed.timestamp() == started
    assert {"python", "torch"} <= set(res["versions"])
    assert res["git_sha"] is None or len(res["git_sha"]) == 40
    assert res["git_dirty"] in (None, True, False)
    json.dumps(res, allow_nan=False)  # fully serialisable


def test_build_results_respects_pretrained_flag():
    cfg = _config()
    cfg["backbone"]["pretrained"] = False
    res = R.build_results(
        config=cfg, metrics={}, curves={}, started_at=0.0, wall_time_s=0.0, device="cpu"
    )
    assert res["pretrained"] is False


def test_to_jsonable_scalars_and_non_finite():
    obj = {
        "np_int": np.int64(4),
        "np_bool": np.bool_(True),
        "np_float": np.float64(1.5),
        "torch_scalar": torch.tensor(2.0),
        "torch_int": torch.tensor(7),
        "nan": float("nan"),
        "inf": np.float32("inf"),
        "neg_inf": torch.tensor(-math.inf),
        "nested": [(1, np.float16(0.5)), {"p": Path("a/b")}],
        "array": np.array([1.0, np.nan]),
    }
    out = R.to_jsonable(obj)
    assert out == {
        "np_int": 4,
        "np_bool": True,
        "np_float": 1.5,
        "torch_scalar": 2.0,
        "torch_int": 7,
        "nan": None,
        "inf": None,
        "neg_inf": None,
        "nested": [[1, 0.5], {"p": "a/b"}],
        "array": [1.0, None],
    }
    assert type(out["np_int"]) is int and type(out["np_float"]) is float
    json.dumps(out, allow_nan=False)


def test_package_versions_has_python_and_torch():
    versions = R.package_versions()
    assert str(torch.__version__).startswith(versions["torch"])
    assert versions["python"].count(".") == 2


def test_git_helpers_outside_checkout(tmp_path):
    assert R.git_sha(tmp_path) is None
    assert R.git_dirty(tmp_path) is None


def test_write_and_read_roundtrip(tmp_path):
    path = R.write_results(tmp_path, {"status": "complete", "metrics": {"a": 1}})
    assert path == tmp_path / R.RESULTS_FILE
    assert R.read_results(tmp_path) == {"status": "complete", "metrics": {"a": 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [R.RESULTS_FILE]


def test_write_creates_missing_directory(tmp_path):
    run_dir = tmp_path / "a" / "b"
    R.write_results(run_dir, {"status": "complete", "metrics": {}})
    assert R.is_complete(run_dir)


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    R.write_results(tmp_path, {"status": "complete", "metrics": {"old": 1}})
    before = (tmp_path / R.RESULTS_FILE).read_bytes()

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError, match=r"\(disk on fire\); the run's results are not saved"):
        R.write_results(tmp_path, {"status": "complete", "metrics": {"new": 2}})
    assert (tmp_path / R.RESULTS_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [R.RESULTS_FILE]


def test_failed_replace_leaves_nothing_when_absent(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError):
        R.write_results(tmp_path, {"status": "complete", "metrics": {}})
    assert list(tmp_path.iterdir()) == []
    assert not R.is_complete(tmp_path)


def test_failed_serialisation_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        R.write_results(tmp_path, {"status": "complete", "metrics": {"x": float("nan")}})
    assert list(tmp_path.iterdir()) == []


def test_is_complete_missing(tmp_path):
    assert not R.is_complete(tmp_path)
    assert R.read_results(tmp_path) is None


def test_is_complete_truncated(tmp_path):
    text = json.dumps({"status": "complete", "metrics": {"a": 1.0}}, indent=2)
    (tmp_path / R.RESULTS_FILE).write_text(text[: len(text) // 2])
    assert R.read_results(tmp_path) is None
    assert not R.is_complete(tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        {"status": "running", "metrics": {"a": 1.0}},
        {"status": "complete"},
        {"status": "complete", "metrics": None},
        ["complete"],
    ],
)
def test_is_complete_rejects_bad_content(tmp_path, data):
    (tmp_path / R.RESULTS_FILE).write_text(json.dumps(data))
    assert not R.is_complete(tmp_path)


def test_is_complete_good_file(tmp_path):
    res = R.build_results(
        config=_config(),
        metrics={"test_accuracy": 0.9},
        curves={},
        started_at=0.0,
        wall_time_s=1.0,
        device="cpu",
    )
    R.write_results(tmp_path, res)
    assert R.is_complete(tmp_path)
    assert R.read_results(tmp_path) == res
