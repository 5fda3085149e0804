"""collector.grid: slot planning, the wall/monotonic mapping and the token bucket, on
injected clocks (no sleeping)."""

from __future__ import annotations

import pytest

from collector.grid import GridClock, Pacer, default_lateness_ns, plan_slots

SEC = 10**9
MS = 10**6
T0 = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z


class FakeClocks:
    """A wall clock and a monotonic clock that tests move by hand."""

    def __init__(self, wall: int, mono: int = 5 * SEC) -> None:
        self.wall = wall
        self.mono = mono

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.mono += ns

    def wall_ns(self) -> int:
        return self.wall

    def mono_ns(self) -> int:
        return self.mono


def test_first_slot_is_the_next_grid_point() -> None:
    plan = plan_slots(T0 + 17 * SEC, None, 60 * SEC, 15 * SEC)
    assert plan.next_slot == T0 + 60 * SEC
    assert plan.missed == ()
    assert plan_slots(T0, None, 60 * SEC, 15 * SEC).next_slot == T0


def test_a_slightly_late_slot_is_still_taken() -> None:
    plan = plan_slots(T0 + 60 * SEC + 200 * MS, T0, 60 * SEC, 15 * SEC)
    assert plan == plan_slots(T0 + 59 * SEC, T0, 60 * SEC, 15 * SEC)
    assert plan.next_slot == T0 + 60 * SEC


def test_slots_too_late_are_missed_never_shifted() -> None:
    # the process was frozen from just after T0 until T0 + 200.5 s
    plan = plan_slots(T0 + 200 * SEC + 500 * MS, T0, 60 * SEC, 15 * SEC)
    assert plan.missed == (T0 + 60 * SEC, T0 + 120 * SEC, T0 + 180 * SEC)  # 180 s: 20.5 s late
    assert plan.next_slot == T0 + 240 * SEC  # the next one waits for its own time
    plan = plan_slots(T0 + 190 * SEC, T0, 60 * SEC, 15 * SEC)
    assert plan.missed == (T0 + 60 * SEC, T0 + 120 * SEC)
    assert plan.next_slot == T0 + 180 * SEC  # 10 s late: within the lateness, taken


def test_missed_slots_are_exactly_those_past_the_lateness() -> None:
    interval, lateness = 2 * SEC, default_lateness_ns(2 * SEC)
    for late_by in range(0, 20 * SEC, 37 * MS):
        now = T0 + interval + late_by
        plan = plan_slots(now, T0, interval, lateness)
        taken = [*plan.missed, plan.next_slot]
        assert taken == list(range(T0 + interval, plan.next_slot + 1, interval))  # no gap
        assert all(now - slot > lateness for slot in plan.missed)
        assert plan.next_slot >= now - lateness


def test_no_cumulative_drift_over_a_day_of_slots() -> None:
    clocks = FakeClocks(T0 + 3 * SEC)
    clock = GridClock(clocks.wall_ns, clocks.mono_ns)
    last = None
    slots = []
    for _ in range(1440):
        plan = plan_slots(clock.now_ns(), last, 60 * SEC, 15 * SEC)
        deadline = clock.deadline_mono_ns(plan.next_slot)
        clocks.advance(deadline - clocks.mono + 700 * MS)  # every slot wakes 0.7 s late
        slots.append(plan.next_slot)
        last = plan.next_slot
        clocks.advance(40 * SEC)  # and its work takes 40 s
    assert slots == [T0 + (k + 1) * 60 * SEC for k in range(1440)]


def test_wall_clock_step_reanchors_the_grid() -> None:
    clocks = FakeClocks(T0 + 10 * SEC)
    clock = GridClock(clocks.wall_ns, clocks.mono_ns, step_tolerance_ns=50 * MS)
    slot = T0 + 60 * SEC
    before = clock.deadline_mono_ns(slot)
    clocks.wall += 10 * MS  # slewing: ignored
    assert clock.check_step() == 0
    assert clock.deadline_mono_ns(slot) == before
    clocks.wall += 5 * SEC  # a step forward: the slot comes 5 s sooner on the monotonic clock
    assert clock.check_step() == 5 * SEC + 10 * MS
    assert clock.deadline_mono_ns(slot) == before - 5 * SEC - 10 * MS
    assert clock.now_ns() == clocks.wall
    assert clock.steps == 1


def test_backward_step_never_repeats_a_slot() -> None:
    clocks = FakeClocks(T0 + 60 * SEC + 100 * MS)
    clock = GridClock(clocks.wall_ns, clocks.mono_ns)
    last = T0 + 60 * SEC  # just taken
    clocks.wall -= 30 * SEC
    clock.check_step()
    plan = plan_slots(clock.now_ns(), last, 60 * SEC, 15 * SEC)
    assert plan.next_slot == T0 + 120 * SEC
    assert plan.missed == ()


def test_pacer_allows_a_burst_then_the_rate() -> None:
    clocks = FakeClocks(T0)
    pacer = Pacer(10.0, 15, clocks.mono_ns)
    for _ in range(15):
        assert pacer.wait_ns(clocks.mono) == 0
        pacer._tokens -= 1.0  # what acquire does once the wait is 0
    wait = pacer.wait_ns(clocks.mono)
    assert 99 * MS <= wait <= 101 * MS
    clocks.advance(1 * SEC)
    assert pacer.wait_ns(clocks.mono) == 0


async def test_pacer_acquire_refuses_a_wait_past_the_deadline() -> None:
    clocks = FakeClocks(T0)
    pacer = Pacer(1.0, 1, clocks.mono_ns)
    assert await pacer.acquire(clocks.mono + SEC)
    assert not await pacer.acquire(clocks.mono + 500 * MS)  # next token in 1 s


@pytest.mark.parametrize(("retry_after", "expected"), [(3.0, 3.0), (None, 1.0)])
def test_pacer_blocks_after_a_429(retry_after: float | None, expected: float) -> None:
    clocks = FakeClocks(T0)
    pacer = Pacer(10.0, 15, clocks.mono_ns, backoff_base_s=1.0, backoff_cap_s=8.0)
    assert pacer.refused(retry_after) == expected
    assert pacer.wait_ns(clocks.mono) == int(expected * SEC)
    clocks.advance(int(expected * SEC))
    assert pacer.wait_ns(clocks.mono) == 0


def test_pacer_backoff_doubles_and_is_capped() -> None:
    clocks = FakeClocks(T0)
    pacer = Pacer(10.0, 15, clocks.mono_ns, backoff_base_s=1.0, backoff_cap_s=8.0)
    backoffs = []
    for _ in range(6):
        backoffs.append(pacer.refused(None))
        assert pacer.refused(None) == backoffs[-1]  # a 429 of the same burst: same episode
        clocks.advance(int(backoffs[-1] * SEC))
    assert backoffs == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    pacer.accepted()
    assert pacer.refused(None) == 1.0
