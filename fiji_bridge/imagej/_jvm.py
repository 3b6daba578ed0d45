"""The JVM side of the ImageJ bridge: where the Fiji script, macros and Java shim live (`PLUGINS_DIR`),
locating ``ij.jar``, compiling the Java shim (`build_shim`), starting a JVM with ImageJ 1 (`start_jvm`;
scyjava/JPype, no downloads) and Java class look-ups (`jclass`, `is_imageplus`)."""
from __future__ import annotations

import os
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any



def _plugins_dir() -> Path:
    """The Fiji script, macros and Java shim sources: ``plugins/`` of a source checkout (editable
    install), else the copy a wheel installs as ``fiji_bridge/plugins``."""
    here = Path(__file__).resolve().parent.parent   # fiji_bridge/
    checkout = here.parent / "plugins"
    return checkout if (checkout / "java" / "src" / "semiblind").is_dir() else here / "plugins"


def _shim_jar(java_dir: Path) -> Path:
    """Where the compiled shim goes: ``plugins/java/build/`` in a source checkout (gitignored, built by
    ``make install``); for an installed package the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``,
    ``semiblind/<version>/``), never site-packages."""
    if (java_dir.parent.parent / "fiji_bridge").is_dir() and (java_dir.parent.parent / "pyproject.toml").is_file():
        return java_dir / "build" / "semiblind-ij1.jar"
    from fiji_bridge import __version__
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "semiblind" / __version__ / "semiblind-ij1.jar"


#: Fiji script, macros and Java shim (same layout as Fiji.app where they are installed).
PLUGINS_DIR = _plugins_dir()
#: Root of the Java shim sources.
JAVA_DIR = PLUGINS_DIR / "java"
#: The compiled shim (rebuilt from ``plugins/java/src`` when a source is newer; see `_shim_jar`).
SHIM_JAR = _shim_jar(JAVA_DIR)

_SYSTEM_IJ_JAR = Path("/usr/share/java/ij.jar")


# ---------------------------------------------------------------------------------------------- JVM


def find_ij_jar(fiji_dir: str | os.PathLike | None = None) -> Path:
    """Locate an ImageJ 1 jar.

    Search order: ``$SEMIBLIND_IJ_JAR``; ``fiji_dir/jars/ij-*.jar`` when ``fiji_dir`` (or
    ``$SEMIBLIND_FIJI_DIR``) is given; Debian's ``/usr/share/java/ij.jar``.

    Raises
    ------
    ValueError
        When no jar is found (one line saying how to get one).
    """
    env = os.environ.get("SEMIBLIND_IJ_JAR")
    if env:
        if not Path(env).is_file():
            raise ValueError(f"SEMIBLIND_IJ_JAR points to a missing file: {env}")
        return Path(env)
    fiji = fiji_dir or os.environ.get("SEMIBLIND_FIJI_DIR")
    if fiji:
        jars = sorted(Path(fiji, "jars").glob("ij-*.jar")) + sorted(Path(fiji, "jars").glob("ij.jar"))
        if not jars:
            raise ValueError(f"fiji_dir: no jars/ij-*.jar in {fiji}")
        return jars[-1]
    if _SYSTEM_IJ_JAR.is_file():
        return _SYSTEM_IJ_JAR
    raise ValueError("ImageJ 1 jar not found: set SEMIBLIND_IJ_JAR, pass a Fiji.app, "
                     "or install Debian's libij-java")


def _fiji_classpath(fiji_dir: str | os.PathLike) -> list[str]:
    root = Path(fiji_dir)
    return [str(p) for p in sorted(root.glob("jars/*.jar")) + sorted(root.glob("plugins/*.jar"))]


def _shim_sources() -> list[Path]:
    return sorted((JAVA_DIR / "src").rglob("*.java"))


def build_shim(ij_jar: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Compile the Java shim (``plugins/java/src``) with ``javac`` into `SHIM_JAR`: the one way it is built
    (``plugins/java/build.sh``, which ``make install`` runs, calls it through `main`).

    Rebuilds only when a source file is newer than the jar (or ``force``). No Maven: one ``javac`` call
    against ij.jar, then the classes are zipped into ``semiblind-ij1.jar``.

    Returns
    -------
    Path
        The shim jar.

    Raises
    ------
    RuntimeError
        When ``javac`` is missing or the compilation fails (with javac's first error line).
    """
    sources = _shim_sources()
    if not sources:
        raise RuntimeError(f"Java shim sources not found under {JAVA_DIR / 'src'}")
    newest = max(p.stat().st_mtime for p in sources)
    if not force and SHIM_JAR.is_file() and SHIM_JAR.stat().st_mtime >= newest:
        return SHIM_JAR
    jar = Path(ij_jar) if ij_jar else find_ij_jar()
    SHIM_JAR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SHIM_JAR.parent) as classes:
        base = ["-nowarn", "-encoding", "UTF-8", "-cp", str(jar), "-d", classes, *map(str, sources)]
        try:
            # Java 8 bytecode runs in every Fiji; an ij.jar built for a newer Java needs the JDK's own level
            proc = subprocess.run(["javac", "--release", "8", *base], capture_output=True, text=True, check=False)
            if proc.returncode != 0 and "wrong version" in proc.stderr:
                proc = subprocess.run(["javac", *base], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise RuntimeError("javac not found: install a JDK (Debian: default-jdk-headless)") from None
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip())
            raise RuntimeError(f"javac failed building the ImageJ shim: {first}")
        from fiji_bridge.io.atomic import atomic_path
        with atomic_path(SHIM_JAR) as tmp_jar, zipfile.ZipFile(tmp_jar, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: semiblind\r\n\r\n")
            for cls in sorted(Path(classes).rglob("*.class")):
                zf.write(cls, cls.relative_to(classes).as_posix())
    return SHIM_JAR


def jvm_started() -> bool:
    """Whether a JVM runs in this process (started by us, scyjava or PyImageJ)."""
    import jpype
    return bool(jpype.isJVMStarted())


def start_jvm(*, headless: bool = True, ij_jar: str | os.PathLike | None = None,
              fiji_dir: str | os.PathLike | None = None, shim: bool = True,
              max_heap: str | None = None) -> None:
    """Start the JVM with ImageJ 1 on the class path (idempotent).

    Parameters
    ----------
    headless : bool
        Set ``java.awt.headless=true`` (no windows). A JVM can start only once per process, so the
        first call decides.
    ij_jar : path, optional
        ImageJ jar; default from `find_ij_jar`.
    fiji_dir : path, optional
        A Fiji.app whose ``jars/`` and ``plugins/`` jars go on the class path.
    shim : bool
        Build (if needed) and add the Java shim of the menu command.
    max_heap : str, optional
        ``-Xmx`` value, e.g. ``"4g"``.

    Notes
    -----
    When a JVM already runs (e.g. started by PyImageJ), nothing is changed; the shim must then already be
    on its class path (``fiji_bridge.imagej.SHIM_JAR``) for the menu command to work.
    """
    import scyjava
    if jvm_started():
        return
    jar = Path(ij_jar) if ij_jar else find_ij_jar(fiji_dir)
    if fiji_dir:
        for entry in _fiji_classpath(fiji_dir):
            scyjava.config.add_classpath(entry)
    else:
        scyjava.config.add_classpath(str(jar))
    if shim:
        scyjava.config.add_classpath(str(build_shim(jar)))
    scyjava.config.set_java_constraints(fetch="never")
    scyjava.config.add_option(f"-Djava.awt.headless={'true' if headless else 'false'}")
    if max_heap:
        scyjava.config.add_option(f"-Xmx{max_heap}")
    scyjava.start_jvm()


def jclass(name: str):
    """The Java class ``name`` (e.g. ``"ij.IJ"``), starting the headless JVM first when none runs."""
    if not jvm_started():
        start_jvm()
    import jpype
    return jpype.JClass(name)


def is_imageplus(obj: Any) -> bool:
    """Whether ``obj`` is an ``ij.ImagePlus`` (never starts a JVM)."""
    if not jvm_started():
        return False
    import jpype
    return isinstance(obj, jpype.JObject) and isinstance(obj, jpype.JClass("ij.ImagePlus"))


def main(argv: list[str] | None = None) -> int:
    """Build the shim now (what ``plugins/java/build.sh [IJ_JAR]`` runs): prints the jar's path, or one error
    line and exit status 1."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    try:
        print(build_shim(args[0] if args else None, force=True))
    except (RuntimeError, ValueError) as exc:
        print(f"build.sh: {exc}", file=sys.stderr)
        return 1
    return 0
