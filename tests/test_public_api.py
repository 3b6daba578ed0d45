"""The public API is ``fiji_bridge.__all__`` (and ``fiji_bridge.imagej.__all__``): every name there exists and
is documented, and importing the package loads none of the optional heavy dependencies."""
import subprocess
import sys

import fiji_bridge


def test_every_public_name_exists_and_is_documented():
    for name in fiji_bridge.__all__:
        obj = getattr(fiji_bridge, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"fiji_bridge.{name} has no docstring"


def test_imagej_api_exists():
    from fiji_bridge import imagej
    for name in imagej.__all__:
        assert getattr(imagej, name) is not None


def test_import_is_light():
    code = ("import sys, fiji_bridge; "
            "print(sorted(m for m in ('torch', 'distributed', 'skimage', 'matplotlib', 'jpype') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
