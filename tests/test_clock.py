import numpy as np
import pytest

from robolearn.control.clock import Clock, RealTimeClock, SteppedClock


class FakeTime:
    """A controllable time source: sleeping overshoots by `oversleep`, each reading costs `read_cost`."""

    def __init__(self, oversleep: float = 80e-6, read_cost: float = 1e-7):
        self.t = 1000.0
        self.oversleep, self.read_cost = oversleep, read_cost
        self.sleeps: list[float] = []

    def time(self) -> float:
        self.t += self.read_cost
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds + (self.oversleep(len(self.sleeps)) if callable(self.oversleep) else self.oversleep)


def fake_clock(hz: float, **kwargs) -> tuple[RealTimeClock, FakeTime]:
    ft = FakeTime(**kwargs)
    return RealTimeClock(hz, time_fn=ft.time, sleep_fn=ft.sleep), ft


def test_stepped_clock_advances_one_period_per_tick_without_waiting():
    clock = SteppedClock(hz=10, t0=5.0)
    assert isinstance(clock, Clock)
    clock.start()
    ticks = [clock.tick() for _ in range(4)]
    assert [t.index for t in ticks] == [0, 1, 2, 3]
    assert [t.time for t in ticks] == pytest.approx([5.0, 5.1, 5.2, 5.3])
    assert clock.now() == pytest.approx(5.3)
    assert all(t.lateness == 0 and t.missed == 0 for t in ticks)
    clock.start()  # a new schedule starts over
    assert clock.tick().time == 5.0
    assert clock.stats().ticks == 1 and clock.stats().missed_fraction == 0.0


def test_real_time_clock_keeps_an_absolute_schedule_with_no_drift():
    clock, ft = fake_clock(100)
    clock.start()
    ticks = []
    for _ in range(1000):
        ticks.append(clock.tick())
        ft.t += 0.003  # 3 ms of work per period; a sleep(period) loop would drift by 3 ms + oversleep each tick
    t0 = ticks[0].time
    assert [t.index for t in ticks] == list(range(1000))
    np.testing.assert_allclose([t.time - t0 for t in ticks], np.arange(1000) * 0.01, atol=1e-6)
    # it sleeps until 1 ms before each deadline, then spins the rest
    np.testing.assert_allclose(ft.sleeps, 0.01 - 0.003 - 0.001, atol=1e-6)
    stats = clock.stats()
    assert stats.ticks == 1000 and stats.overruns == 0 and stats.missed_periods == 0
    assert 0 <= stats.lateness_median_s < 1e-6


def test_overrun_skips_to_the_next_future_deadline_and_counts_missed_periods():
    clock, ft = fake_clock(100)
    clock.start()
    ticks = []
    for k in range(10):
        ticks.append(clock.tick())
        ft.t += 0.025 if k == 5 else 0.001  # step 5 overruns: 25 ms of work in a 10 ms period
    assert [t.index for t in ticks] == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]  # no burst through slots 6 and 7
    assert ticks[6].missed == 2 and ticks[6].time - ticks[0].time == pytest.approx(0.08, abs=1e-6)
    stats = clock.stats()
    assert (stats.ticks, stats.overruns, stats.missed_periods) == (10, 1, 2)
    assert stats.missed_fraction == pytest.approx(2 / 12)
    assert stats.lateness_median_s < 1e-6


def test_first_tick_after_start_is_due_at_once_whatever_came_before():
    clock, ft = fake_clock(50)
    clock.start()
    ft.t += 0.7  # e.g. the policy's first (slow) inference between start and the first tick
    first = clock.tick()
    assert (first.index, first.missed, first.lateness) == (0, 0, pytest.approx(0, abs=1e-6))
    assert clock.tick().time - first.time == pytest.approx(0.02, abs=1e-6)
    assert clock.stats().overruns == 0


def test_oversleeping_past_the_spin_margin_shows_as_lateness_and_stats_cover_the_window():
    late = {1: 0.0, 2: 0.0021, 3: 0.0031, 4: 0.0041, 5: 0.0051}  # oversleep per sleep call; spin margin is 1 ms
    ft = FakeTime(oversleep=lambda n: late[n], read_cost=1e-8)  # time must advance while spinning
    clock = RealTimeClock(100, time_fn=ft.time, sleep_fn=ft.sleep, window=3)
    clock.start()
    ticks = [clock.tick() for _ in range(6)]  # tick 0 is immediate; ticks 1..5 sleep once each
    assert [t.lateness for t in ticks] == pytest.approx([0, 0, 0.0011, 0.0021, 0.0031, 0.0041], abs=1e-7)
    stats = clock.stats()  # percentiles over the last 3 ticks only
    assert stats.ticks == 6
    assert stats.lateness_median_s == pytest.approx(0.0031, abs=1e-7)
    assert stats.lateness_max_s == pytest.approx(0.0041, abs=1e-7)


def test_real_time_clock_on_the_real_clock_lands_on_its_deadlines():
    clock = RealTimeClock(200)
    clock.start()
    ticks = [clock.tick() for _ in range(60)]
    assert all(t.time >= t.deadline and t.lateness >= 0 for t in ticks)
    assert all(b.index > a.index for a, b in zip(ticks, ticks[1:]))
    assert ticks[-1].time - ticks[0].deadline >= 59 / 200  # absolute deadlines: never early
    assert np.median([t.lateness for t in ticks]) < 1e-3  # medians only: this VM stalls now and then


@pytest.mark.parametrize("hz", [0, -5, float("nan"), float("inf"), "10"])
def test_bad_rate_is_refused(hz):
    with pytest.raises(ValueError, match="positive number of Hz"):
        RealTimeClock(hz)
    with pytest.raises(ValueError, match="positive number of Hz"):
        SteppedClock(hz)


def test_bad_spin_margin_is_refused():
    with pytest.raises(ValueError, match="spin_s"):
        RealTimeClock(100, spin_s=-0.001)
