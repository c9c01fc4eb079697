"""Structure checks on compose.yaml and the Dockerfile: the mistakes `docker compose up` would
only reveal at run time (no Docker engine is needed, nothing is built or started)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shlex
import stat
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from accord_kit import tokens

ROOT = Path(__file__).resolve().parents[1]
ACCORD = ("orchestrator", "policy", "executor", "audit")
INFRA = ("postgres", "nats", "migrate", "auth-init")
AUTH = "/auth"  # where the auth volume is mounted
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# A service that never exits cannot satisfy service_completed_successfully.
ONE_SHOT_RESTARTS = {None, "no", "on-failure"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    found = loaded["services"]
    assert isinstance(found, dict)
    return found


def settings_type(svc: str) -> Any:
    """The service's pydantic Settings class (fails the test if config.py does not exist)."""
    return importlib.import_module(f"accord_{svc}.config").Settings


def default(svc: str, field: str) -> int:
    value = settings_type(svc).model_fields[field].default
    assert isinstance(value, int)
    return value


def accepted_env(svc: str) -> set[str]:
    """Every environment variable the service's Settings reads, upper-cased."""
    settings = settings_type(svc)
    prefix = settings.model_config["env_prefix"].upper()
    names = set()
    for name, info in settings.model_fields.items():
        names.add(prefix + name.upper())
        if isinstance(info.validation_alias, AliasChoices):
            names |= {c.upper() for c in info.validation_alias.choices if isinstance(c, str)}
        elif isinstance(info.validation_alias, str):
            names.add(info.validation_alias.upper())
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def commands(service: dict[str, Any]) -> list[list[str]]:
    """The service's command as argv lists: one, or one per `&&` step of an `sh -c` script."""
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:2] == ["sh", "-c"]:
        assert len(argv) == 3, f"sh -c takes one script: {argv}"
        return [shlex.split(step) for step in argv[2].split("&&")]
    return [argv]


def console_scripts() -> dict[str, str]:
    """`accord-<svc>` -> the module its `[project.scripts]` entry runs."""
    scripts: dict[str, str] = {}
    for manifest in ROOT.glob("services/*/pyproject.toml"):
        project = tomllib.loads(manifest.read_text())["project"]
        for name, target in project.get("scripts", {}).items():
            scripts[name] = target.split(":")[0]
    return scripts


def entry(argv: list[str]) -> tuple[str, list[str]]:
    """(module run, its arguments) for `python -m <module> ...` or `accord-<svc> ...`."""
    if argv[0] in {"python", "python3"} and argv[1:2] == ["-m"]:
        return argv[2], argv[3:]
    scripts = console_scripts()
    assert argv[0] in scripts, f"not a Python module or console script: {argv}"
    return scripts[argv[0]], argv[1:]


def main_module(module: str) -> str:
    return module if module.endswith(".__main__") else f"{module}.__main__"


def published(port: Any) -> tuple[int, int]:
    """(host port, container port) of one `ports` entry, short or long syntax."""
    if isinstance(port, dict):
        return int(port["published"]), int(port["target"])
    parts = str(port).split("/")[0].split(":")
    assert len(parts) >= 2, f"{port} publishes no fixed host port"
    return int(parts[-2]), int(parts[-1])


def test_every_service_is_defined(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {*ACCORD, *INFRA}


def test_builds_point_at_a_context_and_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    builds = {name: s["build"] for name, s in services.items() if "build" in s}
    assert set(builds) == {*ACCORD, "migrate", "auth-init"}
    for name, build in builds.items():
        spec = {"context": build} if isinstance(build, str) else build
        context = ROOT / spec["context"]
        assert context.is_dir(), f"{name}: no context {context}"
        dockerfile = context / spec.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"


@pytest.mark.parametrize("svc", ACCORD)
def test_service_command_runs_its_module(services: dict[str, dict[str, Any]], svc: str) -> None:
    [argv] = commands(services[svc])
    module, args = entry(argv)
    assert main_module(module) == f"accord_{svc}.__main__"
    assert args in ([], ["serve"])
    assert importlib.util.find_spec(f"accord_{svc}.__main__") is not None


def test_migrate_covers_exactly_the_services_with_migrations(
    services: dict[str, dict[str, Any]],
) -> None:
    migrated = []
    for argv in commands(services["migrate"]):
        module, args = entry(argv)
        assert args == ["migrate"], f"not a migrate step: {argv}"
        assert importlib.util.find_spec(main_module(module)) is not None
        migrated.append(module.removesuffix(".__main__"))
    with_migrations = [p.parent.name for p in ROOT.glob("services/*/src/accord_*/migrations")]
    assert len(migrated) == len(set(migrated)), f"a schema is migrated twice: {migrated}"
    assert sorted(migrated) == sorted(with_migrations)


@pytest.mark.parametrize("svc", ACCORD)
def test_ports_are_the_settings_defaults(services: dict[str, dict[str, Any]], svc: str) -> None:
    ports = [published(p) for p in services[svc].get("ports", [])]
    wanted = {default(svc, "port"), default(svc, "metrics_port")}
    assert {container for _, container in ports} == wanted
    # The README documents these numbers on localhost, so the host side matches too.
    assert all(host == container for host, container in ports)


@pytest.mark.parametrize("svc", ACCORD)
def test_service_listens_on_all_interfaces(services: dict[str, dict[str, Any]], svc: str) -> None:
    assert environment(services[svc]).get(f"ACCORD_{svc.upper()}_HOST") == "0.0.0.0"


@pytest.mark.parametrize("svc", [*ACCORD, "migrate"])
def test_environment_names_real_settings(services: dict[str, dict[str, Any]], svc: str) -> None:
    """Settings ignore unknown variables, so a misspelt one would be silently dropped."""
    env = environment(services[svc])
    modules = [entry(argv)[0] for argv in commands(services[svc])]
    readers = [m.removesuffix(".__main__").removeprefix("accord_") for m in modules]
    accepted = set[str]().union(*(accepted_env(reader) for reader in readers))
    assert {key.upper() for key in env} <= accepted


@pytest.mark.parametrize("svc", ACCORD)
def test_service_is_given_the_page_token_key(services: dict[str, dict[str, Any]], svc: str) -> None:
    """One key for every service, from the operator's environment, so page tokens outlive a
    restart."""
    assert environment(services[svc]).get("ACCORD_PAGE_TOKEN_KEY") == "${ACCORD_PAGE_TOKEN_KEY:-}"


@pytest.mark.parametrize("svc", [*ACCORD, "migrate"])
def test_addresses_name_compose_services(services: dict[str, dict[str, Any]], svc: str) -> None:
    for key, value in environment(services[svc]).items():
        if "://" in value:
            assert urlsplit(value).hostname in services, f"{key}={value}"
        if key.endswith("_TARGET"):
            host, port = value.rsplit(":", 1)
            assert host in ACCORD, f"{key}={value}"
            assert int(port) == default(host, "port"), f"{key}={value}"


@pytest.mark.parametrize("svc", ACCORD)
def test_service_has_a_grpc_healthcheck(services: dict[str, dict[str, Any]], svc: str) -> None:
    check = services[svc].get("healthcheck")
    assert check, f"{svc} has no healthcheck"
    assert not check.get("disable", False)
    test = check["test"]
    assert isinstance(test, list)
    assert test[0] == "CMD"
    assert "HealthStub" in " ".join(test)
    assert test[-1].endswith(f":{default(svc, 'port')}"), "probes the wrong port"


def test_dependencies_exist_and_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec.get("condition", "service_started")
            assert condition in CONDITIONS, f"{name}: {condition}"
            target = services[dependency]
            if condition == "service_healthy":
                assert target.get("healthcheck"), f"{name} waits on {dependency}'s health"
            if condition == "service_completed_successfully":
                assert target.get("restart") in ONE_SHOT_RESTARTS, f"{dependency} never ends"
        if "ACCORD_DATABASE_URL" in environment(service) and name != "migrate":
            assert depends.get("migrate", {}).get("condition") == "service_completed_successfully"


def test_dependencies_have_no_cycle(services: dict[str, dict[str, Any]]) -> None:
    def needs(name: str) -> set[str]:
        # Unknown names are test_dependencies_exist_and_can_be_met's to report.
        return set(services[name].get("depends_on") or ()) & services.keys()

    for start in services:
        seen: set[str] = set()
        todo = list(needs(start))
        while todo:
            current = todo.pop()
            assert current != start, f"{start} depends on itself through {current}"
            if current not in seen:
                seen.add(current)
                todo.extend(needs(current))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each Dockerfile instruction, continuation lines joined."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def copy_sources() -> list[str]:
    """Sources of every COPY/ADD that reads the build context (not another stage)."""
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword not in {"COPY", "ADD"}:
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def ignored(source: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops `source` or one of its parent directories."""
    parts = PurePosixPath(source).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern.removeprefix("**/")
            if any(PurePosixPath(p).match(tail) for p in prefixes):
                return True
        elif any(fnmatchcase(p, pattern.rstrip("/")) for p in prefixes):
            return True
    return False


def test_dockerfile_copies_paths_that_exist() -> None:
    sources = copy_sources()
    assert sources, "the Dockerfile copies nothing from the repo"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    # Negated patterns would need Docker's full matcher; keep the file simple instead.
    assert not any(p.startswith("!") for p in patterns)
    for source in sources:
        exists = (ROOT / source).exists() or any(ROOT.glob(source.rstrip("/")))
        assert exists, f"COPY {source}: no such path"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_image_environment_names_real_settings() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword != "ENV":
            continue
        for pair in shlex.split(rest):
            name = pair.partition("=")[0].upper()
            svc = name.split("_")[1].lower() if name.startswith("ACCORD_") else None
            if svc in ACCORD:
                assert name in accepted_env(svc), f"ENV {name} is read by no setting"


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (volume or host path, read-only) of each mount, short or long syntax."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
        else:
            source, target, *mode = str(volume).split(":")
            found[target] = (source, "ro" in "".join(mode).split(","))
    return found


def test_named_volumes_are_declared(services: dict[str, dict[str, Any]]) -> None:
    declared = yaml.safe_load((ROOT / "compose.yaml").read_text()).get("volumes") or {}
    for name, service in services.items():
        for target, (source, _) in mounts(service).items():
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: {target} mounts undeclared volume {source}"


@pytest.mark.parametrize("svc", ACCORD)
def test_service_verifies_tokens_with_the_generated_key_set(
    services: dict[str, dict[str, Any]], svc: str
) -> None:
    service = services[svc]
    auth_volume = mounts(services["auth-init"]).get(AUTH)
    assert auth_volume is not None, "auth-init writes no auth volume"
    assert mounts(service).get(AUTH) == (auth_volume[0], True), "the auth volume, read-only"
    keys = environment(service).get("ACCORD_AUTH_KEYS_FILE")
    assert keys == f"{AUTH}/keys.json"
    assert "ACCORD_AUTH_DISABLED" not in {k.upper() for k in environment(service)}
    depends = service.get("depends_on") or {}
    assert isinstance(depends, dict)
    assert depends.get("auth-init", {}).get("condition") == "service_completed_successfully"


@pytest.mark.parametrize("svc", ACCORD)
def test_service_has_its_token_when_it_calls_others(
    services: dict[str, dict[str, Any]], svc: str
) -> None:
    token_file = environment(services[svc]).get(f"ACCORD_{svc.upper()}_TOKEN_FILE")
    if svc in tokens.SERVICE_SCOPES:
        assert token_file == f"{AUTH}/{svc}.token"
    else:
        assert token_file is None, f"{svc} calls no other service and needs no token"


def test_services_that_follow_revocations_reach_nats(services: dict[str, dict[str, Any]]) -> None:
    for svc in ACCORD:
        env = environment(services[svc])
        assert {"ACCORD_NATS_URL", f"ACCORD_{svc.upper()}_NATS_URL"} & env.keys(), svc
        assert services[svc]["depends_on"]["nats"]["condition"] == "service_healthy", svc


def run_auth_init(services: dict[str, dict[str, Any]], folder: Path) -> Path:
    """Run auth-init's script with `folder` for the volume; returns the log of chown calls.

    `accord` is this environment's CLI; chown is stood in for, since the service user exists
    only in the image.
    """
    argv = [str(a) for a in services["auth-init"]["command"]]
    assert argv[0] == "sh"
    assert len(argv) == 3, f"sh -c takes one script: {argv}"
    assert argv[1].startswith("-"), argv
    assert argv[1].endswith("c"), argv
    assert "$" not in argv[-1], "compose would interpolate $ in the script"
    script = argv[-1].replace(f"{AUTH}/", f"{folder}/").replace(f"{AUTH}\n", f"{folder}\n")
    shims = folder.parent / "bin"
    shims.mkdir(exist_ok=True)
    log = folder.parent / "chown.log"
    (shims / "chown").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (shims / "chown").chmod(0o755)
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]])
    subprocess.run([*argv[:-1], script], check=True, env={**os.environ, "PATH": path}, timeout=120)
    return log


def test_auth_init_makes_the_key_once_and_tokens_the_services_accept(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    folder = tmp_path / "auth"
    folder.mkdir()
    run_auth_init(services, folder)
    key = (folder / "signing.jwk").read_text()
    checkpoint_key = (folder / "audit-checkpoint.jwk").read_text()
    first = {svc: (folder / f"{svc}.token").read_text().strip() for svc in tokens.SERVICE_SCOPES}
    log = run_auth_init(services, folder)  # a restart keeps the key: earlier tokens stay valid
    assert (folder / "signing.jwk").read_text() == key
    # and the checkpoint key: checkpoints stay signed by the key a verifier pinned
    assert (folder / "audit-checkpoint.jwk").read_text() == checkpoint_key
    assert checkpoint_key != key
    path = environment(services["audit"])["ACCORD_AUDIT_CHECKPOINT_KEY_FILE"]
    assert (folder / Path(path).name).read_text() == checkpoint_key
    pinned = json.loads((folder / "audit-checkpoint-keys.json").read_text())["keys"]
    assert [k["kid"] for k in pinned] == [json.loads(checkpoint_key)["kid"]]
    keys = tokens.KeySet(folder / "keys.json")
    assert len(json.loads((folder / "keys.json").read_text())["keys"]) == 1
    for token in first.values():
        tokens.verify(token, keys)

    for svc, scopes in tokens.SERVICE_SCOPES.items():
        path = environment(services[svc])[f"ACCORD_{svc.upper()}_TOKEN_FILE"]
        claims = tokens.verify((folder / Path(path).name).read_text().strip(), keys)
        assert claims.is_service
        assert claims.scopes == frozenset(scopes)
    admin = tokens.verify((folder / "admin.token").read_text().strip(), keys)
    assert admin.tenant == "default"
    assert admin.scopes == frozenset(tokens.ALL_SCOPES)

    # The services run as another user: they get the key set and their own tokens, and
    # nothing that could mint one.
    assert stat.S_IMODE((folder / "keys.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder / "audit-checkpoint-keys.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder / "signing.jwk").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "audit-checkpoint.jwk").stat().st_mode) == 0o600
    handed = log.read_text().split()
    assert "signing.jwk" not in " ".join(handed)
    handed_names = {Path(arg).name.removesuffix(".new") for arg in handed if "/" in arg}
    tokens_handed = {f"{svc}.token" for svc in tokens.SERVICE_SCOPES}
    assert handed_names == tokens_handed | {"audit-checkpoint.jwk"}
