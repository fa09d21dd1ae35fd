"""The README's Library snippet runs as written and builds an invariant model.

The python block under ``## Library`` in README.md is executed as it stands (its own
``assert_invariant``/``assert_equivariant`` calls included); then the last model it builds is
checked again here, in the mode the snippet leaves it in (eval or train), with the same random
state for ``x`` and every ``g·x`` so that dropout, if on, draws the same masks for both.
"""

from __future__ import annotations

import re

import torch

from equiv.methods import Symmetrizer
from tests.helpers import ROOT


def library_snippet() -> str:
    """The first python code block after the ``## Library`` heading of README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    return code


def test_readme_library_snippet_runs_and_its_model_is_invariant():
    dtype = torch.get_default_dtype()
    state = torch.get_rng_state()
    namespace: dict = {"__name__": "readme_snippet"}
    try:
        exec(compile(library_snippet(), "README.md (Library)", "exec"), namespace)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_rng_state(state)
    model, x = namespace["model"], namespace["x"]
    assert isinstance(model, Symmetrizer) and x.dtype == torch.float64
    action = model.action
    assert action.order == 4 and action.invariant_output

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)                       # same dropout masks for x and g·x, if any
        with torch.no_grad():
            return model(inputs)

    y = forward(x)
    for g in action.elements:
        err = (forward(action.act_in(x, g)) - y).abs().max().item()
        assert err < 1e-10, (g, err, "train" if model.training else "eval")
    backbone_err = max((model.backbone(action.act_in(x, g)) - model.backbone(x)).abs().max().item()
                       for g in action.elements)
    assert backbone_err > 1e-3                     # not vacuous: the CNN alone is not invariant
