"""Restoration: the spatially-variant blur operator (`sv_convolution`), TV-regularised Richardson-Lucy
(`richardson_lucy`), tiled/out-of-core deconvolution (`tiling`) and the NumPy/CuPy array backend (`backend`)."""
