"""Run the ``async def`` tests of this folder with ``asyncio.run``, bounded in time."""

from __future__ import annotations

import asyncio
import inspect

import pytest

#: Seconds one async test may take (pytest-timeout's limit stays as the outer bound).
ASYNC_TEST_TIMEOUT = 25


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def bounded() -> None:
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT):
            await pyfuncitem.obj(**kwargs)

    asyncio.run(bounded())
    return True
