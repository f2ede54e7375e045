"""Each optional extra installs what its plugin imports: checked in an environment with that extra alone.

The default run checks the bookkeeping (every extra of pyproject.toml has a check in
``tests/extras_check.py``; the ``ben2`` extra covers every module BEN2's code imports).  The slow test
(CI runs it) installs ``syngrpo[EXTRA]`` with the CI lock into an environment of its own and runs the
extra's check there, through the plugin's factory and its lazy import of the heavy library.

Each extra's environment is a layer over one shared environment of the core alone (``pip install -e .``):
the layer sees the core's packages through a ``.pth`` file (``site.addsitedir``), and pip installs into it
only what the extra adds.  So every environment holds exactly the core plus one extra -- nothing of
``dev`` or of the other extras -- while torch and transformers are installed once, not nine times.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import extras_check  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra brings tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints-lock.txt"
#: import name -> distribution name, where they differ
DISTRIBUTION = {"cv2": "opencv-python-headless", "PIL": "pillow", "huggingface_hub": "huggingface-hub"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _project() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def test_every_extra_has_a_check_or_a_reason_for_none():
    extras = set(_project()["optional-dependencies"])
    assert extras == set(extras_check.CHECKS) | set(extras_check.NOT_CHECKED)
    assert not set(extras_check.CHECKS) & set(extras_check.NOT_CHECKED)


def test_the_ben2_extra_installs_every_module_ben2_imports_but_torchvision():
    """BEN2's requirements.txt forgets cv2, which its code imports: the extra must bring it (issue #20)."""
    project = _project()
    core, ben2 = _names(project["dependencies"]), _names(project["optional-dependencies"]["ben2"])
    for module, source in extras_check.BEN2_IMPORTS.items():
        dist = DISTRIBUTION.get(module, module).lower()
        if source == "core":
            assert dist in core, module
        elif source == "ben2":
            assert dist in ben2, f"BEN2 imports {module}: the ben2 extra must install {dist}"
        elif source == "transformers":
            from importlib.metadata import requires

            assert "transformers" in core and dist in _names(requires("transformers") or []), module
        else:
            assert source == "yours" and module == "torchvision" and dist not in ben2 | core
    from syngrpo_ben2.segment import BEN2_HINT

    assert "syngrpo[ben2]" in BEN2_HINT and "torchvision" in BEN2_HINT


def _run(cmd: list[str], **kwargs) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)])
    return path / "bin" / "python"


def _site_packages(python: Path) -> str:
    return _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    """An environment of the core alone (``pip install -c constraints-lock.txt -e .``)."""
    python = _venv(tmp_path_factory.mktemp("core") / "venv")
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(LOCK), "-e", str(REPO)])
    return python


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(extras_check.CHECKS))
def test_an_environment_with_this_extra_alone_runs_its_plugin(extra, core_python, tmp_path):
    python = _venv(tmp_path / "venv")
    core = _site_packages(core_python)
    # the core's packages, .pth files included, after the layer's own site-packages
    Path(_site_packages(python), "_syngrpo_core.pth").write_text(f"import site; site.addsitedir({core!r})\n")
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(LOCK), "-e", f"{REPO}[{extra}]"])
    installed = _names(_run([str(python), "-m", "pip", "list", "--format=freeze"]).splitlines())
    assert "syngrpo" in installed and "pytest" not in installed  # the core and the extra, not the dev extra
    out = _run([str(python), str(Path(extras_check.__file__)), extra, str(tmp_path / "work")], cwd=tmp_path)
    print(out.strip())
