"""CPU thread choice: cores from the affinity and cgroup quota, minus what other processes use (robolearn.device)."""
import os

import pytest
import torch

from robolearn import device
from robolearn.device import LoadProbe, ThreadGovernor, cgroup_cpu_limit, threads_for


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_give_up_a_core_as_soon_as_others_use_a_real_share_of_it():
    assert threads_for(2, 0.0) == 2
    assert threads_for(2, 0.2) == 2  # a little background noise keeps both
    assert threads_for(2, 0.5) == 1
    assert threads_for(2, 1.0) == 1  # one competing CPU-bound process
    assert threads_for(2, 3.0) == 1  # never below one
    assert threads_for(16, 2.0) == 14
    assert threads_for(1, 0.0) == 1


def test_cgroup_quota_is_read_in_cores(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None  # no file: unknown
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5


def test_busy_seconds_sum_the_allowed_cpus_without_idle_and_iowait(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  9 9 9 9 9 9 9 9 0 0\n"
                    "cpu0 100 10 50 1000 20 5 5 10 0 0\n"
                    "cpu1 200 0 0 500 0 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert device._busy_seconds([0], stat) == pytest.approx((100 + 10 + 50 + 5 + 5 + 10) / hz)
    assert device._busy_seconds([0, 1], stat) == pytest.approx((180 + 200) / hz)
    assert device._busy_seconds([5], stat) is None
    assert device._busy_seconds([0], tmp_path / "missing") is None


def test_probe_subtracts_our_own_cpu_time(monkeypatch):
    clock = {"t": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(device.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(device.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(device, "_busy_seconds", lambda cpus: clock["busy"])
    probe = LoadProbe(cpus=[0, 1])
    clock.update(t=10.0, busy=20.0, own=10.0)  # both cores busy, half of it us
    assert probe.others_busy() == pytest.approx(1.0)
    clock.update(t=20.0, busy=30.0, own=20.0)  # all the busy time was ours
    assert probe.others_busy() == pytest.approx(0.0)


class ScriptedProbe:
    def __init__(self, readings):
        self.readings = list(readings)

    def others_busy(self):
        return self.readings.pop(0)


def test_governor_follows_the_load_and_sets_torch_threads(monkeypatch, restore_threads):
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    governor = ThreadGovernor(period_s=0.0, initial=2, probe=ScriptedProbe([1.0, 1.0, 0.05]))
    assert torch.get_num_threads() == 2
    assert governor.update() == 1 and torch.get_num_threads() == 1  # a competitor appeared
    assert governor.update() == 1
    assert governor.update() == 2 and torch.get_num_threads() == 2  # it left
    assert [n for _, n in governor.changes] == [1, 2]


def test_governor_checks_only_once_per_period(monkeypatch, restore_threads):
    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    governor = ThreadGovernor(period_s=3600.0, initial=2, probe=ScriptedProbe([]))
    assert governor.update() == 2  # no reading taken (the scripted probe would raise)


def test_choose_num_threads_is_within_the_usable_cores():
    n = device.choose_num_threads(interval_s=0.05)
    assert 1 <= n <= device.usable_cores() <= len(device.allowed_cpus())
    assert device.choose_num_threads(interval_s=0.05, max_threads=1) == 1
