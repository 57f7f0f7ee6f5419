"""shared/batching.py: what a queue's handlers get from the batcher, without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.batching import Batcher


class Recorder:
    """A use case that records how it was called; items named in `fails_alone` fail alone, and any
    batch holding one of `fails_in_batch` fails."""

    def __init__(self, fails_alone: frozenset[str] = frozenset(), fails_in_batch: frozenset[str] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.alone: list[str] = []
        self.fails_alone = fails_alone
        self.fails_in_batch = fails_in_batch
        self.release = asyncio.Event()
        self.release.set()

    async def run_batch(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fails_in_batch & set(items):
            raise ValueError("one item breaks the batch")
        return [f"{i}!" for i in items]

    async def run_one(self, item: str) -> str:
        self.alone.append(item)
        await self.release.wait()
        if item in self.fails_alone:
            raise ValueError(f"{item} fails")
        return f"{item}!"


async def test_a_lone_item_runs_alone_at_once_without_waiting_for_company():
    use_case = Recorder()
    batcher = Batcher("q", use_case.run_batch, use_case.run_one, limit=10)
    # Nothing else ever arrives: a batcher that waited for more would never return (the timeout
    # only turns that hang into a failure).
    assert await asyncio.wait_for(batcher.submit("a"), 5) == "a!"
    assert use_case.alone == ["a"] and use_case.batches == []
    assert batcher.stats.sizes == [1] and batcher.stats.alone == 1


async def test_items_arriving_together_share_one_call_in_their_order():
    use_case = Recorder()
    batcher = Batcher("q", use_case.run_batch, use_case.run_one, limit=10)
    results = await asyncio.gather(*(batcher.submit(x) for x in "abcde"))
    assert results == ["a!", "b!", "c!", "d!", "e!"]
    assert use_case.batches == [list("abcde")] and use_case.alone == []


async def test_what_arrives_during_a_batch_makes_the_next_batch_up_to_the_limit():
    use_case = Recorder()
    batcher = Batcher("q", use_case.run_batch, use_case.run_one, limit=3)
    use_case.release.clear()
    first = asyncio.ensure_future(batcher.submit("a"))
    for _ in range(10):  # a few loop turns: the drain takes "a" alone and waits inside the use case
        await asyncio.sleep(0)
    assert use_case.alone == ["a"]
    rest = [asyncio.ensure_future(batcher.submit(x)) for x in "bcdef"]
    await asyncio.sleep(0)
    assert use_case.batches == []  # one drain at a time (concurrency 1): the others wait
    use_case.release.set()
    assert await first == "a!"
    assert [await r for r in rest] == ["b!", "c!", "d!", "e!", "f!"]
    assert use_case.batches == [["b", "c", "d"], ["e", "f"]]


async def test_concurrency_lets_that_many_drains_run_at_once():
    use_case = Recorder()
    batcher = Batcher("q", use_case.run_batch, use_case.run_one, limit=2, concurrency=2)
    use_case.release.clear()
    waiting = [asyncio.ensure_future(batcher.submit(x)) for x in "abcdef"]
    for _ in range(5):
        await asyncio.sleep(0)
    assert use_case.batches == [["a", "b"], ["c", "d"]]  # two drains; "e", "f" wait for one to end
    use_case.release.set()
    assert [await w for w in waiting] == [f"{x}!" for x in "abcdef"]
    assert use_case.batches[2:] == [["e", "f"]]


async def test_a_failed_batch_runs_each_item_alone_and_only_the_failing_one_gets_its_error():
    use_case = Recorder(fails_alone=frozenset("c"), fails_in_batch=frozenset("c"))
    batcher = Batcher("q", use_case.run_batch, use_case.run_one, limit=10)
    results = await asyncio.gather(*(batcher.submit(x) for x in "abcde"), return_exceptions=True)
    assert results[:2] == ["a!", "b!"] and results[3:] == ["d!", "e!"]
    assert isinstance(results[2], ValueError) and str(results[2]) == "c fails"
    assert use_case.batches == [list("abcde")]
    assert use_case.alone == list("abcde")
    assert batcher.stats.fallbacks == 1


async def test_a_batch_answering_for_the_wrong_number_of_items_is_not_trusted():
    async def short(items: Sequence[str]) -> list[str]:
        return ["?"]

    async def one(item: str) -> str:
        return item.upper()

    batcher = Batcher("q", short, one, limit=10)
    assert await asyncio.gather(*(batcher.submit(x) for x in "ab")) == ["A", "B"]
    assert batcher.stats.fallbacks == 1


async def test_the_scope_wraps_each_call_and_a_cancelled_handler_is_left_out():
    entered: list[str] = []

    class Scope:
        async def __aenter__(self) -> None:
            entered.append("in")

        async def __aexit__(self, *exc: object) -> None:
            entered.append("out")

    use_case = Recorder()
    batcher = Batcher("q", use_case.run_batch, use_case.run_one, limit=10, scope=Scope)
    gone = asyncio.ensure_future(batcher.submit("gone"))
    kept = asyncio.ensure_future(batcher.submit("kept"))
    gone.cancel()
    assert await kept == "kept!"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert use_case.alone == ["kept"] and use_case.batches == []
    assert entered == ["in", "out"]


def test_limits_must_be_positive():
    async def run(items: Sequence[int]) -> list[int]:
        return list(items)

    async def one(item: int) -> int:
        return item

    with pytest.raises(ValueError):
        Batcher("q", run, one, limit=0)
