from pathlib import Path

import pytest

from mlops_lib.settings import Settings
from mlops_lib.stack import lakefs_build
from mlops_lib.stack.procs import StackError


def test_wrapper_module_pins_the_configured_version() -> None:
    assert lakefs_build.wrapper_version() == Settings().lakefs_version


def test_wrapper_module_carries_lakefs_replace_directive() -> None:
    gomod = (lakefs_build.WRAPPER_DIR / "go.mod").read_text()
    assert "replace github.com/csimplestring/delta-go => github.com/treeverse/delta-go" in gomod
    assert (lakefs_build.WRAPPER_DIR / "go.sum").is_file()


def test_missing_go_stops_with_a_pointer_to_docker_compose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = Settings(stack_dir=tmp_path / "stack", cache_dir=tmp_path / "cache")
    with pytest.raises(StackError) as err:
        lakefs_build.ensure_lakefs_binary(settings, log=lambda _m: None)
    assert "Go is not installed" in str(err.value)
    assert "docker compose up" in str(err.value)


def test_cached_binary_is_linked_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(stack_dir=tmp_path / "stack", cache_dir=tmp_path / "cache")
    cached = lakefs_build.cached_binary(settings)
    cached.parent.mkdir(parents=True)
    cached.write_text("binary")
    monkeypatch.setattr(lakefs_build, "build_lakefs", lambda *a, **k: pytest.fail("rebuilt"))
    dest = lakefs_build.ensure_lakefs_binary(settings)
    assert dest == settings.lakefs_binary
    assert dest.resolve() == cached.resolve()
    # Idempotent.
    assert lakefs_build.ensure_lakefs_binary(settings) == dest
