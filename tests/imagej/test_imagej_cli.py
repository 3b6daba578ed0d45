"""``semiblind fiji install`` on a Fiji.app layout built here, and the argparse registration (no JVM)."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from fiji_bridge.cli import imagej as imagej_cli

ROOT = Path(__file__).resolve().parents[2]


def fake_fiji(tmp_path: Path) -> Path:
    """The parts of a Fiji.app that the installer checks."""
    root = tmp_path / "Fiji.app"
    (root / "jars").mkdir(parents=True)
    (root / "jars" / "ij-1.54f.jar").write_bytes(b"PK\x05\x06" + bytes(18))
    (root / "plugins").mkdir()
    (root / "ImageJ-linux64").write_text("#!/bin/sh\n")
    return root


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semiblind")
    imagej_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_install_places_the_menu_script_and_macro(tmp_path, capsys):
    root = fake_fiji(tmp_path)
    args = parse(["fiji", "install", str(root)])
    assert args.func(args) == 0
    script = root / "scripts" / "Plugins" / "Deconvolution" / "Semi-Blind_Deconvolution.py"
    assert script.read_bytes() == (ROOT / "plugins" / imagej_cli.SCRIPT).read_bytes()
    preview = script.with_name("Estimate_PSF_Map.py")          # the quick map preview is a menu command too
    assert preview.read_bytes() == (ROOT / "plugins" / imagej_cli.SCRIPTS[1]).read_bytes()
    assert (root / "macros" / "semiblind_batch.ijm").is_file()
    out = capsys.readouterr().out
    assert f"installed {script}" in out and f"installed {preview}" in out
    assert "Edit > Options > Python" in out and "semiblind[imagej]" in out
    # reinstalling (an upgrade) overwrites in place and leaves no temporary files
    assert args.func(args) == 0
    assert sorted(p.name for p in script.parent.iterdir()) == ["Estimate_PSF_Map.py", "Semi-Blind_Deconvolution.py"]


@pytest.mark.parametrize("breakage, match", [
    (lambda root: (root / "jars" / "ij-1.54f.jar").unlink(), "no jars/ij-"),
    (lambda root: (root / "plugins").rmdir(), "no plugins/"),
    (lambda root: None, None),
])
def test_install_refuses_what_is_not_fiji(tmp_path, capsys, breakage, match):
    root = fake_fiji(tmp_path)
    breakage(root)
    target = root if match else tmp_path / "nowhere"
    args = parse(["fiji", "install", str(target), "--quiet"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("semiblind fiji install: error: FIJI_DIR")
    assert (match or "not a folder") in err
    assert not (root / "scripts").exists()


def test_script_command_parameters_are_recordable():
    """Every input of the Fiji script is a #@ parameter and it declares the result images as outputs."""
    text = (ROOT / "plugins" / imagej_cli.SCRIPT).read_text()
    params = [ln.split()[-1] for ln in text.splitlines() if ln.startswith("#@ ")]
    outputs = [ln.split()[-1] for ln in text.splitlines() if ln.startswith("#@output ")]
    assert params == ["imp", "iterations", "tv", "stride", "model", "device", "na", "wavelength", "pixel_size",
                      "n", "objective", "channels", "frames", "psf_map", "psf_montage"]
    assert outputs == ["restored", "parameter_map", "depth_map", "psf_grid"]
    assert not set(params) & set(outputs)             # SciJava needs distinct names
    ast.parse(text)                                   # valid Python
    from fiji_bridge.imagej.command import KEYS, MAP_KEYS, dialog_choices, run_map_script, run_script
    import inspect
    assert set(params[1:]) == set(KEYS) == set(inspect.signature(run_script).parameters) - {"imp"}
    # the map preview's script: the map keys, and both scripts offer the dropdowns of the ImageJ dialog
    map_text = (ROOT / "plugins/scripts/Plugins/Deconvolution/Estimate_PSF_Map.py").read_text()
    ast.parse(map_text)
    map_params = [ln.split()[-1] for ln in map_text.splitlines() if ln.startswith("#@ ")]
    assert set(map_params[1:]) == set(MAP_KEYS) == set(inspect.signature(run_map_script).parameters) - {"imp"}
    for script in (text, map_text):
        for key in ("objective", "channels", "frames"):
            line = next(ln for ln in script.splitlines() if ln.startswith("#@ ") and ln.endswith(f" {key}"))
            choices = line.split("choices={")[1].split("}")[0].replace('"', "").split(", ")
            assert choices == dialog_choices()[key], key


def test_imagej_subcommand_is_registered():
    args = parse(["imagej", "a.tif", "--macro", "m.ijm"])
    assert args.func is imagej_cli.cmd_imagej and args.images == ["a.tif"] and args.macro == "m.ijm"


def test_imagej_subcommand_reports_missing_image_and_bad_fiji(tmp_path, capsys):
    args = parse(["imagej", "/nonexistent/x.tif"])
    assert args.func(args) == 2
    assert "image file not found" in capsys.readouterr().err
    args = parse(["imagej", "--fiji", str(tmp_path)])
    assert args.func(args) == 2
    assert "is not a Fiji.app folder" in capsys.readouterr().err


def test_imagej_subcommand_without_display_is_one_line(tmp_path, capsys, monkeypatch):
    image = tmp_path / "x.tif"
    image.write_bytes(b"")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(imagej_cli.sys, "platform", "linux")
    args = parse(["imagej", str(image)])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("semiblind imagej: error: no display") and len(err.splitlines()) == 1


def test_wheel_ships_the_fiji_files_and_installs_them_without_a_checkout(tmp_path):
    """A user who ran ``pip install semiblind`` (no source checkout) can still run ``semiblind fiji install``
    and build the Java shim: the wheel carries plugins/ as fiji_bridge/plugins."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("semiblind-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"fiji_bridge/plugins/{p.as_posix()}" for p in (*imagej_cli.SCRIPTS, imagej_cli.MACRO)}
    shipped |= {f"fiji_bridge/plugins/java/src/semiblind/{p.name}" for p in (ROOT / "plugins/java/src/semiblind").iterdir()}
    assert shipped <= names and "fiji_bridge/models/semiblind_default.onnx" in names
    assert not any("/build/" in n for n in names)                      # no compiled classes from this checkout
    # the subpackages ship; training ships as semiblind_training, never as a top-level `training` module
    assert {"fiji_bridge/settings.py", "fiji_bridge/optics/psf.py", "fiji_bridge/estimation/psf_map.py",
            "fiji_bridge/restoration/tiling.py", "fiji_bridge/io/units.py", "fiji_bridge/parallel/batch.py",
            "fiji_bridge/imagej/command.py", "fiji_bridge/cli/semiblind.py", "fiji_bridge/simulation/simulate.py",
            "semiblind_training/__main__.py", "semiblind_training/train.py",
            "semiblind_training/configs/default.json"} <= names
    assert not any(n.startswith("training/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    fiji = fake_fiji(tmp_path)
    code = ("import sys; from fiji_bridge import imagej, cli; print(imagej.PLUGINS_DIR); "
            "sys.exit(cli.main(['fiji', 'install', sys.argv[1], '--quiet']))")
    proc = subprocess.run([sys.executable, "-c", code, str(fiji)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(site / "fiji_bridge" / "plugins")
    script = fiji / imagej_cli.SCRIPT
    assert script.read_bytes() == (ROOT / "plugins" / imagej_cli.SCRIPT).read_bytes()


def test_shim_is_built_one_way_and_never_into_site_packages(tmp_path, monkeypatch):
    """``plugins/java/build.sh`` (run by ``make install``) calls the one recipe, ``build_shim``; an installed
    package builds the shim into the user's cache, a checkout into plugins/java/build/."""
    from fiji_bridge.imagej import _jvm
    text = (ROOT / "plugins" / "java" / "build.sh").read_text()
    assert "from fiji_bridge.imagej._jvm import main" in text
    assert not any(line.strip().startswith(("javac", "jar ")) for line in text.splitlines())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    installed = tmp_path / "site-packages" / "fiji_bridge" / "plugins" / "java"
    installed.mkdir(parents=True)
    jar = _jvm._shim_jar(installed)
    assert jar.parent.parent.parent == tmp_path / "cache" and "site-packages" not in jar.parts
    assert _jvm._shim_jar(ROOT / "plugins" / "java") == ROOT / "plugins" / "java" / "build" / "semiblind-ij1.jar"
