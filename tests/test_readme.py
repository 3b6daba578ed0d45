"""The README runs as written (issue 13 item 12): its Python blocks and its ImageJ macro lines are extracted
and run, doctest-style, on small images in a scratch folder that holds the files they name."""
from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced block of ``language`` ("" for blocks without one)."""
    out = []
    for m in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, flags=re.S | re.M):
        if m.group(1) == language:
            out.append((text.count("\n", 0, m.start(2)) + 1, m.group(2)))
    return out


PYTHON = code_blocks(README, "python")
MACROS = [(line, code) for line, code in code_blocks(README, "") if 'run("Semi-Blind Deconvolution"' in code]


def imagej_available() -> bool:
    if importlib.util.find_spec("jpype") is None or importlib.util.find_spec("scyjava") is None:
        return False
    from fiji_bridge import imagej
    try:
        imagej.find_ij_jar()
    except ValueError:
        return False
    return shutil.which("javac") is not None and shutil.which("java") is not None


def specimen(size: int, seed: int = 0) -> np.ndarray:
    from scipy.signal import fftconvolve

    from fiji_bridge import default_optics, zernike_psf
    from fiji_bridge.simulation.specimens import mixture
    rng = np.random.default_rng(seed)
    psf = zernike_psf(default_optics(), {4: 0.15}, size=31)
    clean = fftconvolve(mixture((size, size), rng), psf, mode="same") * 400 + 20
    return rng.poisson(np.clip(clean, 0, None)).astype(np.uint16)


def write_tiff(path: Path, data: np.ndarray, pixel_size: float = 0.16) -> Path:
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / pixel_size, 1 / pixel_size),
                     metadata={"unit": "micron"})
    return path


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The working folder of the README's examples: field.tif, raw/ with one image, restored/ empty."""
    write_tiff(tmp_path / "field.tif", specimen(192))
    (tmp_path / "raw").mkdir()
    write_tiff(tmp_path / "raw" / "cells.tif", specimen(160, seed=1))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(PYTHON) >= 2 and len(MACROS) >= 2
    assert any("sb.deconvolve" in code for _, code in PYTHON)
    assert any("runMacroFile" in code for _, code in PYTHON)


@pytest.mark.parametrize("line, code", PYTHON, ids=[f"README.md:{line}" for line, _ in PYTHON])
def test_python_block_runs_as_written(scratch, line, code):
    uses_imagej = "fiji_command" in code or "imagej" in code
    if uses_imagej and not imagej_available():
        pytest.skip("ImageJ 1 (libij-java) or a JDK is not installed")
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)
    if "sb.deconvolve" in code:
        assert namespace["result"].image.shape == (192, 192) and namespace["restored"].shape == (192, 192)
        assert namespace["psf_grid"].ndim == 4
    if "runMacroFile" in code:
        from fiji_bridge.imagej import command as fiji_command
        assert fiji_command.last_error() == ""
        assert sorted(p.name for p in (scratch / "restored").iterdir()) == [
            "cells_depth.tif", "cells_psfmap.tif", "cells_restored.tif"]


@pytest.mark.parametrize("line, code", MACROS, ids=[f"README.md:{line}" for line, _ in MACROS])
def test_macro_line_runs_as_written(scratch, line, code):
    """The macro lines of the README, on an open 160x160 image (calibrated at the model's pixel size)."""
    if not imagej_available():
        pytest.skip("ImageJ 1 (libij-java) or a JDK is not installed")
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge import imagej as ijconv
    fiji_command.install()
    image = str(scratch / "raw" / "cells.tif").replace("\\", "/")
    done = scratch / "done.txt"
    ijconv.jclass("ij.IJ").runMacro(f'setBatchMode(true); open("{image}");\n{code}\n'
                                    f'File.saveString(getTitle(), "{done.as_posix()}"); close("*");')
    assert fiji_command.last_error() == "", f"README.md:{line}: {fiji_command.last_error()}"
    assert done.read_text() == "cells_restored"


def test_plugin_readme_is_the_readme_section():
    """plugins/README_imagej.md (shipped in the wheel) is the README's Fiji / ImageJ section, word for word."""
    start = README.index("## Fiji / ImageJ")
    section = README[start:README.index("\n## ", start + 1)]          # up to the next top-level section
    assert (ROOT / "plugins" / "README_imagej.md").read_text().strip() == section.strip()


def test_code_organisation_section_matches_the_tree():
    """Every package and top-level module of fiji_bridge/ (as git tracks them) has its line in "How the code is
    organised", and every line names something that exists."""
    import subprocess
    section = README.split("## How the code is organised", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([^`]+)`", section, flags=re.M))
    for entry in listed:
        assert (ROOT / entry).exists(), f"README lists {entry}, which does not exist"
    tracked = subprocess.run(["git", "ls-files", "fiji_bridge"], cwd=ROOT, capture_output=True, text=True)
    names = tracked.stdout.split() if tracked.returncode == 0 and tracked.stdout else \
        [p.relative_to(ROOT).as_posix() for p in (ROOT / "fiji_bridge").rglob("*.py")]
    tops = set()
    for name in names:
        parts = name.split("/")
        if len(parts) > 2:
            tops.add(f"fiji_bridge/{parts[1]}/")
        elif parts[1].endswith(".py") and parts[1] != "__init__.py":
            tops.add(name)
    assert tops <= listed, f"not in the README's code organisation: {sorted(tops - listed)}"
