"""Estimation: image -> patches -> ONNX model -> map of Zernike coefficients (`psf_map`), with the model's
input/output contract (`model_config`), the ONNX runtime wrapper (`model`), resampling to the model's pixel
size (`resample`) and the image's noise / photon level that picks automatic restoration settings (`noise`)."""
