"""What `pip install` puts into site-packages: only the project's own top-level names."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_no_generic_top_level_packages(tmp_path):
    # service/ and annotate/ stay top-level folders in the repository but install inside datasetgan.
    # Build from a copy, so that setuptools' build/ and egg-info land in tmp_path, not the checkout.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info", "test-artifacts", "demo-output")
    shutil.copytree(ROOT, src, ignore=skip)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("datasetgan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"datasetgan", "stylegan2_ops"}
    for path in (
        "datasetgan/service/app.py",
        "datasetgan/service/routers/jobs.py",
        "datasetgan/annotate/api.py",
        "datasetgan/annotate/static/index.html",
        "stylegan2_ops/csrc/",
    ):
        assert any(n.startswith(path) for n in names), path
