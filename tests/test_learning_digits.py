"""On real data the methods must visibly work: the rot90 digits protocol at reduced budgets.

What is asserted is what the committed runs show (results/tables/digits_rot90.md), with margins:
rotation wrecks the pretrained CNN, λ-equitune's λ phase alone recovers most of it, and
finetuning the symmetrized model beats finetuning the plain one on rotated data.
"""

import json

import pytest

from equiv.runner import execute
from tests.helpers import compose_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learning")

    def _run(method, *overrides):
        cfg = compose_config(f"method={method}", "task.finetune.steps=150",
                             "task.finetune.eval_every=150", *overrides, tmp=tmp)
        report = execute(cfg, tmp / "runs" / method)
        return json.loads(report.results_path.read_text())["metrics"]

    return _run


def test_symmetrized_finetuning_beats_plain_finetuning(run):
    vanilla = run("vanilla")
    equitune = run("equitune")
    lam = run("lambda_equitune")
    assert vanilla["upright_accuracy"] > 0.95
    assert vanilla["zeroshot_accuracy"] < vanilla["upright_accuracy"] - 0.4
    assert lam["lambda_phase_accuracy"] > vanilla["zeroshot_accuracy"] + 0.3
    assert equitune["finetuned_accuracy"] > vanilla["finetuned_accuracy"] + 0.05
    assert lam["finetuned_accuracy"] > vanilla["finetuned_accuracy"] + 0.05
    for m in (equitune, lam):
        assert m["zeroshot_invariance_error"] < 1e-4 and m["finetuned_invariance_error"] < 1e-4
