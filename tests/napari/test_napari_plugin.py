"""The napari plugin on a real viewer: widget runs and layers, cancel, bad input, map reader/writer, sample."""
import os
from pathlib import Path

import numpy as np
import pytest

from fiji_bridge import deconvolve
from fiji_bridge.napari import layers as L
from fiji_bridge.napari.widget import SemiBlindWidget
from fiji_bridge.pipeline import write_psf_map
from fiji_bridge.simulation.simulate import simulate_tilted
from tests.conftest import simulation_config

CFG = simulation_config()
PX = CFG.optics.pixel_size


@pytest.fixture(scope="module")
def blurred():
    return simulate_tilted(CFG, seed=2, shape=(256, 256), photons=800.0).blurred


@pytest.fixture
def errors(monkeypatch):
    shown = []
    import napari.utils.notifications as notes
    monkeypatch.setattr(notes, "show_error", lambda message: shown.append(message))
    monkeypatch.setattr(notes, "show_info", lambda message: shown.append(message))
    return shown


def _wait(qtbot, worker, timeout=180_000):
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


def test_manifest_is_valid():
    from npe2 import PluginManifest
    manifest = PluginManifest.from_file(Path(L.__file__).with_name("napari.yaml"))
    assert {c.id for c in manifest.contributions.commands} >= {"semiblind.widget", "semiblind.read_map",
                                                                 "semiblind.write_map", "semiblind.sample"}


def test_widget_deconvolves_and_adds_layers_in_world_coordinates(make_napari_viewer, qtbot, blurred, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(blurred, name="field", scale=(PX, PX), translate=(5.0, -3.0))
    widget = SemiBlindWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SemiBlind")
    assert widget.fields["pixel_size"].value == repr(PX)          # prefilled from the layer's scale
    widget.fields["iterations"].value = "4"
    widget.montage.value = True
    worker = widget.start()
    _wait(qtbot, worker)
    names = [layer.name for layer in viewer.layers]
    restored = viewer.layers["field restored"]
    assert restored.data.shape == blurred.shape and np.all(np.isfinite(restored.data))
    np.testing.assert_allclose(restored.scale, (PX, PX))
    np.testing.assert_allclose(restored.translate, (5.0, -3.0))
    defocus = viewer.layers["field defocus (waves RMS)"]
    assert defocus.scale[0] > 10 * PX and defocus.translate[0] > 5.0      # map pixels: patch centres
    assert any(n.startswith("field depth_um") for n in names) and "field PSF grid" in names
    assert restored.metadata["semiblind_settings"]["iterations"] == 4
    shot = Path(os.environ.get("SEMIBLIND_NAPARI_SCREENSHOT", tmp_path / "napari.png"))
    viewer.layers["field"].visible = False
    viewer.window.resize(1300, 760)
    viewer.reset_view()
    viewer.screenshot(str(shot), canvas_only=False)
    assert shot.stat().st_size > 10_000


def test_stack_in_stack_out(make_napari_viewer, qtbot, blurred):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([blurred, blurred[::-1]]), name="tz", scale=(1.0, PX, PX))
    widget = SemiBlindWidget(viewer)
    widget.fields["iterations"].value = "2"
    worker = widget.start(map_only=True)
    _wait(qtbot, worker)
    defocus = viewer.layers["tz defocus (waves RMS)"]
    assert defocus.data.ndim == 3 and defocus.data.shape[0] == 2 and defocus.scale[0] == 1.0
    assert "tz restored" not in [layer.name for layer in viewer.layers]      # estimate-only


def test_cancel_stops_a_long_run_and_leaves_the_viewer_usable(make_napari_viewer, qtbot, blurred, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.tile(blurred, (8, 8)), name="big", scale=(PX, PX))     # 2048²
    widget = SemiBlindWidget(viewer)
    widget.fields["iterations"].value = "5000"
    worker = widget.start()
    qtbot.waitUntil(lambda: "Richardson" in widget.status.value, timeout=120_000)
    # the viewer answers while the run goes on: a layer added now is there at once, and RL keeps going
    before = widget.status.value
    viewer.add_points([[10, 10]], name="during")
    assert "during" in [layer.name for layer in viewer.layers] and worker.is_running
    assert widget.progress_bar.n > 0                     # napari's progress bar follows the run
    qtbot.waitUntil(lambda: widget.status.value != before, timeout=60_000)
    widget.cancel()
    _wait(qtbot, worker, timeout=60_000)
    assert widget.status.value == "cancelled" and "big restored" not in [layer.name for layer in viewer.layers]
    assert widget.run_button.enabled
    viewer.add_image(blurred, name="after")                    # still usable
    assert "after" in [layer.name for layer in viewer.layers]


@pytest.mark.parametrize("field, value, message", [("pixel_size", "abc", "pixel_size"),
                                                    ("iterations", "2.5", "iterations"),
                                                    ("na", "1.2", "na")])
def test_bad_input_is_a_notification_and_adds_nothing(make_napari_viewer, qtbot, blurred, errors, field, value,
                                                      message):
    viewer = make_napari_viewer()
    viewer.add_image(blurred, name="field", scale=(PX, PX))
    widget = SemiBlindWidget(viewer)
    widget.fields[field].value = value
    worker = widget.start()
    if worker is not None:                          # refused by the optics check inside the run
        _wait(qtbot, worker)
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors
    assert [layer.name for layer in viewer.layers] == ["field"]


def test_map_file_round_trip_reader_writer_and_reuse(blurred, tmp_path):
    result = deconvolve(blurred, iterations=3, tv=0.002)
    path = tmp_path / "field_map.tif"
    write_psf_map(path, result.psf_map)
    reader = L.get_reader(str(path))
    assert reader is not None and L.get_reader(str(tmp_path / "other.png")) is None
    not_a_map = tmp_path / "plain.tif"
    import tifffile
    tifffile.imwrite(not_a_map, blurred)
    assert L.get_reader(str(not_a_map)) is None
    layers = reader(str(path))
    assert {kw["name"] for _, kw, _ in layers} >= {"field_map defocus (waves RMS)", "field_map confidence (probability)"}
    loaded = L.load_psf_map(path)
    again = deconvolve(blurred, iterations=3, tv=0.002, psf_map=loaded)
    np.testing.assert_allclose(again.image, result.image, rtol=1e-5, atol=1e-5 * float(result.image.max()))
    written = L.write_map(str(tmp_path / "back.tif"), layers)
    assert L.load_psf_map(written[0]).parameters.shape == result.psf_map.parameters.shape


def test_sample_data_loads():
    (data, kwargs, kind), = L.sample_data()
    assert kind == "image" and data.shape == (512, 512) and kwargs["scale"] == [PX, PX]
