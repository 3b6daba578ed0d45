"""napari tests run on a real Qt viewer: under Xvfb when there is no display (Qt's offscreen platform has no
OpenGL context for napari's canvas)."""
import atexit
import os
import shutil
import subprocess
import time

import pytest

pytest.importorskip("napari", reason="the napari extra is not installed (pip install -e '.[napari]')")


@pytest.fixture(scope="session", autouse=True)
def display():
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        pytest.fail("napari tests need a display: install xvfb (make system-deps does)")
    number = 90 + os.getpid() % 100
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    os.environ["DISPLAY"] = f":{number}"
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    # stopped at interpreter exit, not at session teardown: Qt's X11 connection lives until then, and a
    # display that disappears under it makes Qt end the process before pytest prints its summary
    atexit.register(proc.terminate)
    yield os.environ["DISPLAY"]
