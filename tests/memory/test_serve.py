from __future__ import annotations

from pathlib import Path

from agentkeel.config.settings import KeelSettings
from agentkeel.memory.serve import memory_settings_for


def test_memory_settings_inherit_data_and_secrets_dirs(tmp_path: Path) -> None:
    """Without a memory section, the server uses <data_dir>/memory and the global secrets dir."""
    settings = KeelSettings(data_dir=tmp_path, secrets_dir=tmp_path / "secrets")
    memory = memory_settings_for(settings)
    assert memory.data_dir == tmp_path / "memory"
    assert memory.secrets_dir == tmp_path / "secrets"
    assert memory.port == 8788
    assert memory.resolved_store_url() == f"sqlite:///{tmp_path / 'memory' / 'memory.db'}"
