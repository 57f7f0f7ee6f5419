"""The one background loop every service uses (shared/background.py), on a real event loop with
short intervals."""

from __future__ import annotations

import asyncio

from shared.background import every


async def test_a_loop_runs_at_once_then_every_interval_and_adds_up_what_rounds_return():
    loop = every(0.05, lambda: asyncio.sleep(0, result=2), name="counting")
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.01)
    assert (loop.rounds, loop.done) == (1, 2)  # the first round does not wait
    await asyncio.sleep(0.12)
    assert loop.rounds >= 3 and loop.done == 2 * loop.rounds
    loop.stop()
    await asyncio.wait_for(task, 1)


async def test_a_wake_runs_the_next_round_now():
    loop = every(60, lambda: asyncio.sleep(0), name="woken")
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.01)
    loop.wake()
    await asyncio.sleep(0.01)
    assert loop.rounds == 2
    loop.stop()
    await asyncio.wait_for(task, 1)


async def test_a_failed_round_is_retried_one_whole_interval_later_whatever_wakes_it():
    calls: list[float] = []

    async def failing() -> None:
        calls.append(asyncio.get_running_loop().time())
        raise ConnectionError("database away")

    loop = every(0.2, failing, name="failing")
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.01)
    for _ in range(5):
        loop.wake()
        await asyncio.sleep(0.01)
    assert len(calls) == 1 and loop.rounds == 1  # not hammered while it is away
    await asyncio.sleep(0.25)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2
    loop.stop()
    await asyncio.wait_for(task, 1)  # stop ends the back-off too


async def test_delay_first_waits_one_interval_and_stop_ends_the_wait():
    loop = every(60, lambda: asyncio.sleep(0), name="later", delay_first=True)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    assert loop.rounds == 0
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert loop.rounds == 0
