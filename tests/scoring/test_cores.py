"""Cores for TensorFlow's threads: the affinity, capped by a container's CPU quota."""

from __future__ import annotations

import os

import pytest

from scoring.cores import available_cores, cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def _v2(tmp_path, cpu_max: str):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def _v1(tmp_path, quota: str, period: str = "100000", folder: str = "cpu"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / folder / "cpu.cfs_period_us").write_text(period + "\n")
    return tmp_path


@pytest.mark.parametrize(("cpu_max", "quota"), [("200000 100000", 2.0), ("150000 100000", 1.5),
                                                ("50000 100000", 0.5), ("max 100000", None)])
def test_cgroup_v2_quota(tmp_path, cpu_max, quota):
    assert cpu_quota(_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize(("quota", "folder", "expected"), [("300000", "cpu", 3.0), ("-1", "cpu", None),
                                                          ("100000", "cpu,cpuacct", 1.0)])
def test_cgroup_v1_quota(tmp_path, quota, folder, expected):
    assert cpu_quota(_v1(tmp_path, quota, folder=folder)) == expected


@pytest.mark.parametrize("cpu_max", ["", "garbage", "100000 0", "1 2 3"])
def test_an_unreadable_quota_counts_as_none(tmp_path, cpu_max):
    assert cpu_quota(_v2(tmp_path, cpu_max)) is None
    assert cpu_quota(tmp_path / "missing") is None


@pytest.mark.parametrize(("cpu_max", "cores"), [("100000 100000", 1), ("50000 100000", 1),
                                                ("190000 100000", 1)])
def test_the_quota_caps_the_affinity_rounded_down_at_least_one(tmp_path, cpu_max, cores):
    assert available_cores(_v2(tmp_path, cpu_max)) == cores


def test_no_quota_or_a_larger_one_leaves_the_affinity(tmp_path):
    assert available_cores(_v2(tmp_path, "max 100000")) == AFFINITY
    assert available_cores(_v2(tmp_path, f"{(AFFINITY + 8) * 100000} 100000")) == AFFINITY
    assert available_cores(_v1(tmp_path, "-1")) == AFFINITY
    assert 1 <= available_cores() <= AFFINITY  # this machine's own cgroup
