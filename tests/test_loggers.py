"""Loggers: W&B mode selection, failure isolation and the logger factory, using a fake wandb."""

import sys
import types

import pytest

from equiv import loggers as L

RUN_CONFIG = {
    "exp_name": "exp1",
    "seed": 0,
    "task": {"name": "image_classification"},
    "method": {"name": "equizero"},
}


class FakeRun:
    def __init__(self, fail_log: bool = False) -> None:
        self.logged: list[tuple[dict, int | None]] = []
        self.summary_data: dict = {}
        self.finished = 0
        self.fail_log = fail_log
        self.summary = types.SimpleNamespace(update=self.summary_data.update)

    def log(self, metrics, step=None):
        if self.fail_log:
            raise ConnectionError("server gone")
        self.logged.append((metrics, step))

    def finish(self):
        self.finished += 1


def make_fake_wandb(run: FakeRun | None = None, init_error: Exception | None = None):
    fake = types.SimpleNamespace(calls=[], run=run or FakeRun())

    def init(**kwargs):
        fake.calls.append(kwargs)
        if init_error is not None:
            raise init_error
        return fake.run

    fake.init = init
    return fake


@pytest.fixture
def no_wandb_env(monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)


def _logger(tmp_path, mode=None) -> L.WandbLogger:
    return L.WandbLogger(
        project="p",
        entity=None,
        group="g",
        tags=["t"],
        config={"a": 1},
        run_dir=tmp_path,
        name="n",
        mode=mode,
    )


def test_offline_when_no_api_key(tmp_path, monkeypatch, capsys, no_wandb_env):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: False)
    logger = _logger(tmp_path)
    (kwargs,) = fake.calls
    assert kwargs["mode"] == "offline"
    assert kwargs["dir"] == str(tmp_path)
    assert kwargs["project"] == "p" and kwargs["group"] == "g" and kwargs["name"] == "n"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "offline" in err and "wandb sync" in err
    assert logger.active


def test_online_default_when_key_present(tmp_path, monkeypatch, capsys, no_wandb_env):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: True)
    _logger(tmp_path)
    assert "mode" not in fake.calls[0]
    assert capsys.readouterr().err == ""


def test_explicit_mode_argument(tmp_path, monkeypatch, no_wandb_env):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: False)
    _logger(tmp_path, mode="disabled")
    assert fake.calls[0]["mode"] == "disabled"


@pytest.mark.parametrize("env_mode", ["disabled", "offline"])
def test_wandb_mode_env_honoured(tmp_path, monkeypatch, capsys, no_wandb_env, env_mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: False)
    _logger(tmp_path, mode="online")
    assert "mode" not in fake.calls[0]
    assert capsys.readouterr().err == ""


def test_online_init_failure_falls_back_to_offline(tmp_path, monkeypatch, capsys, no_wandb_env):
    fake = make_fake_wandb()
    first = fake.init

    def init(**kwargs):
        if kwargs.get("mode") != "offline":
            fake.calls.append(kwargs)
            raise RuntimeError("no network")
        return first(**kwargs)

    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: True)
    logger = _logger(tmp_path)
    err = capsys.readouterr().err
    assert err.startswith("warning: W&B initialisation failed (RuntimeError: no network); "
                          "logging offline instead. upload later with: wandb sync ")
    assert err.count("\n") == 1
    assert [c.get("mode") for c in fake.calls] == [None, "offline"]
    assert logger.active
    logger.log_metrics({"loss": 1.0}, step=0)
    assert fake.run.logged == [({"loss": 1.0}, 0)]


def test_init_failure_is_non_fatal(tmp_path, monkeypatch, capsys, no_wandb_env):
    fake = make_fake_wandb(init_error=RuntimeError("no network"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: True)
    logger = _logger(tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "warning: W&B initialisation failed (RuntimeError: no network); continuing without W&B"
    )
    assert [c.get("mode") for c in fake.calls] == [None, "offline"]   # offline was tried too
    assert not logger.active
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_summary({"acc": 0.5})
    logger.finish()
    assert fake.run.logged == [] and fake.run.finished == 0
    assert capsys.readouterr().err == ""


def test_missing_wandb_package_is_non_fatal(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    logger = _logger(tmp_path)
    assert "W&B initialisation failed" in capsys.readouterr().err
    logger.log_metrics({"x": 1.0})
    logger.finish()


def test_log_failure_warns_once(tmp_path, monkeypatch, capsys, no_wandb_env):
    run = FakeRun(fail_log=True)
    fake = make_fake_wandb(run=run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: True)
    logger = _logger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.log_summary({"acc": 0.5})
    logger.finish()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "ConnectionError: server gone" in err
    assert run.finished == 0 and run.summary_data == {}


def test_log_summary_finish_forwarded(tmp_path, monkeypatch, no_wandb_env):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: True)
    logger = _logger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.log_summary({"acc": 0.5})
    logger.finish()
    logger.finish()  # idempotent
    assert fake.run.logged == [({"loss": 1.0}, 3)]
    assert fake.run.summary_data == {"acc": 0.5}
    assert fake.run.finished == 1


def test_has_api_key_sources(tmp_path, monkeypatch, no_wandb_env):
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert not L._has_api_key()
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert L._has_api_key()
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    monkeypatch.setenv("WANDB_API_KEY", "y" * 40)
    assert L._has_api_key()


def test_make_logger_wandb_tags_and_group(tmp_path, monkeypatch, no_wandb_env):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(L, "_has_api_key", lambda: True)
    logger = L.make_logger(
        {"name": "wandb", "tags": ["mine", "equizero"], "group": None}, RUN_CONFIG, tmp_path
    )
    assert isinstance(logger, L.WandbLogger)
    (kwargs,) = fake.calls
    assert kwargs["tags"] == ["mine", "equizero", "image_classification"]
    assert kwargs["group"] == "exp1"
    assert kwargs["project"] == "equiv"
    assert kwargs["config"] == RUN_CONFIG


def test_make_logger_none():
    assert isinstance(L.make_logger({"name": "none"}, RUN_CONFIG, None), L.NullLogger)


def test_make_logger_unknown():
    with pytest.raises(ValueError, match="none, wandb"):
        L.make_logger({"name": "tensorboard"}, RUN_CONFIG, None)


def test_real_wandb_disabled(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = L.make_logger({"name": "wandb", "project": "equiv-test"}, RUN_CONFIG, tmp_path)
    assert isinstance(logger, L.WandbLogger) and logger.active
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.log_summary({"test_accuracy": 0.9})
    logger.finish()
    assert not logger.active
