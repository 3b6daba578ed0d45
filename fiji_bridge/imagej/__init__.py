"""The Fiji / ImageJ bridge.

* `_jvm`: where the plugins live, the Java shim, starting a JVM with ImageJ 1, Java class look-ups;
* `convert`: ImagePlus <-> NumPy, calibration <-> pixel size in µm, the thin ImageJ2/PyImageJ path;
* `hyperstack`: the planes a run works on (every plane of a hyperstack, restricted to the selection);
* `results`: SemiBlind's result images (restored hyperstack, PSF map window in the map-file format, depth map,
  PSF montage);
* `command`: the "Semi-Blind Deconvolution" and "Estimate PSF Map" commands (dialog/macro parameters ->
  `fiji_bridge.stacks.deconvolve_stack` -> result images; Esc cancels).

The names below are the bridge's public API (``from fiji_bridge import imagej; imagej.numpy_to_imageplus(...)``).
"""
from fiji_bridge.imagej._jvm import (JAVA_DIR, PLUGINS_DIR, SHIM_JAR, build_shim, find_ij_jar, is_imageplus, jclass,
                                     jvm_started, start_jvm)
from fiji_bridge.imagej.convert import (imagej2_from, imageplus_axes, imageplus_from, imageplus_to_numpy,
                                        numpy_to_imageplus, pixel_size_um, set_pixel_size, to_java, to_numpy,
                                        unit_to_um)
from fiji_bridge.imagej.results import (depth_map_to_imageplus, depth_stack_to_imageplus, map_stack_to_imageplus,
                                        parameter_map_to_imageplus, psf_montage_to_imageplus, restored_to_imageplus,
                                        result_title)

__all__ = [
    "PLUGINS_DIR", "JAVA_DIR", "SHIM_JAR", "find_ij_jar", "build_shim", "jvm_started", "start_jvm", "jclass",
    "is_imageplus", "unit_to_um", "pixel_size_um", "set_pixel_size", "imageplus_axes", "imageplus_to_numpy",
    "numpy_to_imageplus", "to_numpy", "to_java", "imageplus_from", "imagej2_from", "result_title",
    "restored_to_imageplus", "parameter_map_to_imageplus", "depth_map_to_imageplus", "psf_montage_to_imageplus",
    "map_stack_to_imageplus", "depth_stack_to_imageplus",
]
