"""The quota benchmark's pieces: with quotas on, a turn of its service reserves on all
five keys and settles them; with quotas off, it reserves nothing."""

from __future__ import annotations

from pathlib import Path

from bench.quota import Ledger, reservation_samples, service_for


async def test_the_bench_turn_reserves_on_every_key_only_with_quotas_on(tmp_path: Path) -> None:
    """The case the bench times is the one it names: five keys held and settled per turn
    with quotas on; no key at all with every limit 0."""
    for quotas_on, expected in ((True, 1), (False, 0)):
        ledger = Ledger("SQLite store", f"sqlite:///{tmp_path / f'{quotas_on}.db'}")
        async with service_for(ledger, quotas_on=quotas_on) as service:
            session = await service.create_session("ana", organization="acme")
            await service.run_turn(session.session_id, "hello")
            assert service.budget is not None
            keys = [
                service.budget.session_key(session.session_id),
                service.budget.user_key("ana", "acme", "day"),
                service.budget.user_key("ana", "acme", "month"),
                service.budget.org_key("acme", "day"),
                service.budget.org_key("acme", "month"),
            ]
            used = [await service.budget.ledger.used(key) for key in keys]
            assert all((tokens > 0) == bool(expected) for tokens in used), (quotas_on, used)
    samples = await reservation_samples(ledger, calls=5)
    assert len(samples) == 5 and all(sample > 0 for sample in samples)
