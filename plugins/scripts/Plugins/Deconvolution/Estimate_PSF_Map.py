#@ ImagePlus (label="Image") imp
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
#@output ImagePlus psf_map

# Estimate PSF Map for Fiji (Plugins > Deconvolution > Estimate PSF Map): the PSF map of the image (every plane of
# a hyperstack), no deconvolution; a quick preview before Semi-Blind Deconvolution. File > Save As Tiff of the
# map window gives a map file that Semi-Blind Deconvolution's "PSF map" field and
# `semiblind deconvolve --psf-map` reuse. Parameters as in Semi-Blind_Deconvolution.py; Fiji's Python mode.

try:
    from fiji_bridge.imagej.command import run_map_script
except ImportError as exc:  # Jython, or a Python environment without semiblind
    from ij import IJ
    IJ.error("Estimate PSF Map",
             "This command needs Fiji's Python mode with the semiblind package installed "
             "(not on PyPI: pip install '/path/to/SemiBlind[imagej]' from a source checkout, or the wheel "
             "with [imagej]): %s" % exc)
    raise

psf_map = run_map_script(imp, stride=stride, model=model, device=device, na=na, wavelength=wavelength,
                         pixel_size=pixel_size, n=n, objective=objective, channels=channels, frames=frames)
