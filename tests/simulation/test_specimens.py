"""Tests for the sharp specimen library (procedural generators and offline sources)."""

import socket

import numpy as np
import pytest

from training import sources
from fiji_bridge.simulation.specimens import GENERATORS

SHAPE = (96, 80)  # non-square on purpose: catches swapped axes


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything tries to open a connection (e.g. pooch)."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_output(name):
    for seed in range(3):
        img = GENERATORS[name](SHAPE, np.random.default_rng(seed))
        assert img.shape == SHAPE
        assert img.dtype == np.float32
        assert np.isfinite(img).all()
        assert img.min() >= 0.0 and img.max() <= 1.0
        assert img.std() > 0.005, "no visible structure"
        assert np.unique(img).size > 20


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_reproducible(name):
    fn = GENERATORS[name]
    a = fn(SHAPE, np.random.default_rng(7))
    b = fn(SHAPE, np.random.default_rng(7))
    c = fn(SHAPE, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_splits_disjoint():
    assert not set(sources.TRAIN_IMAGES) & set(sources.HELDOUT_IMAGES)
    tr, ho = sources.TRAIN_SEEDS, sources.HELDOUT_SEEDS
    assert tr.stop <= ho.start or ho.stop <= tr.start
    assert {"cell", "immunohistochemistry"} <= set(sources.HELDOUT_IMAGES)


def test_listed_images_load_offline(no_network):
    shipped = set(sources.shipped_images())
    for name in sources.TRAIN_IMAGES + sources.HELDOUT_IMAGES:
        assert name in shipped, f"{name} is not shipped in the scikit-image wheel"
        img = sources.load_source(name)
        assert img.ndim == 2 and img.dtype == np.float32
        assert img.min() == 0.0 and img.max() == 1.0
        assert not img.flags.writeable


def test_unshipped_image_refused(no_network):
    missing = [n for n in sources._CANDIDATES if n not in sources.shipped_images()]
    if not missing:
        pytest.skip("every candidate is shipped in this wheel")
    with pytest.raises(FileNotFoundError):
        sources.load_source(missing[0])


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("p_real", [0.0, 1.0])
def test_sampler_range(split, p_real, no_network):
    sampler = sources.SpecimenSampler(split, np.random.default_rng(0), p_real=p_real)
    for size in (32, 128):
        for _ in range(4):
            patch = sampler.sample(size)
            assert patch.shape == (size, size) and patch.dtype == np.float32
            assert patch.min() >= 0.0 and patch.max() <= 1.0
            assert patch.std() > 0.005


def test_sampler_reproducible():
    a = sources.SpecimenSampler("train", np.random.default_rng(3)).sample(64)
    b = sources.SpecimenSampler("train", np.random.default_rng(3)).sample(64)
    np.testing.assert_array_equal(a, b)


def test_sampler_rejects_unknown_split():
    with pytest.raises(ValueError):
        sources.SpecimenSampler("test", np.random.default_rng(0))
