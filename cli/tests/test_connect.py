"""Where a command's address, token and TLS files come from: flag, then `ACCORD_*`
variable, then the config file's profile, then the local default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from accord_cli.__main__ import parser
from accord_cli.connect import ConfigError, Connection, resolve

VARIABLES = (
    "ACCORD_ORCHESTRATOR", "ACCORD_POLICY", "ACCORD_POLICY_TARGET", "ACCORD_AUDIT",
    "ACCORD_TOKEN", "ACCORD_TOKEN_FILE", "ACCORD_PROFILE", "ACCORD_CONFIG", "ACCORD_TLS_CA",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .accord/auth/admin.token here


def connection(*argv: str) -> Connection:
    return resolve(parser().parse_args([*argv[:-1], "jobs", "get", argv[-1]]))


def config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_defaults_without_config_or_token() -> None:
    conn = connection("00000000-0000-0000-0000-000000000000")
    assert conn.targets["orchestrator"] == "127.0.0.1:50051"
    assert conn.targets["audit"] == "127.0.0.1:50054"
    assert conn.token is None
    assert conn.metadata() == ()


def test_flag_beats_variable_beats_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.token").write_text("from-profile\n")
    (tmp_path / "f.token").write_text("from-flag\n")
    profile = {
        "orchestrator": "prod:1",
        "policy": "prod:2",
        "token_file": str(tmp_path / "p.token"),
    }
    path = config(tmp_path, {"profiles": {"prod": profile}})
    conn = connection("--config", str(path), "--profile", "prod", "x")
    assert (conn.targets["orchestrator"], conn.token, conn.profile) == (
        "prod:1",
        "from-profile",
        "prod",
    )
    monkeypatch.setenv("ACCORD_ORCHESTRATOR", "env:1")
    monkeypatch.setenv("ACCORD_TOKEN", "from-env")
    conn = connection("--config", str(path), "--profile", "prod", "x")
    assert (conn.targets["orchestrator"], conn.targets["policy"], conn.token) == (
        "env:1", "prod:2", "from-env"
    )  # fmt: skip
    args = parser().parse_args(
        ["--config", str(path), "--profile", "prod", "jobs", "get", "x",
         "--orchestrator", "flag:1", "--token-file", str(tmp_path / "f.token")]
    )  # fmt: skip
    conn = resolve(args)
    assert (conn.targets["orchestrator"], conn.token) == ("flag:1", "from-flag")


def test_default_profile_env_profile_and_the_old_policy_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(
        tmp_path,
        {
            "default_profile": "a",
            "profiles": {"a": {"audit": "a:4", "timeout": 5}, "b": {"audit": "b:4"}},
        },
    )
    monkeypatch.setenv("ACCORD_CONFIG", str(path))
    conn = connection("x")
    assert (conn.targets["audit"], conn.timeout) == ("a:4", 5.0)
    monkeypatch.setenv("ACCORD_PROFILE", "b")
    assert connection("x").targets["audit"] == "b:4"
    monkeypatch.setenv("ACCORD_POLICY_TARGET", "old:2")
    assert connection("x").targets["policy"] == "old:2"


@pytest.mark.parametrize(
    ("document", "profile", "message"),
    [
        (None, "prod", "no config file"),
        ({"profiles": {"a": {}}}, "prod", "no profile 'prod'"),
        ({"profiles": {"a": {"adress": "x"}}}, "a", "unknown keys: adress"),
        ({"other": 1}, "a", "no `profiles:` mapping"),
    ],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, document: object, profile: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    if document is not None:
        path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=message):
        connection("--config", str(path), "--profile", profile, "x")


def test_a_bad_profile_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, {"profiles": {"a": {}}})
    args = parser().parse_args(["--config", str(path), "--profile", "zz", "jobs", "list"])
    assert args.run(args) == 2
    assert "no profile 'zz'" in capsys.readouterr().err


def test_a_named_token_file_must_exist(tmp_path: Path) -> None:
    args = parser().parse_args(["jobs", "list", "--token-file", str(tmp_path / "absent")])
    assert args.run(args) == 2


def test_profile_and_config_may_follow_the_command(tmp_path: Path) -> None:
    path = config(
        tmp_path, {"profiles": {"a": {"orchestrator": "a:1"}, "b": {"orchestrator": "b:1"}}}
    )
    after = parser().parse_args(["jobs", "get", "x", "--config", str(path), "--profile", "a"])
    assert resolve(after).targets["orchestrator"] == "a:1"
    before = parser().parse_args(["--config", str(path), "--profile", "b", "jobs", "get", "x"])
    assert resolve(before).targets["orchestrator"] == "b:1"
