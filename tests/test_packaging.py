"""What `pip install` puts into site-packages: only the project's own top-level names."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_no_generic_top_level_packages(tmp_path):
    # service/ and annotate/ stay top-level folders in the repository but install inside datasetgan
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("datasetgan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"datasetgan", "stylegan2_ops"}
    for path in ("datasetgan/service/app.py", "datasetgan/service/routers/jobs.py", "datasetgan/annotate/api.py",
                 "datasetgan/annotate/static/index.html", "stylegan2_ops/csrc/"):
        assert any(n.startswith(path) for n in names), path
