"""The session-aware router: weights per version, sessions pinned to the version that
started them, moves only at turn boundaries, readiness probes and an admin API.

>>> router = create_router(settings.router, data_dir=settings.data_dir)
>>> await router.start()

``RouterAdminClient`` speaks its admin API (``deploy.types.RouterControl``).
"""

from agentkeel.router.admin_client import RouterAdminClient
from agentkeel.router.app import RouterApp, create_router
from agentkeel.router.pins import PinStore, open_pin_store

__all__ = ["PinStore", "RouterAdminClient", "RouterApp", "create_router", "open_pin_store"]
