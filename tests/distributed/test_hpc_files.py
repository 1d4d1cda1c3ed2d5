"""hpc/: the Apptainer definition, the SLURM batch script and the GPU check script parse, and the image installs the
README's torch extra."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEF = ROOT / "hpc" / "prt.def"
SBATCH = ROOT / "hpc" / "slurm" / "train.sbatch"
SECTIONS = {"labels", "files", "post", "environment", "runscript", "test", "help", "setup", "startscript", "app"}
SHELL_SECTIONS = ("post", "environment", "runscript", "test")


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, section bodies) of an Apptainer definition file."""
    header, sections, current = {}, {}, None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("%"):
            current = line[1:].split()[0]
            assert current in SECTIONS, f"{DEF}:{number}: unknown section %{current}"
            assert current not in sections, f"{DEF}:{number}: section %{current} given twice"
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            assert sep and value.strip(), f"{DEF}:{number}: expected 'Keyword: value' before the first section"
            header[key.strip()] = value.strip()
    return header, sections


def pip_extras(script: str) -> set[str]:
    """The extras of every `pip install ...[extras]` of prtcore in a shell script."""
    found = set()
    for line in script.splitlines():
        if "pip install" not in line:
            continue
        words = shlex.split(line, comments=True)
        if "pip" in words and "install" in words:
            for word in words:
                match = re.fullmatch(r"(?:\.|/opt/prtcore)\[([\w,]+)\]", word)
                if match:
                    found.update(match[1].split(","))
    return found


def test_definition_parses_and_every_script_section_is_valid_shell():
    header, sections = parse_definition(DEF.read_text())
    assert header.get("Bootstrap") == "docker" and header.get("From")
    assert {"files", "post", "environment", "runscript", "test"} <= set(sections)
    for name in SHELL_SECTIONS:
        done = subprocess.run(["bash", "-n"], input=sections[name], capture_output=True, text=True)
        assert done.returncode == 0, f"%{name}: {done.stderr}"
    assert 'exec prt "$@"' in sections["runscript"]
    for line in sections["files"].split("\n"):
        if line.strip():
            source, target = line.split()
            assert (ROOT / source).exists(), f"%files: {source} is not in the repository"
            assert target.startswith("/opt/prtcore/")


def test_image_installs_the_extra_the_readme_installs_for_torch():
    _, sections = parse_definition(DEF.read_text())
    extras = pip_extras(sections["post"])
    readme = {extra for line in (ROOT / "README.md").read_text().splitlines() for extra in pip_extras(line)}
    makefile = pip_extras((ROOT / "Makefile").read_text().replace("$(BIN)/python -m pip", "pip"))
    declared = set(metadata.metadata("prtcore").get_all("Provides-Extra"))
    everything = [r for r in metadata.requires("prtcore") if r.endswith('extra == "all"')]
    assert extras == {"torch"}, extras
    assert extras <= readme and extras <= declared
    assert "all" in makefile and any("torch" in r for r in everything)  # `make` installs it too


def test_sbatch_parses_and_launches_prt_train_on_every_node():
    done = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = SBATCH.read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.M))
    assert directives["ntasks-per-node"] == "1" and int(directives["nodes"]) >= 2
    assert "--rdzv-endpoint" in text and "prtcore.cli.main train --backend torch \"$@\"" in text
    assert "apptainer exec --nv" in text


def test_sbatch_without_arguments_says_how_to_call_it(tmp_path):
    done = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("usage: sbatch hpc/slurm/train.sbatch")
    assert len(done.stderr.strip().splitlines()) == 1



def test_gpu_check_script_parses_and_refuses_a_machine_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")

    script = ROOT / "hpc" / "gpu-check.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine would run the checks")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"hpc/gpu-check.sh: no CUDA GPU for {sys.executable} (torch missing, "
                                                "or torch.cuda.is_available() is False)"]
