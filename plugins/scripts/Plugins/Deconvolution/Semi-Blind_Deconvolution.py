#@ ImagePlus (label="Image") imp
#@ Integer (label="Iterations (0 = auto)", value=0, min=0, max=10000) iterations
#@ String (label="TV weight (0-0.2, auto = from the noise)", value="auto") tv
#@ Integer (label="Map stride (px, 0 = auto)", value=0, min=0) stride
#@ File (label="Model (.onnx, empty = bundled)", required=false, style="extensions:onnx") model
#@ String (label="Device", choices={"cpu", "gpu", "auto"}, value="cpu") device
#@ Float (label="NA (0 = model's)", value=0.0, min=0.0) na
#@ String (label="Wavelength in um (0 = model's; one per channel: 0.46,0.52)", value="0") wavelength
#@ Float (label="Pixel size in um (0 = image calibration)", value=0.0, min=0.0, style="format:0.0000") pixel_size
#@ Float (label="Immersion refractive index n (0 = model's)", value=0.0, min=0.0) n
#@ String (label="Objective (sets NA and n)", choices={"none/custom", "10x/0.3-air", "10x/0.45-air", "20x/0.75-air", "20x/0.8-air", "40x/0.75-air", "40x/0.95-air", "40x/1.15-water", "40x/1.3-oil", "60x/1.2-water", "60x/1.4-oil", "63x/1.4-oil", "100x/1.4-oil", "100x/1.45-oil"}, value="none/custom") objective
#@ String (label="Channels (map of a multi-channel image)", choices={"best", "joint", "independent"}, value="best") channels
#@ String (label="Frames (maps of a time-lapse)", choices={"smooth", "single", "independent"}, value="smooth") frames
#@ File (label="PSF map (.tif, empty = estimate one)", required=false, style="extensions:tif/tiff") psf_map
#@ Boolean (label="PSF montage", value=false) psf_montage
#@output ImagePlus restored
#@output ImagePlus parameter_map
#@output ImagePlus depth_map
#@output ImagePlus psf_grid

# Semi-Blind Deconvolution for Fiji (Plugins > Deconvolution > Semi-Blind Deconvolution).
#
# A SciJava script command: every input is a parameter, so the macro recorder records e.g.
#   run("Semi-Blind Deconvolution", "imp=cells.tif iterations=0 tv=auto stride=0 device=cpu na=0 ...");
# The parameters are those of fiji_bridge.settings.RunSettings (tests/test_settings.py checks this header):
# iterations 0 and tv "auto" let the image's noise choose them; 0 optics mean the image's calibration and the
# model's optics; the objective list is fiji_bridge.optics.objectives.OBJECTIVES (tests/imagej check it).
# Hyperstacks come back as hyperstacks; a selection restricts the run to its bounding box; Esc cancels.
# It runs in Fiji's Python mode (CPython with the `semiblind` package installed, see
# `semiblind fiji install --help`); under Jython it stops with an explanation.
# Installed by `semiblind fiji install /path/to/Fiji.app`.

try:
    from fiji_bridge.imagej.command import run_script
except ImportError as exc:  # Jython, or a Python environment without semiblind
    from ij import IJ
    IJ.error("Semi-Blind Deconvolution",
             "This command needs Fiji's Python mode with the semiblind package installed "
             "(not on PyPI: pip install '/path/to/SemiBlind[imagej]' from a source checkout, or the wheel "
             "with [imagej]): %s" % exc)
    raise

restored, parameter_map, depth_map, psf_grid = run_script(
    imp, iterations=iterations, tv=tv, stride=stride, model=model, device=device,
    na=na, wavelength=wavelength, pixel_size=pixel_size, n=n, objective=objective, channels=channels,
    frames=frames, psf_map=psf_map, psf_montage=psf_montage)
