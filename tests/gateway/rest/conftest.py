"""Fixtures for the REST transcoder tests; the test doubles are in rest_fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .rest_fakes import RestStack, StackFactory, start_stack, stop_stack


@pytest.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """Starts fake gRPC servicers plus the REST server; stops them after."""
    started: list[RestStack] = []

    async def factory(**settings: Any) -> RestStack:
        stack = await start_stack(**settings)
        started.append(stack)
        return stack

    yield factory
    for stack in started:
        await stop_stack(stack)


@pytest.fixture
async def stack(make_stack: StackFactory) -> RestStack:
    return await make_stack()  # type: ignore[no-any-return]
