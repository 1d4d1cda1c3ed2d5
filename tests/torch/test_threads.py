"""CPU threads of the torch backend (prt_torch.threads): the rule, the order of explicit settings, and what a fresh
process gets when the backend loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prt_torch import threads
from prtcore.errors import ConfigError


@pytest.mark.parametrize("cpus, default, expected", [(1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 2), (8, 8, 4),
                                                     (16, 8, 8), (64, 32, 32), (16, 16, 8)])
def test_rule_is_half_the_cpus_within_one_and_the_default(cpus, default, expected):
    assert threads.rule(cpus, default) == expected


def test_the_rule_applies_when_nothing_is_set():
    choice = threads.choose({}, current=8, cpus=8, default=8)
    assert choice == threads.Choice(4, "half of 8 CPUs")


@pytest.mark.parametrize("environ, threads_set", [
    ({"PRT_TORCH_THREADS": "3"}, 3),
    ({"PRT_TORCH_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3),  # prtcore's own variable first
    ({"PRT_TORCH_THREADS": "torch"}, None),
    ({"OMP_NUM_THREADS": "6"}, None),
    ({"MKL_NUM_THREADS": "6"}, None),
])
def test_explicit_settings_win(environ, threads_set):
    choice = threads.choose(environ, current=8, cpus=8, default=8)
    assert choice.threads == threads_set and choice.reason.split("=")[0] in environ


def test_a_count_set_through_torch_is_kept():
    assert threads.choose({}, current=3, cpus=8, default=8) == threads.Choice(None, "torch.set_num_threads")


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_count_is_a_one_line_error_naming_the_variable(value):
    with pytest.raises(ConfigError, match=f"PRT_TORCH_THREADS='{value}'"):
        threads.choose({"PRT_TORCH_THREADS": value}, current=8, cpus=8, default=8)


def write_topology(root, cores: dict[int, tuple[str, str]]):
    for cpu, (package, core) in cores.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(package + "\n")
        (folder / "core_id").write_text(core + "\n")


def test_physical_cores_count_hyperthreads_once(tmp_path):
    # two packages of two cores, two hyperthreads each
    write_topology(tmp_path, {cpu: (str(cpu // 4), str(cpu % 2)) for cpu in range(8)})
    assert threads.physical_cores(list(range(8)), tmp_path) == 4
    assert threads.physical_cores([0, 2], tmp_path) == 1  # the two threads of one core
    assert threads.physical_cores([0, 1, 4], tmp_path) == 3
    assert threads.physical_cores([0, 9], tmp_path) == 2  # no topology for cpu9: one core per CPU


# ------------------------------------------------------------------------------ a fresh process per setting
PROBE = """
import json, sys, torch
before = torch.get_num_threads()
if len(sys.argv) > 1:
    torch.set_num_threads(int(sys.argv[1]))
import prtcore
from prt_torch import threads
backend = prtcore.get_backend("torch")
print(json.dumps({"before": before, "after": torch.get_num_threads(), "reason": threads.reason(),
                  "device": backend.device.type}))
"""


def probe(environ: dict, *args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PRT_TORCH_THREADS", *threads.EXPLICIT_VARIABLES)}
    env.update(environ, CUDA_VISIBLE_DEVICES="")  # the CPU's settings, also on a machine with a GPU
    run = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_backend_applies_the_rule_in_a_fresh_process():
    cpus = threads.available_cpus()
    default = threads.physical_cores(cpus)
    seen = probe({})
    assert seen["device"] == "cpu" and seen["before"] == default  # torch's own default, before the backend loads
    assert seen["after"] == threads.rule(len(cpus), default)
    assert seen["reason"] == f"half of {len(cpus)} CPUs"


def test_backend_keeps_omp_num_threads_and_set_num_threads():
    cpus = threads.available_cpus()
    default = threads.physical_cores(cpus)
    if threads.rule(len(cpus), default) == default:
        pytest.skip("one CPU: the rule and torch's default are the same count")
    # OMP_NUM_THREADS at torch's default (MKL caps it there): kept, where the rule would lower it
    from_omp = probe({"OMP_NUM_THREADS": str(default)})
    assert from_omp["after"] == default and from_omp["reason"] == f"OMP_NUM_THREADS={default}"
    chosen = default + 1  # neither torch's default nor the rule's count
    from_torch = probe({}, chosen)
    assert from_torch["after"] == chosen and from_torch["reason"] == "torch.set_num_threads"
    from_prt = probe({"PRT_TORCH_THREADS": str(chosen), "OMP_NUM_THREADS": "1"})
    assert from_prt["after"] == chosen and from_prt["reason"] == f"PRT_TORCH_THREADS={chosen}"


def test_prt_env_reports_the_count_and_what_set_it(backend):
    import torch

    from prtcore.cli import env as env_cli

    assert backend.device.type == "cpu"
    seen = env_cli.collect()["devices"]["torch"]
    assert seen["threads"] == torch.get_num_threads()
    assert seen["threads_set_by"] == threads.reason() and not seen["threads_set_by"].startswith("torch's default")
