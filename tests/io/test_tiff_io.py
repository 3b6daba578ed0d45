import numpy as np
import pytest
import tifffile

from fiji_bridge.io.tiff import read_image, read_info, write_imagej_tiff


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_imagej_calibration_round_trip(tmp_path, dtype):
    data = (np.arange(60 * 70).reshape(60, 70) % 200).astype(dtype)
    tifffile.imwrite(tmp_path / "in.tif", data, imagej=True, resolution=(1 / 0.13, 1 / 0.13),
                     metadata={"unit": "micron"})
    img = read_image(tmp_path / "in.tif")
    assert img.data.dtype == dtype and img.pixel_size == pytest.approx(0.13)
    write_imagej_tiff(tmp_path / "out.tif", img.data, img.pixel_size, info={"k": 1})
    again = read_image(tmp_path / "out.tif")
    assert again.data.dtype == np.float32 and again.pixel_size == pytest.approx(0.13)
    assert read_info(tmp_path / "out.tif") == {"k": 1}


def test_nanometre_units_and_ome(tmp_path):
    data = np.zeros((20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "nm.tif", data, imagej=True, resolution=(1 / 130, 1 / 130), metadata={"unit": "nm"})
    assert read_image(tmp_path / "nm.tif").pixel_size == pytest.approx(0.13)
    tifffile.imwrite(tmp_path / "ome.ome.tif", data, metadata={"PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm",
                                                                "PhysicalSizeY": 0.2, "axes": "YX"})
    assert read_image(tmp_path / "ome.ome.tif").pixel_size == pytest.approx(0.2)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    assert read_image(tmp_path / "plain.tif").pixel_size is None


def test_stack_labels(tmp_path):
    write_imagej_tiff(tmp_path / "s.tif", np.ones((3, 8, 9)), 0.5, labels=["a", "b", "c"])
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.imagej_metadata["Labels"] == ["a", "b", "c"]
        assert tif.series[0].shape == (3, 8, 9)


@pytest.mark.parametrize("make, match", [
    (lambda p: tifffile.imwrite(p, np.zeros((10, 10, 3), np.uint8), photometric="rgb"), "RGB"),
    (lambda p: tifffile.imwrite(p, np.zeros((5, 10, 10), np.uint16)), "2-D"),
    (lambda p: p.write_bytes(b"garbage"), "cannot read"),
])
def test_bad_inputs(tmp_path, make, match):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(ValueError, match=match):
        read_image(path)
    with pytest.raises(ValueError, match="not found"):
        read_image(tmp_path / "none.tif")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "x.tif"
    write_imagej_tiff(path, np.ones((4, 4)), None)
    with pytest.raises(ValueError, match="overwrite"):
        write_imagej_tiff(path, np.zeros((4, 4)), None, overwrite_guard=path)
    np.testing.assert_array_equal(read_image(path).data, 1)

    def failing_write(target, *args, **kwargs):          # dies after writing part of the file
        open(target, "wb").write(b"II*\x00partial")
        raise OSError("disk full")
    monkeypatch.setattr(tifffile, "imwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_imagej_tiff(tmp_path / "y.tif", np.ones((4, 4)), None)
    with pytest.raises(OSError):
        write_imagej_tiff(path, np.zeros((4, 4)), None)      # a failed rewrite keeps the old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path).data, 1)


def test_lazy_compressed_tiff_without_zarr_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    import tifffile

    from fiji_bridge.io.tiff import LazyImage

    tifffile.imwrite(tmp_path / "lzw.tif", np.ones((64, 64), np.uint16), compression="zlib")
    lazy = read_image(tmp_path / "lzw.tif", lazy=True).data
    assert isinstance(lazy, LazyImage) and lazy.shape == (64, 64)
    np.testing.assert_array_equal(lazy[:8], 1)                          # zarr installed here: tiles decode
    monkeypatch.setitem(sys.modules, "zarr", None)                      # as on an install without zarr
    with pytest.raises(ValueError, match="needs zarr"):
        lazy[:8]
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif").data, 1)   # eager reading needs no zarr
