"""TrainState, the one resumable state of every training loop: an exact round trip through its
file, the random states (CUDA's too, faked here), and the files it refuses or ignores. The loops
themselves are killed and resumed end to end in tests/test_reliability.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import equiv.train_state as train_state
from equiv.errors import CheckpointError, NonFiniteLossError
from equiv.train_state import FORMAT, TrainState
from equiv.training import IndexBatches

X, Y = torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3


def make_state(seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(seed)
    return TrainState({"model": model, "optimizer": torch.optim.Adam(model.parameters()),
                       "generator": gen, "batches": IndexBatches(len(X), 8, gen)},
                      {"curve": []})


def train(state: TrainState, steps: int) -> None:
    """Steps that consume every random source: data order, a generator draw, dropout."""
    model, optimizer = state.parts["model"], state.parts["optimizer"]
    for _ in range(steps):
        idx = next(state.parts["batches"])
        noise = torch.randn(len(idx), 6, generator=state.parts["generator"])
        loss = F.cross_entropy(model(X[idx] + noise), Y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state.step += 1
        state.progress["curve"].append({"step": state.step, "value": loss.item()})


def test_a_saved_state_resumes_exactly(tmp_path):
    path = tmp_path / "progress.pt"
    reference = make_state()
    train(reference, 7)
    reference.save(path, "cfg")
    train(reference, 9)

    resumed = make_state(seed=1)                     # other weights, other random streams
    assert resumed.resume(path, "cfg")
    assert resumed.step == 7 and len(resumed.progress["curve"]) == 7
    train(resumed, 9)
    assert resumed.progress == reference.progress
    for key, value in reference.parts["model"].state_dict().items():
        assert torch.equal(resumed.parts["model"].state_dict()[key], value)


def test_nothing_to_resume_and_files_it_will_not_resume(tmp_path, capsys):
    path = tmp_path / "progress.pt"
    state = make_state()
    assert not state.resume(path, "cfg")                       # no file
    state.save(path, "cfg")
    assert not make_state().resume(path, "other")              # another config's
    assert "written by a different config" in capsys.readouterr().err
    assert not make_state().resume(path, "cfg", force=True)    # force starts over
    torch.save({"config": "cfg", "step": 3, "model": {}}, path)   # the layout before FORMAT 2
    assert not make_state().resume(path, "cfg")
    assert f"older version of equiv (progress format 1, now {FORMAT})" in capsys.readouterr().err
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="delete it or rerun with force=true"):
        make_state().resume(path, "cfg")


def test_non_finite_weights_never_replace_the_last_good_file(tmp_path):
    path = tmp_path / "progress.pt"
    state = make_state()
    state.save(path, "cfg")
    with torch.no_grad():
        state.parts["model"][0].weight[0, 0] = float("nan")
    state.step = 5
    with pytest.raises(NonFiniteLossError, match=r"model: 0\.weight\) after step 5"):
        state.save(path, "cfg")
    assert torch.load(path, weights_only=True)["step"] == 0


def test_cuda_random_states_are_saved_and_restored(tmp_path, monkeypatch):
    """Every loop saves through TrainState, so each restores CUDA's random state when CUDA is
    in use (the SCAN loops did not before TrainState); faked, as CI has no GPU."""
    cuda_state = [torch.arange(4, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    path = tmp_path / "progress.pt"
    make_state().save(path, "cfg")
    assert make_state().resume(path, "cfg")
    assert len(restored) == 1 and torch.equal(restored[0][0], cuda_state[0])
    assert train_state.rng_states()["cuda"] is cuda_state
