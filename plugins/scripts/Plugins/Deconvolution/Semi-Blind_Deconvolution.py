#@ ImagePlus (label="Image") imp
#@ Integer (label="Iterations (0 = auto)", value=0, min=0, max=10000) iterations
#@ String (label="TV weight (0-0.2, auto = from the noise)", value="auto") tv
#@ Integer (label="Map stride (px, 0 = auto)", value=0, min=0) stride
#@ File (label="Model (.onnx, empty = bundled)", required=false, style="extensions:onnx") model
#@ String (label="Device", choices={"cpu", "gpu", "auto"}, value="cpu") device
#@ Float (label="NA (0 = model's)", value=0.0, min=0.0) na
#@ Float (label="Wavelength in um (0 = model's)", value=0.0, min=0.0) wavelength
#@ Float (label="Pixel size in um (0 = image calibration)", value=0.0, min=0.0, style="format:0.0000") pixel_size
#@ Float (label="Immersion refractive index n (0 = model's)", value=0.0, min=0.0) n
#@ Boolean (label="PSF montage", value=false) psf_montage
#@output ImagePlus restored
#@output ImagePlus psf_map
#@output ImagePlus depth_map
#@output ImagePlus psf_grid

# Semi-Blind Deconvolution for Fiji (Plugins > Deconvolution > Semi-Blind Deconvolution).
#
# A SciJava script command: every input is a parameter, so the macro recorder records e.g.
#   run("Semi-Blind Deconvolution", "imp=cells.tif iterations=0 tv=auto stride=0 device=cpu na=0 ...");
# The parameters are those of fiji_bridge.settings.RunSettings (tests/test_settings.py checks this header):
# iterations 0 and tv "auto" let the image's noise choose them; 0 optics mean the image's calibration and the
# model's optics.
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

restored, psf_map, depth_map, psf_grid = run_script(
    imp, iterations=iterations, tv=tv, stride=stride, model=model, device=device,
    na=na, wavelength=wavelength, pixel_size=pixel_size, n=n, psf_montage=psf_montage)
