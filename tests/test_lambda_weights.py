"""λ-equitune runs record λ's weights relative to the upright view (the λ-weights figure)."""

import json

import pytest
import torch

from equiv.experiments.image_classification.protocol import lambda_weight_summary
from equiv.groups import rot90
from equiv.runner import execute
from tests.helpers import TINY, compose_config


class FixedLambda(torch.nn.Module):
    """A stand-in λ-equitune: weight 0.55 on view 1 (``1·x``), 0.15 on the others."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def lambda_weights(self, x):
        w = torch.full((len(x), self.action.order), 0.15)
        w[:, 1] = 0.55
        return w


def test_summary_indexes_views_relative_to_the_upright_one(monkeypatch):
    import equiv.experiments.image_classification.protocol as protocol

    monkeypatch.setattr(protocol, "LambdaEquitune", FixedLambda)
    rot = rot90()
    g = torch.tensor([3, 3, 0, 2])          # view 1 undoes g = 3 (1·3 = 0 in C4)
    summary = lambda_weight_summary(FixedLambda(rot), torch.zeros(4, 1, 4, 4), g, rot, 3,
                                    torch.device("cpu"))
    # images 0, 1: the upright view gets 0.55; image 2: relative view 1; image 3: view 3.
    assert summary["relative_mean"] == pytest.approx([0.35, 0.25, 0.15, 0.25])
    assert summary["images"] == 4
    assert summary["upright_histogram"]["counts"] == [0, 2, 0, 0, 0, 2, 0, 0, 0, 0]
    assert summary["upright_histogram"]["edges"] == pytest.approx([i / 10 for i in range(11)])


@pytest.mark.parametrize("method", ["lambda_equitune", "equitune"])
def test_tiny_digits_run_records_lambda_weights(tmp_path, method):
    cfg = compose_config(*TINY, f"method={method}", tmp=tmp_path)
    results = json.loads(execute(cfg, tmp_path / "run").results_path.read_text())
    if method != "lambda_equitune":
        assert "lambda_weights" not in results
        return
    summary = results["lambda_weights"]
    assert len(summary["relative_mean"]) == 4
    # Each row of float32 weights sums to 1 within a few float32 ulps (~1e-7), on any CPU.
    assert sum(summary["relative_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= w <= 1.0 for w in summary["relative_mean"])
    assert sum(summary["upright_histogram"]["counts"]) == summary["images"] > 0
