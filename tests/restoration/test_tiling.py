"""Tiled deconvolution: plan, blending weights, per-tile PSF nodes, seams, lazy input, band output."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from fiji_bridge import Optics, convolve_sv, psf_batch, richardson_lucy
from fiji_bridge.restoration.sv_convolution import node_centres, tent_weights
from fiji_bridge.io.tiff import LazyImage
from fiji_bridge.restoration.tiling import (DEFAULT_TILE, auto_tile, axis_weight, deconvolve_tiff, deconvolve_tiled, default_overlap,
                                iter_tiled, node_range, plan_tiles, tile_psfs)

from tests.conftest import RecordingImage

PSF = 17


@pytest.fixture(scope="module")
def scene():
    """A 200 x 232 blurred image with a 3 x 4 grid of different defocused PSFs."""
    rng = np.random.default_rng(1)
    optics = Optics(na=0.8, wavelength=0.52, pixel_size=0.1)
    defocus = np.linspace(0.0, 0.5, 12)
    coeffs = np.stack([defocus, 0.1 * np.ones(12)], axis=1)
    psfs = psf_batch(optics, ["defocus", 5], coeffs, PSF).reshape(3, 4, PSF, PSF)
    obj = np.zeros((200, 232), np.float32)
    idx = rng.integers(0, obj.shape, (300, 2))
    obj[idx[:, 0], idx[:, 1]] = rng.uniform(100, 1000, 300)
    yy, xx = np.mgrid[:200, :232]
    obj += 80 * (np.sin(xx / 11.0) * np.cos(yy / 7.0) > 0.3)
    blurred = rng.poisson(convolve_sv(obj, psfs) + 10).astype(np.float32)
    return blurred, psfs


def test_plan_cores_partition_the_image_and_windows_contain_supports():
    shape = (517, 300)
    tiles = plan_tiles(shape, tile=128, overlap=40)
    cover = np.zeros(shape, int)
    for t in tiles:
        cover[slice(*t.core_y), slice(*t.core_x)] += 1
        assert t.window_y[0] <= t.support_y[0] <= t.core_y[0] and t.core_y[1] <= t.support_y[1] <= t.window_y[1]
        assert t.window_x[0] <= t.support_x[0] <= t.core_x[0] and t.core_x[1] <= t.support_x[1] <= t.window_x[1]
        assert t.core_y[1] - t.core_y[0] <= 128 and t.window_y[1] - t.window_y[0] <= 128 + 80
    assert np.all(cover == 1)
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)   # raster order


def test_blending_weights_sum_to_one_and_are_smooth():
    shape = (300, 257)
    tiles = plan_tiles(shape, tile=100, overlap=32)
    total = np.zeros(shape)
    for t in tiles:
        w = np.outer(axis_weight(t.core_y, t.support_y, shape[0], 32), axis_weight(t.core_x, t.support_x, shape[1], 32))
        assert w.min() >= 0 and w.max() <= 1
        total[slice(*t.support_y), slice(*t.support_x)] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    w = axis_weight((100, 200), (84, 216), 300, 32)
    assert np.max(np.abs(np.diff(w))) < 0.06           # no jumps: a ramp over 32 px
    assert w[0] < 0.01 and w[-1] < 0.01 and np.all(w[32:100] == 1)    # 1 away from the ramps
    assert w[16] == pytest.approx(0.5, abs=0.05) and w[116] == pytest.approx(0.5, abs=0.05)  # centred on the core edges


def test_overlap_larger_than_half_a_tile_is_refused():
    with pytest.raises(ValueError, match="at most half the tile"):
        plan_tiles((500, 500), tile=100, overlap=60)


@pytest.mark.parametrize("start, stop", [(0, 50), (10, 90), (37, 200), (150, 200), (-5, 30)])
def test_tile_nodes_reproduce_the_global_interpolation(start, stop):
    centres = node_centres(200, 5)                                  # 19.5, 59.5, ...
    nodes = node_range(centres, max(start, 0), stop)
    local = tent_weights(stop - max(start, 0), centres[nodes] - max(start, 0))
    full = tent_weights(200, centres)[:, max(start, 0):stop]
    np.testing.assert_allclose(local, full[nodes], atol=1e-12)
    assert np.all(np.delete(full, np.arange(5)[nodes], axis=0) == 0)   # the other nodes do not reach the window


def test_tile_psfs_shift_centres_to_window_coordinates(scene):
    _, psfs = scene
    centres = (node_centres(200, 3), node_centres(232, 4))
    tile = plan_tiles((200, 232), tile=100, overlap=32)[-1]
    sub, (cy, cx) = tile_psfs(psfs, centres, tile)
    assert sub.shape[:2] == (len(cy), len(cx)) and sub.shape[2:] == (PSF, PSF)
    np.testing.assert_allclose(cy + tile.window_y[0], centres[0][3 - len(cy):])     # the last nodes, shifted
    np.testing.assert_allclose(cx + tile.window_x[0], centres[1][4 - len(cx):])
    assert cy[0] <= 0 and cx[0] <= 0                                                # a node at/before the start
    np.testing.assert_array_equal(sub[0, 0], psfs[3 - len(cy), 4 - len(cx)])


def test_tiled_matches_untiled_within_one_percent_of_dynamic_range(scene):
    blurred, psfs = scene
    reference = richardson_lucy(blurred, psfs, iterations=15)
    tiled = deconvolve_tiled(blurred, psfs, tile=128, iterations=15)     # default overlap: 64 px
    assert len(plan_tiles(blurred.shape, 128, default_overlap(PSF))) == 4
    error = np.abs(tiled - reference).max() / np.ptp(reference)
    assert error < 0.01, f"seam error {100 * error:.2f} % of the dynamic range"


def test_too_small_overlap_shows_seams(scene):
    """The seam test can fail: without a halo the tile boundaries differ by more than 1 %."""
    blurred, psfs = scene
    reference = richardson_lucy(blurred, psfs, iterations=15)
    tiled = deconvolve_tiled(blurred, psfs, tile=128, overlap=0, iterations=15)
    assert np.abs(tiled - reference).max() / np.ptp(reference) > 0.01


def test_one_tile_is_exactly_the_untiled_result(scene):
    blurred, psfs = scene
    np.testing.assert_array_equal(deconvolve_tiled(blurred, psfs, tile=512, iterations=3),
                                  richardson_lucy(blurred, psfs, iterations=3))


def test_reads_and_held_bands_are_bounded_by_the_tile_size(scene):
    blurred, psfs = scene
    image = RecordingImage(blurred)
    bands = list(iter_tiled(image, psfs, tile=64, overlap=32, iterations=2))
    assert max(image.reads) <= 64 + 2 * 32 and len(image.reads) == 4      # one band read per tile row
    assert max(b.shape[0] for _, b in bands) <= 64 + 32
    assert [r for r, _ in bands] == list(np.cumsum([0] + [b.shape[0] for _, b in bands[:-1]]))
    assert sum(b.shape[0] for _, b in bands) == blurred.shape[0]


@pytest.mark.parametrize("layout", [{}, {"tile": (64, 64)}], ids=["contiguous", "tiled-tiff"])
def test_tiff_to_tiff_equals_in_memory(tmp_path, scene, layout):
    blurred, psfs = scene
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, blurred.astype(np.uint16), **layout)
    lazy = LazyImage(src)
    assert lazy.shape == blurred.shape and lazy.contiguous == (not layout)
    np.testing.assert_array_equal(lazy[10:20, 5:50], blurred[10:20, 5:50].astype(np.uint16))
    out = deconvolve_tiff(src, tmp_path / "out.tif", psfs, tile=100, overlap=32, iterations=3, pixel_size=0.1,
                          info={"iterations": 3})
    expected = deconvolve_tiled(blurred.astype(np.uint16), psfs, tile=100, overlap=32, iterations=3)
    with tifffile.TiffFile(out) as tif:
        np.testing.assert_array_equal(tif.asarray(), expected)
        assert tif.is_imagej and '"iterations": 3' in tif.imagej_metadata["Info"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]      # no temporary left


def test_failed_tiff_run_leaves_no_output(tmp_path, scene):
    blurred, psfs = scene
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, blurred)
    with pytest.raises(ValueError):
        deconvolve_tiff(src, tmp_path / "out.tif", psfs, tile=100, overlap=32, iterations=0)
    assert [p.name for p in tmp_path.iterdir()] == ["in.tif"]


def test_unreadable_input_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read .* as a TIFF") as info:
        LazyImage(bad)
    assert "\n" not in str(info.value)


def test_auto_tile_tiles_only_large_images_unless_asked():
    assert auto_tile((4096, 4096)) is None and auto_tile((4096, 4097)) == DEFAULT_TILE
    assert auto_tile((100, 100), tile=64) == 64
