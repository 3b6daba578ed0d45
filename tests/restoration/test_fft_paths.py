"""The engine's two CPU FFT paths (FFTW plans via pyfftw, SciPy's pocketfft) give the same operator and RL
result; chunked buffers, slot reuse and the banded TV update match the unchunked arithmetic (issue 15)."""
from __future__ import annotations

import numpy as np
import pytest

from fiji_bridge.restoration import richardson_lucy as rl_module
from fiji_bridge.restoration import sv_convolution as sv_module
from fiji_bridge.restoration.backend import RealFFT2, SeparableFFT, fftw_module
from fiji_bridge.restoration.richardson_lucy import _TVBands, richardson_lucy, tv_divergence
from fiji_bridge.restoration.sv_convolution import SVConvolution

PATHS = ["scipy", pytest.param("fftw", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("pyfftw") is None, reason="pyfftw not installed (semiblind[fftw])"))]


def _psfs(rng, gy, gx, size):
    p = rng.random((gy, gx, size, size)).astype(np.float32) ** 4
    return p / p.sum(axis=(-2, -1), keepdims=True)


@pytest.mark.parametrize("path", PATHS)
def test_backend_choice(path, monkeypatch):
    monkeypatch.setenv("SEMIBLIND_FFT", path)
    fft = RealFFT2(np, 3, (24, 40))
    assert fft.backend == ("fftw" if path == "fftw" else "pocketfft")
    assert (fftw_module() is None) == (path == "scipy")
    rng = np.random.default_rng(0)
    data = rng.random((3, 24, 40)).astype(np.float32)
    fft.real[...] = data
    spec = fft.r2c()
    np.testing.assert_allclose(spec, np.fft.rfft2(data), rtol=1e-4, atol=1e-4)
    back = fft.c2r(spec)
    np.testing.assert_allclose(back / (24 * 40), data, atol=1e-5)     # unnormalised inverse


@pytest.mark.parametrize("path", PATHS)
def test_separable_passes_equal_2d_fft(path, monkeypatch):
    """Row FFTs of the data rows, then column FFTs, equal the 2-D FFT of the zero-padded block; the inverse
    passes give it back times Ly·Lx (unnormalised)."""
    monkeypatch.setenv("SEMIBLIND_FFT", path)
    ly, lx, rows, batch, terms = 40, 36, 23, 2, 4
    fft = SeparableFFT(np, (ly, lx), rows, batch, terms)
    assert fft.backend == ("fftw" if path == "fftw" else "pocketfft")
    data = np.random.default_rng(7).random((batch, rows, lx)).astype(np.float32)
    fft.rows[...] = data
    fft.terms[...] = 1                                  # stale content: the row pass must overwrite its rows
    fft.rows_forward()
    fft.terms[:, rows:] = 0
    fft.columns()
    padded = np.zeros((batch, ly, lx))
    padded[:, :rows] = data
    np.testing.assert_allclose(fft.terms[:batch], np.fft.rfft2(padded), rtol=1e-4, atol=1e-4)
    fft.columns(inverse=True)
    back = fft.rows_inverse()
    assert back.shape == (batch, rows, lx)
    np.testing.assert_allclose(back / (ly * lx), data, atol=1e-5)


@pytest.mark.parametrize("winner", ["race", "pocketfft", "fftw"])
def test_separable_fftw_kept_only_where_it_beats_pocketfft(winner, monkeypatch):
    """The separable passes race like `RealFFT2`: the winner (once per shape) runs, with the same transforms."""
    pytest.importorskip("pyfftw")
    from fiji_bridge.restoration import backend
    monkeypatch.delenv("SEMIBLIND_FFT", raising=False)
    monkeypatch.setattr(backend, "_RACE", {})
    ly, lx, rows, batch, terms = 24, 20, 13, 2, 4
    key = ("separable", (batch, rows, lx), (terms, ly, lx // 2 + 1), "numpy")
    if winner != "race":
        backend._RACE[key] = winner == "fftw"
    fft = SeparableFFT(np, (ly, lx), rows, batch, terms)
    assert fft.backend == ("fftw" if backend._RACE[key] else "pocketfft")
    data = np.random.default_rng(9).random((batch, rows, lx)).astype(np.float32)
    fft.rows[...] = data
    fft.rows_forward()
    fft.terms[:, rows:] = 0
    fft.columns()
    fft.columns(inverse=True)
    np.testing.assert_allclose(fft.rows_inverse() / (ly * lx), data, atol=1e-5)


@pytest.mark.parametrize("winner", ["race", "pocketfft", "fftw"])
def test_fftw_kept_only_where_it_beats_pocketfft(winner, monkeypatch):
    """Without SEMIBLIND_FFT, FFTW's plans race pocketfft once per shape and the faster runs; either way the
    transforms (and an operator built on them) are the same."""
    pytest.importorskip("pyfftw")
    from fiji_bridge.restoration import backend
    monkeypatch.delenv("SEMIBLIND_FFT", raising=False)
    monkeypatch.setattr(backend, "_RACE", {})
    shape = (2, 30, 36)
    if winner != "race":
        backend._RACE[(shape, "numpy")] = winner == "fftw"
    fft = RealFFT2(np, *shape[:1], shape[1:])
    assert isinstance(backend._RACE[(shape, "numpy")], bool)
    assert fft.backend == ("fftw" if backend._RACE[(shape, "numpy")] else "pocketfft")
    assert (fft.out is None) == (fft.backend == "pocketfft")
    data = np.random.default_rng(5).random(shape).astype(np.float32)
    fft.real[...] = data
    np.testing.assert_allclose(fft.c2r(fft.r2c()) / (30 * 36), data, atol=1e-5)
    rng = np.random.default_rng(6)
    op, x = SVConvolution(_psfs(rng, 2, 2, 7), (40, 44)), rng.random((40, 44)).astype(np.float32)
    monkeypatch.setenv("SEMIBLIND_FFT", "scipy")
    np.testing.assert_allclose(op.forward(x), SVConvolution(_psfs(np.random.default_rng(6), 2, 2, 7), (40, 44))
                               .forward(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20, 1 << 30])
def test_operator_matches_direct_sum(path, chunk_bytes, monkeypatch):
    """Forward/adjoint against a direct sum of full-size linear convolutions of the weighted image,
    whatever the chunking (1 byte: one cell per chunk, slots reused by cells of different sizes)."""
    from scipy.signal import fftconvolve
    monkeypatch.setenv("SEMIBLIND_FFT", path)
    monkeypatch.setattr(sv_module, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(1)
    shape, psfs = (97, 131), _psfs(rng, 3, 4, 15)
    op = SVConvolution(psfs, shape)
    x = rng.random(shape).astype(np.float32)
    wy = sv_module.tent_weights(shape[0], sv_module.node_centres(shape[0], 3))
    wx = sv_module.tent_weights(shape[1], sv_module.node_centres(shape[1], 4))
    ref = sum(fftconvolve(np.outer(wy[i], wx[j]) * x, psfs[i, j].astype(np.float64), mode="same")
              for i in range(3) for j in range(4))
    np.testing.assert_allclose(op.forward(x), ref, atol=2e-6 * np.abs(ref).max())
    y = rng.random(shape).astype(np.float32)
    lhs, rhs = np.vdot(op.forward(x).astype(np.float64), y), np.vdot(x.astype(np.float64), op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    # the buffer API: forward_buffer's view is the adjoint's input, adjoint_buffer scales in place
    view = op.forward_buffer(x)
    view[...] = y
    scale = rng.random(shape).astype(np.float32)
    got = op.adjoint_buffer(scale).copy()           # the operator's buffer: the next call overwrites it
    np.testing.assert_allclose(got, op.adjoint(y) * scale, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_operator_matches_direct_sum_cells_of_one_row(path, monkeypatch):
    """Nodes on whole pixels one pixel apart: cells of one row or column where one node's weight is 1 and the
    other's 0 throughout (the separable scheme's 'weight is 1' shortcuts), and cells of one node at the edges."""
    from scipy.signal import fftconvolve
    monkeypatch.setenv("SEMIBLIND_FFT", path)
    rng = np.random.default_rng(8)
    shape, cy, cx = (41, 47), np.array([2.0, 3.0, 20.0, 38.0]), np.array([5.0, 6.0, 30.5])
    psfs = _psfs(rng, len(cy), len(cx), 9)
    op = SVConvolution(psfs, shape, centres=(cy, cx))
    x = rng.random(shape).astype(np.float32)
    wy, wx = sv_module.tent_weights(shape[0], cy), sv_module.tent_weights(shape[1], cx)
    ref = sum(fftconvolve(np.outer(wy[i], wx[j]) * x, psfs[i, j].astype(np.float64), mode="same")
              for i in range(len(cy)) for j in range(len(cx)))
    np.testing.assert_allclose(op.forward(x), ref, atol=2e-6 * np.abs(ref).max())
    y = rng.random(shape).astype(np.float32)
    ref_adj = sum(np.outer(wy[i], wx[j]) * fftconvolve(y.astype(np.float64), psfs[i, j, ::-1, ::-1], mode="same")
                  for i in range(len(cy)) for j in range(len(cx)))
    np.testing.assert_allclose(op.adjoint(y), ref_adj, atol=2e-6 * np.abs(ref_adj).max())


@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (4, 4)])
def test_richardson_lucy_same_on_both_paths(grid, monkeypatch):
    pytest.importorskip("pyfftw")
    rng = np.random.default_rng(2)
    image = rng.poisson(200, (90, 110)).astype(np.float32)
    psfs = _psfs(rng, *grid, 13)
    out = {}
    for path in ("scipy", "fftw"):
        monkeypatch.setenv("SEMIBLIND_FFT", path)
        out[path] = richardson_lucy(image, psfs, iterations=8, tv=0.01)
    np.testing.assert_allclose(out["fftw"], out["scipy"], rtol=2e-4, atol=2e-4 * float(out["scipy"].max()))


@pytest.mark.parametrize("chunk_bytes, conj_bytes", [(1, 1 << 30), (1 << 30, 0), (1, 0)])
def test_richardson_lucy_independent_of_chunking(chunk_bytes, conj_bytes, monkeypatch):
    rng = np.random.default_rng(3)
    image = rng.poisson(100, (120, 100)).astype(np.float32)
    psfs = _psfs(rng, 3, 3, 11)
    ref = richardson_lucy(image, psfs, iterations=6, tv=0.005)
    monkeypatch.setattr(sv_module, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(sv_module, "CONJ_BYTES", conj_bytes)          # 0: conjugated term by term
    np.testing.assert_allclose(richardson_lucy(image, psfs, iterations=6, tv=0.005), ref, rtol=1e-5,
                               atol=1e-5 * float(ref.max()))


@pytest.mark.parametrize("shape", [(1, 7), (2, 9), (5, 9), (64, 37), (100, 64)])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 500])
def test_tv_bands_equal_whole_image(shape, rows):
    """Banded update == whole-image `tv_divergence` update, bit for bit."""
    rng = np.random.default_rng(4)
    x = rng.random(shape).astype(np.float32)
    update = (rng.random(shape) + 0.5).astype(np.float32)
    tv, floor = 0.01, np.float32(1e-3)
    eps = np.float32(8 * tv) * x + floor
    ref = x * np.maximum(update / np.maximum(1.0 - np.float32(tv) * tv_divergence(x, np, eps), 0.2), 0)
    got = x.copy()
    _TVBands(np, shape, rows=rows).update(got, update.copy(), tv, floor)
    np.testing.assert_array_equal(got, ref)


def test_tv_band_rows_default_bounded():
    bands = rl_module._TVBands(np, (4096, 4096))
    assert bands.xb.nbytes <= 1 << 20          # cache-sized buffers, not image-sized
