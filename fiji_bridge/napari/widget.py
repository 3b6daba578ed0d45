"""The napari dock widget: semi-blind deconvolution of the selected image layer, off the GUI thread.

The run's fields are generated from `fiji_bridge.settings.RunSettings` (labels and tooltips from its field
metadata, values parsed by `RunSettings.parse`, so the rules and messages are the ImageJ dialog's: an empty
field or 0 means auto/default). Optics are prefilled from the layer (its scale as the pixel size in µm when
it is not 1) and from objective presets. The work runs in a napari thread worker; progress goes to napari's
progress bar, Cancel stops between RL iterations, errors become one-line notifications, and the results
are added as layers in the input's world coordinates (`fiji_bridge.napari.layers`). Stacks: each 2-D plane
of the leading axes (T, Z, C) is restored with its own map, and the results keep the axes.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import fields

import numpy as np
from magicgui import widgets

from ..optics.objectives import OBJECTIVES
from ..settings import DEVICES, OPTICS_FIELDS, RunSettings
from . import layers as L

#: Settings the widget offers (the rest — tiling, grid — have sensible defaults for interactive images).
WIDGET_SETTINGS = ("iterations", "tv", "stride", "device", "model", *OPTICS_FIELDS)
PRESET_NONE = "(from the layer / model)"


class Cancelled(Exception):
    """Raised in the worker by the progress callback once Cancel was pressed."""


class SemiBlindWidget(widgets.Container):
    """Dock widget; ``napari_viewer`` is passed by napari (npe2 widget contribution)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = widgets.create_widget(annotation="napari.layers.Image", label="image")
        self.objective = widgets.ComboBox(label="objective", choices=[PRESET_NONE, *OBJECTIVES],
                                          value=PRESET_NONE)
        self.fields: dict[str, widgets.Widget] = {}
        for f in fields(RunSettings):
            if f.name not in WIDGET_SETTINGS:
                continue
            label = f.metadata["label"].lower().replace("_", " ")
            tip = f.metadata["help"].split("{")[0] + (f" ({f.metadata['dialog']})" if f.metadata["dialog"] else "")
            if f.name == "device":
                w = widgets.ComboBox(label=label, choices=list(DEVICES), value=f.default, tooltip=tip)
            elif f.name == "model":
                w = widgets.FileEdit(label=label, filter="*.onnx", tooltip=tip)
            else:
                default = RunSettings.dialog_defaults().get(f.name, "")
                w = widgets.LineEdit(label=label, value=default, tooltip=tip)
            self.fields[f.name] = w
        self.montage = widgets.CheckBox(label="PSF grid montage", value=False)
        self.estimate_button = widgets.PushButton(text="Estimate map only")
        self.run_button = widgets.PushButton(text="Deconvolve")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.status = widgets.Label(value="")
        self.extend([self.image, self.objective, *self.fields.values(), self.montage, self.estimate_button,
                     self.run_button, self.cancel_button, self.status])
        self.objective.changed.connect(self._apply_preset)
        self.image.changed.connect(self._prefill)
        self.estimate_button.clicked.connect(lambda: self.start(map_only=True))
        self.run_button.clicked.connect(lambda: self.start(map_only=False))
        self.cancel_button.clicked.connect(self.cancel)
        self.worker = None
        self._cancel = threading.Event()
        self.viewer.layers.events.inserted.connect(lambda e: self.image.reset_choices())
        self.viewer.layers.events.removed.connect(lambda e: self.image.reset_choices())
        self.image.reset_choices()
        self._prefill()

    # ------------------------------------------------------------------------------------------ inputs
    def _apply_preset(self, name: str | None = None) -> None:
        name = self.objective.value if name is None else name
        if name in OBJECTIVES:
            na, n = OBJECTIVES[name]
            self.fields["na"].value, self.fields["n"].value = repr(na), repr(n)

    def _prefill(self, *_) -> None:
        layer = self.image.value
        if layer is None:
            return
        scale = float(layer.scale[-1])
        optics = layer.metadata.get("semiblind_optics", {})
        if "pixel_size" in optics:
            self.fields["pixel_size"].value = repr(optics["pixel_size"])
        elif scale != 1.0:       # napari's default scale is 1 (uncalibrated); anything else is taken as µm
            self.fields["pixel_size"].value = repr(scale)

    def settings(self) -> RunSettings:
        """The run settings as typed (ValueError naming the field when one is bad)."""
        values = {name: (str(w.value) if w.value is not None else "") for name, w in self.fields.items()}
        if str(values.get("model", "")).strip() in ("", "."):
            values["model"] = ""
        return RunSettings.parse(values)

    # -------------------------------------------------------------------------------------- running
    def start(self, map_only: bool = False):
        """Start a run in a thread worker (returns it); errors before the start are notified."""
        from napari.qt.threading import create_worker
        from napari.utils import notifications

        layer = self.image.value
        try:
            if layer is None:
                raise ValueError("image: choose an image layer")
            data = np.asarray(layer.data)
            if layer.rgb or data.ndim < 2:
                raise ValueError("image: a grey-level layer of at least 2-D is needed (RGB is not supported)")
            settings = self.settings()
        except ValueError as exc:
            notifications.show_error(str(exc))
            return None
        from napari.utils import progress

        self._cancel.clear()
        # napari's own progress bar (activity dock), driven from the GUI thread by the worker's updates
        self.progress_bar = progress(total=1000, desc="SemiBlind")
        self.worker = create_worker(self._run, data, settings, map_only)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda result: self._on_done(result, layer))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled = self.estimate_button.enabled = False
        self.cancel_button.enabled = True
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        self._cancel.set()
        self.status.value = "cancelling…"

    def _run(self, data: np.ndarray, settings: RunSettings, map_only: bool):
        """Generator run by the worker: the computation runs in a thread of its own and reports through a
        queue, so progress reaches the GUI while RL iterates and Cancel acts at the next iteration."""
        updates: queue.Queue = queue.Queue()
        outcome: dict = {}

        def progress(fraction: float, message: str) -> None:
            if self._cancel.is_set():
                raise Cancelled()
            updates.put((fraction, message))

        def work() -> None:
            try:
                outcome["result"] = compute(data, settings, map_only, progress)
            except Cancelled:
                outcome["result"] = {"cancelled": True}
            except Exception as exc:       # reported to the GUI thread as a one-line notification
                outcome["result"] = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            finally:
                updates.put(None)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while (item := updates.get()) is not None:
                yield item
        finally:
            if thread.is_alive():          # the worker was quit: stop the computation at its next step
                self._cancel.set()
            thread.join()
        return outcome["result"]

    def _on_progress(self, item) -> None:
        fraction, message = item
        self.status.value = f"{fraction:.0%} {message}"
        done = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        self.progress_bar.set_description(f"SemiBlind: {message}")
        self.progress_bar.update(max(done - self.progress_bar.n, 0))

    def _on_done(self, result: dict, layer) -> None:
        from napari.utils import notifications
        if result.get("cancelled"):
            self.status.value = "cancelled"
            notifications.show_info("SemiBlind: cancelled")
            return
        if "error" in result:
            self.status.value = "failed"
            notifications.show_error(f"SemiBlind: {result['error']}")
            return
        for data, kwargs, kind in result_layers(result, layer.name, layer.scale, layer.translate,
                                                montage=self.montage.value):
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.status.value = "done"

    def _on_error(self, exc: BaseException) -> None:
        """Only for failures of the worker machinery itself (the computation reports through its result)."""
        from napari.utils import notifications
        self.status.value = "failed"
        notifications.show_error(f"SemiBlind: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")

    def _on_finished(self) -> None:
        self.run_button.enabled = self.estimate_button.enabled = True
        self.cancel_button.enabled = False
        self.progress_bar.close()


def compute(data: np.ndarray, settings: RunSettings, map_only: bool, progress) -> dict:
    """Map (and restoration) of every 2-D plane of ``data`` (..., Y, X); ``progress(fraction, message)``."""
    from ..estimation.model import PSFModel
    from ..estimation.psf_map import estimate_psf_map
    from ..pipeline import deconvolve, image_optics

    net = PSFModel(settings.model, device=settings.device)
    optics = image_optics(None, net.config.default_image_optics, **settings.optics())
    lead = data.shape[:-2]
    planes = list(np.ndindex(*lead)) or [()]
    maps, restored, stacks, used = [], [], [], None
    for k, index in enumerate(planes):
        def plane_progress(f: float, message: str, k: int = k) -> None:
            progress((k + f) / len(planes), (f"plane {k + 1}/{len(planes)}: " if lead else "") + message)
        plane = data[index] if index else data
        if map_only:
            m = estimate_psf_map(plane, net, stride=settings.stride, optics=optics, progress=plane_progress)
        else:
            result = deconvolve(plane, iterations=settings.iterations, tv=settings.tv, model=net,
                                stride=settings.stride, optics=optics, device=settings.device,
                                progress=plane_progress)
            m, used = result.psf_map, (result.psfs, result.settings)
            restored.append(result.image)
        maps.append(m)
        stacks.append(m.to_stack()[0])
    progress(1.0, "done")
    shape = lead
    return {"maps": maps, "map_stack": np.stack(stacks).reshape(*shape, *stacks[0].shape),
            "restored": None if map_only else np.stack(restored).reshape(*shape, *restored[0].shape),
            "psfs": None if used is None else used[0], "settings": None if used is None else used[1],
            "optics": optics.to_dict()}


def result_layers(result: dict, name: str, scale, translate, montage: bool = False) -> list:
    """Layer data of a `compute` result, in the input layer's world coordinates."""
    out = []
    if result["restored"] is not None:
        out.append(L.restored_layer(result["restored"], name, scale, translate, result["settings"]))
    out += L.map_layers(result["maps"][0], name, scale, translate, stack=result["map_stack"])
    if montage and result["psfs"] is not None:
        out.append(L.psf_montage_layer(result["psfs"], name, float(scale[-1])))
    return out
