"""The store fixtures every integration test shares: one run per kind of store (SQLite,
and PostgreSQL where a server answers), each on a store of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq.store.base import Store
from tests.integration.test_store_contract import STORE_KINDS, StoreKit


@pytest.fixture(params=STORE_KINDS)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKit]:
    k = StoreKit(request.param, tmp_path)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture
def store(kit: StoreKit) -> Store:
    return kit.open()
