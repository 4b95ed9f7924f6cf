"""A fresh virtual environment holding what ``python -m venv`` puts in one (pip and setuptools, from
ensurepip's bundled wheels), for the image tests to run a target's RUN commands in.

ensurepip installs its two bundled wheels by running pip in a subprocess (~5 s per environment on this
machine); a wheel is a zip archive laid out for site-packages, so here they are unpacked there directly and
pip gets its console script, as pip would write it. Same wheels, same files importable, no pip run.
"""

from __future__ import annotations

import ensurepip
import subprocess
import venv
import zipfile
from pathlib import Path

BUNDLED = Path(ensurepip.__file__).parent / "_bundled"

PIP_SCRIPT = """#!{python}
import sys
from pip._internal.cli.main import main
sys.exit(main())
"""


def site_packages(python: Path) -> Path:
    """The environment's site-packages (its ``purelib``), as its own python reports it."""
    done = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


def fresh_venv(prefix: Path) -> Path:
    """A new environment at ``prefix`` with ensurepip's pip and setuptools; its python."""
    wheels = sorted(BUNDLED.glob("*.whl"))
    if not any(wheel.name.startswith("pip-") for wheel in wheels):  # a Python without its bundled wheels
        venv.EnvBuilder(with_pip=True, clear=True).create(prefix)
        return prefix / "bin" / "python"
    venv.EnvBuilder(with_pip=False, clear=True).create(prefix)
    python = prefix / "bin" / "python"
    site = site_packages(python)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for name in ("pip", "pip3"):
        script = prefix / "bin" / name
        script.write_text(PIP_SCRIPT.format(python=python))
        script.chmod(0o755)
    return python
