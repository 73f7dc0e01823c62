"""radfed.pacs.dicomweb against a real PACS: Orthanc with its DICOMweb plugin, on loopback.

Each test that needs it starts its own Orthanc (HTTP and DICOM ports free on 127.0.0.1,
storage in the test's tmp folder, no remote access, no authentication, the DICOMweb
plugin loaded), waits until its REST API answers, and stops it: no process outlives
the test.  The Debian packages are `orthanc` and `orthanc-dicomweb`; their system
service is not used.  RADFED_ORTHANC and RADFED_ORTHANC_DICOMWEB may name the binary and
the plugin elsewhere.  Tests are skipped when either is missing, unless
RADFED_REQUIRE_ORTHANC=1 makes that a failure (CI sets it).

The error tests that need no server (an unreachable one) always run.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from radfed.demo_data import dicom_files, write_clinic
from radfed.pacs import (
    DicomWebError,
    read_report,
    retrieve_series,
    retrieve_study,
    search_series,
    search_studies,
    secondary_capture,
    store_instances,
    structured_report,
)
from radfed.processes import free_port, spawn_bound, stop_tree

PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)
STARTUP_TIMEOUT_S = 60.0


def orthanc_binary() -> str | None:
    """The Orthanc server binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    named = os.environ.get("RADFED_ORTHANC")
    if named:
        return named if os.access(named, os.X_OK) else None
    for candidate in (
        shutil.which("Orthanc"),
        "/usr/sbin/Orthanc",
        "/usr/local/sbin/Orthanc",
        "/usr/local/bin/Orthanc",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def dicomweb_plugin() -> str | None:
    """The DICOMweb plugin's shared library: Debian's orthanc-dicomweb, wherever dpkg put it."""
    named = os.environ.get("RADFED_ORTHANC_DICOMWEB")
    if named:
        return named if Path(named).is_file() else None
    for pattern in PLUGIN_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            return path
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], check=False, capture_output=True, text=True).stdout
        for line in listing.splitlines():
            if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                return line
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("RADFED_REQUIRE_ORTHANC") == "1":
        pytest.fail(reason + " but RADFED_REQUIRE_ORTHANC=1")
    pytest.skip(reason)


@dataclass
class Orthanc:
    url: str  # the DICOMweb root
    rest: str  # Orthanc's own REST API
    log: Path


def write_config(folder: Path, http_port: int, dicom_port: int, plugin: str) -> Path:
    """A minimal Orthanc configuration: loopback-only clients, tmp storage, DICOMweb on."""
    config = {
        "Name": "radfed-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "RADFEDTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 4,
        "DicomThreadsCount": 1,
        "DeidentifyLogs": True,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def wait_until_up(rest: str, proc: subprocess.Popen, log: Path) -> dict:
    """Orthanc's /plugins answer once its REST API is up; fail with its log if it died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            pytest.fail(f"Orthanc exited with code {proc.returncode} at start:\n" + "\n".join(tail))
        try:
            reply = requests.get(f"{rest}/plugins", timeout=2)
            if reply.ok:
                return reply.json()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"Orthanc's REST API did not answer within {STARTUP_TIMEOUT_S:.0f} s; see {log}")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    binary, plugin = orthanc_binary(), dicomweb_plugin()
    if binary is None:
        skip_or_fail("Orthanc not installed (Debian package orthanc)")
    if plugin is None:
        skip_or_fail("Orthanc's DICOMweb plugin not installed (Debian package orthanc-dicomweb)")
    folder = tmp_path / "orthanc"
    folder.mkdir()
    http_port, dicom_port = free_port(), free_port()
    config = write_config(folder, http_port, dicom_port, plugin)
    log = folder / "orthanc.log"
    with log.open("wb") as sink:
        proc = spawn_bound([binary, str(config)], stdout=sink, stderr=subprocess.STDOUT, cwd=folder)
    rest = f"http://127.0.0.1:{http_port}"
    try:
        plugins = wait_until_up(rest, proc, log)
        if "dicom-web" not in plugins:
            pytest.fail(f"Orthanc started without its DICOMweb plugin ({plugin}); plugins: {plugins}")
        yield Orthanc(url=f"{rest}/dicom-web", rest=rest, log=log)
    finally:
        stop_tree(proc)
        assert proc.poll() is not None, "Orthanc outlived its test"


# ----------------------------------------------------------------------------- round trip


@pytest.fixture
def dx_source(tmp_path: Path) -> pydicom.Dataset:
    folder = tmp_path / "clinic"
    write_clinic(folder, clinic_index=1, n_patients=1, seed=5)
    first = dicom_files(folder)[0]
    return pydicom.dcmread(first)


@pytest.mark.e2e
def test_store_search_and_retrieve_source_sc_and_sr(orthanc: Orthanc, dx_source: pydicom.Dataset) -> None:
    source = dx_source
    heat_map = np.random.default_rng(1).integers(0, 256, (source.Rows, source.Columns, 3), dtype=np.uint8)
    sc = secondary_capture(source, heat_map, model_name="resnet18-chest")
    sr = structured_report(
        source,
        finding="opacity",
        probability=0.7321,
        threshold=0.6,
        model_name="resnet18-chest",
        model_digest="sha256:" + "9" * 64,
        sc=sc,
    )

    reply = store_instances(orthanc.url, [source, sc, sr])
    stored = {item.ReferencedSOPInstanceUID for item in reply.ReferencedSOPSequence}
    assert stored == {source.SOPInstanceUID, sc.SOPInstanceUID, sr.SOPInstanceUID}

    # QIDO-RS: the study by the patient's ID, its three series by modality.
    studies = search_studies(orthanc.url, filters={"PatientID": source.PatientID})
    assert [s.StudyInstanceUID for s in studies] == [source.StudyInstanceUID]
    series = search_series(orthanc.url, source.StudyInstanceUID)
    assert {(s.Modality, s.SeriesInstanceUID) for s in series} == {
        ("DX", source.SeriesInstanceUID),
        ("OT", sc.SeriesInstanceUID),
        ("SR", sr.SeriesInstanceUID),
    }
    [sr_series] = search_series(orthanc.url, source.StudyInstanceUID, filters={"Modality": "SR"})
    assert sr_series.SeriesInstanceUID == sr.SeriesInstanceUID

    # WADO-RS: the whole study, then the SR's series alone.
    instances = retrieve_study(orthanc.url, source.StudyInstanceUID)
    assert {ds.SOPInstanceUID for ds in instances} == stored
    assert {ds.StudyInstanceUID for ds in instances} == {source.StudyInstanceUID}
    [sc_back] = [ds for ds in instances if ds.SOPInstanceUID == sc.SOPInstanceUID]
    assert np.array_equal(sc_back.pixel_array, heat_map)
    assert sc_back.PatientID == source.PatientID

    [sr_back] = retrieve_series(orthanc.url, sr.StudyInstanceUID, sr.SeriesInstanceUID)
    result = read_report(sr_back)
    assert (result.probability, result.threshold, result.present) == (0.7321, 0.6, True)
    assert result.source_instance_uids == (source.SOPInstanceUID,)
    assert sc.SOPInstanceUID in result.library_instance_uids


@pytest.mark.e2e
def test_http_errors_name_the_server_and_the_fix(orthanc: Orthanc, dx_source: pydicom.Dataset) -> None:
    secret = str(dx_source.PatientID)
    wrong_root = orthanc.url + "/nope"
    with pytest.raises(DicomWebError) as caught:
        search_studies(wrong_root, filters={"PatientID": secret})
    message = str(caught.value)
    assert "\n" not in message and wrong_root in message and "HTTP 404" in message and "DICOMweb root" in message
    assert secret not in message and caught.value.__cause__ is None and caught.value.__suppress_context__

    with pytest.raises(DicomWebError, match="HTTP 40[45].*DICOMweb root"):
        store_instances(orthanc.rest, [dx_source])  # Orthanc's REST root is not DICOMweb

    with pytest.raises(DicomWebError, match="HTTP 404.*holds what was asked for"):
        retrieve_study(orthanc.url, "1.2.826.0.1.3680043.8.498.1")

    # Credentials in the URL never appear in a message.
    with_password = orthanc.url.replace("http://", "http://clinic:hunter2@") + "/nope"
    with pytest.raises(DicomWebError) as caught:
        search_studies(with_password)
    assert "hunter2" not in str(caught.value) and "clinic@" not in str(caught.value)


# ----------------------------------------------------------------------------- no server


def test_unreachable_server_is_one_line_and_quick(dx_source: pydicom.Dataset) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    started = time.monotonic()
    for call in (
        lambda: store_instances(url, [dx_source]),
        lambda: search_studies(url, filters={"PatientID": str(dx_source.PatientID)}),
        lambda: retrieve_study(url, dx_source.StudyInstanceUID),
    ):
        with pytest.raises(DicomWebError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"cannot reach the DICOMweb server at {url}")
        assert "check the URL and that the server is running" in message and "\n" not in message
        assert str(dx_source.PatientID) not in message and dx_source.StudyInstanceUID not in message
    assert time.monotonic() - started < 20  # a few quick retries, not half a minute each


@pytest.mark.parametrize("url", ["127.0.0.1:8042/dicom-web", "ftp://pacs/dicom-web", "dicom-web"])
def test_not_a_url(url: str) -> None:
    with pytest.raises(DicomWebError, match="is not a DICOMweb URL"):
        search_studies(url)


def test_datasets_without_file_meta_are_refused_before_sending(dx_source: pydicom.Dataset) -> None:
    del dx_source.file_meta
    with pytest.raises(ValueError, match="instance 1 of 1 has no file meta"):
        store_instances(f"http://127.0.0.1:{free_port()}/dicom-web", [dx_source])


def test_nothing_to_store_sends_nothing() -> None:
    assert len(store_instances(f"http://127.0.0.1:{free_port()}/dicom-web", [])) == 0
