"""Fixtures of the reliability suite: a whole stack per test, stopped after, and checked for leaked secrets."""

from __future__ import annotations

import pytest

from tests.reliability.stack import Stack


@pytest.fixture
def make_stack(tmp_path):
    """Factory: ``make_stack(pool_size=…, agent_args=…)`` → a Stack (not started). Every stack is stopped after the
    test and its logs, recorded API answers and SQLite files must hold neither the GitHub token nor the secret."""
    stacks: list[Stack] = []

    def make(**kwargs) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    leaks = [leak for stack in stacks for leak in stack.leaked()]
    assert not leaks, f"secrets leaked: {leaks}"


def pytest_collection_modifyitems(config, items):
    """Every test here starts whole stacks: `slow` (so `make test-fast` leaves them out)."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.slow)
