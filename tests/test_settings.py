"""`fiji_bridge.settings.RunSettings` is the one place for the settings of a run: the API, the command line
(generated), the ImageJ command (parsed) and what cannot be generated (the Fiji script's ``#@`` header, the Java
dialog table, the shipped macros, the README's macro lines) agree with it."""
from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest

from fiji_bridge import settings as S
from fiji_bridge.settings import AUTO, DIALOG, MAX_ITERATIONS, RunSettings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "plugins/scripts/Plugins/Deconvolution/Semi-Blind_Deconvolution.py"
JAVA = ROOT / "plugins/java/src/semiblind/Semi_Blind_Deconvolution.java"
MACROS = [*sorted((ROOT / "plugins/macros").glob("*.ijm")), ROOT / "README.md", ROOT / "plugins/README_imagej.md"]


def test_defaults_are_auto_and_validated():
    s = RunSettings()
    assert (s.iterations, s.tv, s.device, s.stride, s.grid, s.tile, s.model) == (AUTO, AUTO, "cpu", None, None,
                                                                               None, None)
    assert RunSettings(iterations=7, tv=0.01, grid=[3, 2]).grid == (3, 2)


@pytest.mark.parametrize("kw, name", [
    ({"iterations": 0}, "iterations"), ({"iterations": MAX_ITERATIONS + 1}, "iterations"),
    ({"iterations": True}, "iterations"), ({"tv": 0.5}, "tv"), ({"tv": "x"}, "tv"), ({"stride": 0}, "stride"),
    ({"grid": (0, 2)}, "grid"), ({"tile": 8}, "tile"), ({"device": "tpu"}, "device"), ({"model": 3}, "model"),
])
def test_one_message_naming_the_setting(kw, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        RunSettings(**kw)


def test_api_keywords_are_the_settings():
    from fiji_bridge import deconvolve
    from fiji_bridge.pipeline import process_file
    names = {f.name for f in fields(RunSettings)}
    for fn in (deconvolve, process_file):
        params = inspect.signature(fn).parameters
        for name in names & set(params):
            assert params[name].default == RunSettings.__dataclass_fields__[name].default, (fn.__name__, name)
    assert names <= set(inspect.signature(process_file).parameters)


def parser_for(*commands: str) -> argparse.ArgumentParser:
    from fiji_bridge.cli.semiblind import build_parser
    return build_parser()


@pytest.mark.parametrize("command", ["deconvolve", "batch"])
def test_command_line_options_are_generated(command):
    from fiji_bridge.cli.semiblind import build_parser
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    dests = {a.dest: a for a in sub._actions}
    for f in fields(RunSettings):
        assert f.name in dests, f"--{f.name} missing from semiblind {command}"
        assert dests[f.name].default == f.default
    argv = ["in", "-o", "out"] if command == "deconvolve" else ["in", "-o", "out"]
    args = sub.parse_args([*argv, "--iterations", "auto", "--tv", "0.01", "--grid", "3x2", "--na", "1.2"])
    s = S.from_args(args)
    assert (s.iterations, s.tv, s.grid, s.na) == (AUTO, 0.01, (3, 2), 1.2)


def test_dialog_strings():
    p = RunSettings.parse({"iterations": "0", "tv": "auto", "stride": "0", "na": "0", "model": "", "device": "CPU"})
    assert p == RunSettings()
    p = RunSettings.parse({"iterations": "12", "tv": "0.004", "na": "1.2", "pixel_size": ""})
    assert (p.iterations, p.tv, p.na, p.pixel_size) == (12, 0.004, 1.2, None)
    assert RunSettings.parse({"iterations": "auto", "tv": ""}).tv == AUTO
    assert RunSettings.parse({"tv": "0"}).tv == 0.0                       # 0 is plain RL, not auto
    for bad, name in (({"iterations": "2.5"}, "iterations"), ({"iterations": str(MAX_ITERATIONS + 1)}, "iterations"),
                      ({"tv": "0.5"}, "tv"), ({"sigma": "1"}, "sigma"), ({"device": "tpu"}, "device")):
        with pytest.raises(ValueError, match=name):
            RunSettings.parse(bad)


def script_parameters() -> dict[str, dict[str, str]]:
    out = {}
    for line in SCRIPT.read_text().splitlines():
        m = re.match(r"#@ (\w+) \((.*)\) (\w+)$", line)
        if m:
            attrs = dict(re.findall(r'(\w+)=("[^"]*"|\{[^}]*\}|[^,\s]+)', m.group(2)))
            out[m.group(3)] = {"type": m.group(1), **{k: v.strip('"') for k, v in attrs.items()}}
    return out


def test_fiji_script_header_agrees():
    from fiji_bridge.imagej.command import KEYS, run_script
    params = script_parameters()
    assert set(params) - {"imp"} == set(KEYS)
    defaults = RunSettings.dialog_defaults()
    signature = inspect.signature(run_script).parameters

    def norm(value):
        text = str(value).strip().lower()
        try:
            return float(text)
        except ValueError:
            return text
    for key in DIALOG:
        if key == "model":
            continue
        p = params[key]
        assert norm(p["value"]) == norm(defaults[key]) == norm(signature[key].default), key
        meta = RunSettings.__dataclass_fields__[key].metadata
        if key not in ("device", "model"):
            assert meta["dialog"].split(" = ")[0] in p["label"] and "=" in p["label"], (key, p["label"])
    assert int(params["iterations"]["max"]) == MAX_ITERATIONS
    assert params["tv"]["type"] == "String"                     # holds "auto" or a number
    assert set(params["device"]["choices"].strip("{}").replace('"', "").replace(" ", "").split(",")) == set(S.DEVICES)


def test_java_dialog_agrees():
    from fiji_bridge.imagej.command import KEYS
    text = JAVA.read_text()
    block = text[text.index("static final String[][] FIELDS"):]
    table = re.findall(r'\{"(\w+)", "([^"]*)", "(\w+)"\}', block[:block.index("};")])
    labels = dict(re.findall(r'case "(\w+)": return "(\w+)";', text))
    for key in DIALOG:
        assert labels.get(key, key) == RunSettings.__dataclass_fields__[key].metadata["label"], key
    keys = [k for k, _, _ in table]
    assert set(keys) | {"model", "device"} == set(DIALOG)
    kinds = {k: kind for k, _, kind in table}
    assert kinds["tv"] == "text"                                # "auto" or a number
    assert set(keys) <= set(KEYS)


def test_macros_use_known_keys():
    from fiji_bridge.imagej.command import KEYS
    for path in MACROS:
        for options in re.findall(r'run\("Semi-Blind Deconvolution", "([^"]*)"\)', path.read_text()):
            for key in re.findall(r"(\w+)=", options):
                assert key in KEYS, (path.name, key)
        for options in re.findall(r"options=\[([^\]]*)\]", path.read_text()):
            for key in re.findall(r"(\w+)=", options):
                assert key in KEYS, (path.name, key)
