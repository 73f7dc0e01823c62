"""The demo clinics' files pass the DICOM standard's checker: dicom3tools' ``dciodvfy``
reports no error for any file of any site profile (the demo's, and the nodule and effusion
federations of tests/generators.py, which write through the same code).

Without ``dciodvfy`` on PATH (Debian/Ubuntu: ``apt-get install dicom3tools``) the test is
skipped, unless RADFED_REQUIRE_DICOM3TOOLS=1 (CI, .ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from radfed.demo_data import dicom_files, write_clinic
from tests.generators import GENERATORS, SITES

IOD_NAMES = {"DX": "DXImageForPresentation", "CR": "CRImage"}


def dciodvfy() -> str:
    """Path of dciodvfy, or skip (fail when RADFED_REQUIRE_DICOM3TOOLS=1)."""
    found = shutil.which("dciodvfy")
    if found:
        return found
    reason = "dciodvfy (dicom3tools) is not on PATH: apt-get install dicom3tools"
    if os.environ.get("RADFED_REQUIRE_DICOM3TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def write_every_demo_profile(out: Path) -> list[Path]:
    """One small clinic per demo site profile: clinic numbers cycle through the profiles,
    so stop when the first one's equipment comes round again."""
    folders, seen = [], []
    for index in range(1, 17):
        summary = write_clinic(out / f"clinic-{index}", clinic_index=index, n_patients=1, seed=0)
        facts = {
            k: summary[k] for k in ("modality", "photometric", "bits_stored", "rows", "columns", "transfer_syntax")
        }
        if facts in seen:
            break
        seen.append(facts)
        folders.append(out / f"clinic-{index}")
    assert len(seen) >= 4 and {f["modality"] for f in seen} == {"DX", "CR"}
    return folders


def write_federation(name: str, out: Path) -> list[Path]:
    if name == "demo":
        return write_every_demo_profile(out)
    return GENERATORS[name](out, len(SITES[name]), n_patients=1, seed=0)


def findings(tool: str, path: Path) -> list[str]:
    """dciodvfy's output lines for one file (it writes to stderr)."""
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return (run.stdout + run.stderr).splitlines()


@pytest.mark.parametrize("name", ["demo", "nodules", "effusion"])
def test_every_file_of_every_profile_passes_dciodvfy(name: str, tmp_path: Path) -> None:
    tool = dciodvfy()
    checked = 0
    for folder in write_federation(name, tmp_path):
        files = dicom_files(folder)
        assert files, folder.name
        for path in files:
            lines = findings(tool, path)
            where = f"{name}/{path.relative_to(tmp_path)}"
            assert set(IOD_NAMES.values()) & set(lines), (where, lines)  # it recognised the IOD
            errors = [line for line in lines if "Error" in line or "Abort" in line]
            assert not errors, (where, errors)
            checked += 1
    assert checked >= 6
