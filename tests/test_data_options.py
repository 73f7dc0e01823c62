"""DataOptions: validation, label sources (folders, tag), filters, frame policy, windows
in the cache key, the summary's sizes and transfer syntaxes, progress, and check-data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import RLELossless
from typer.testing import CliRunner

from radfed import dicom
from radfed.data import DataError, DataOptions, load_clinic
from tests.test_data import LABELS, SIZE, make_clinic, write_image, write_manifest


def retag(path: Path, **tags: object) -> None:
    """Rewrite some header values of an existing file."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def folder_clinic(root: Path, n_patients: int = 4) -> None:
    """DATA/normal/* and DATA/opacity/* without a manifest."""
    for p in range(n_patients):
        write_image(root / LABELS[p % 2] / f"p{p}" / "IM0.dcm", f"PID-{p}", 100 + 40 * p)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "start"),
    [
        ({"window": "liver"}, "window must be one of lung"),
        ({"window": (40, -1)}, "window must be one of"),
        ({"frame_policy": "first"}, "frame_policy must be one of middle, all"),
        ({"label_source": "csv"}, "label_source must be one of manifest, folders, tag"),
        ({"label_source": "tag"}, "label_tag must name a DICOM keyword"),
        ({"label_source": "tag", "label_tag": "SeriesDescriptoin"}, "label_tag must be a DICOM keyword"),
        (
            {"filters": {"PatientName": ["x"]}},
            "filters keys must be one of Modality, BodyPartExamined, SeriesDescription",
        ),
        ({"filters": {"Modality": "CT"}}, "filters['Modality'] must be a list of strings"),
        ({"label_map": ["a"]}, "label_map must be a dict"),
    ],
)
def test_invalid_options_raise_one_line(kwargs: dict, start: str) -> None:
    with pytest.raises(ValueError) as info:
        DataOptions(**kwargs)
    assert str(info.value).startswith(start) and "\n" not in str(info.value)


def test_options_are_frozen() -> None:
    options = DataOptions(window="lung")
    with pytest.raises(AttributeError):
        options.window = "brain"  # type: ignore[misc]


# ----------------------------------------------------------------------------- label sources


def test_class_folders_are_used_when_there_is_no_manifest(tmp_path: Path) -> None:
    folder_clinic(tmp_path, 4)
    clinic = load_clinic(tmp_path, LABELS, SIZE, val_fraction=0.0)
    assert sorted(clinic.train.labels.tolist()) == [0, 0, 1, 1] and clinic.rejected == []
    explicit = load_clinic(tmp_path, LABELS, SIZE, val_fraction=0.0, options=DataOptions(label_source="folders"))
    torch.testing.assert_close(explicit.train.images, clinic.train.images)


def test_class_folders_reject_bad_files_with_reasons(tmp_path: Path) -> None:
    folder_clinic(tmp_path, 4)
    (tmp_path / "normal" / "empty.dcm").write_bytes(b"")
    (tmp_path / "opacity" / "notes.txt").write_text("hello")
    clinic = load_clinic(tmp_path, LABELS, SIZE, options=DataOptions(label_source="folders"))
    assert sorted(clinic.rejected) == [("normal/empty.dcm", "empty-file"), ("opacity/notes.txt", "not-dicom")]


def test_folders_without_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "misc" / "a.dcm", "P1", 100)
    with pytest.raises(DataError, match="no class folders found"):
        load_clinic(tmp_path, LABELS, SIZE, options=DataOptions(label_source="folders"))


def test_labels_from_a_tag_mapping(tmp_path: Path) -> None:
    for p, series in enumerate(["CHEST PA", "Chest PA opacity", "chest pa", "CHEST PA OPACITY", "SCOUT"]):
        path = tmp_path / f"s{p}.dcm"
        write_image(path, f"PID-{p}", 100 + 40 * p)
        retag(path, SeriesDescription=series)
    (tmp_path / "README.txt").write_text("viewer")  # skipped silently: PACS exports carry these
    options = DataOptions(
        label_source="tag",
        label_tag="SeriesDescription",
        label_map={"chest pa": "normal", "CHEST PA OPACITY": "opacity"},
    )
    clinic = load_clinic(tmp_path, LABELS, SIZE, val_fraction=0.0, options=options)
    assert sorted(clinic.train.labels.tolist()) == [0, 0, 1, 1]
    assert clinic.rejected == [("s4.dcm", "no-label")]


def test_filters_count_filtered_not_rejected(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=2)
    retag(tmp_path / "exports/s0/IM0", Modality="CT", BodyPartExamined="HEAD")
    retag(tmp_path / "exports/s1/IM1", SeriesDescription="Scout")
    options = DataOptions(filters={"Modality": ["dx", "CR"], "SeriesDescription": ["", "PA"]})
    clinic = load_clinic(tmp_path, LABELS, SIZE, options=options)
    summary = clinic.summary()
    assert summary["filtered"] == 2 and clinic.rejected == [] and summary["rejected_total"] == 0
    assert len(clinic.train) + len(clinic.val) == 6


def test_everything_filtered_is_a_data_error(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=2, images=1)
    with pytest.raises(DataError, match=r"2 filtered out by the task's filters"):
        load_clinic(tmp_path, LABELS, SIZE, options=DataOptions(filters={"Modality": ["MR"]}))


# ----------------------------------------------------------------------------- frames, windows, cache


def test_all_frames_become_samples_of_the_same_patient(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=1)
    ds = pydicom.dcmread(tmp_path / "exports/s0/IM0")
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([np.full((20, 12), v, dtype=np.uint16) for v in (500, 1500, 2500)]).tobytes()
    ds.save_as(tmp_path / "exports/s0/IM0")
    middle = load_clinic(tmp_path, LABELS, SIZE)
    every = load_clinic(tmp_path, LABELS, SIZE, options=DataOptions(frame_policy="all"))
    assert len(middle.train) + len(middle.val) == 4 and len(every.train) + len(every.val) == 6
    for split in (every.train, every.val):
        if len(split) == 4:  # the split holding the 3-frame patient (val: 1 of 4 patients)
            assert split.num_patients == 2
    assert every.summary()["train"]["total_patients"] + every.summary()["val"]["total_patients"] == 4


def test_window_and_frame_policy_are_in_the_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clinic_dir, cache = tmp_path / "clinic", tmp_path / "cache"
    make_clinic(clinic_dir, n_patients=2, images=1)
    calls: list[object] = []
    original = dicom.read_frames

    def counting(path: Path, **kwargs: object) -> list[np.ndarray]:
        calls.append(kwargs.get("window"))
        return original(path, **kwargs)

    monkeypatch.setattr(dicom, "read_frames", counting)
    plain = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    assert len(calls) == 2
    windowed = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache, options=DataOptions(window=(100, 50)))
    assert len(calls) == 4 and calls[-1] == (100.0, 50.0)
    assert not torch.equal(windowed.train.images, plain.train.images)
    load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache, options=DataOptions(window=(100, 50)))
    assert len(calls) == 4


def test_summary_has_sizes_and_transfer_syntaxes_and_progress_runs(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=1)
    ds = pydicom.dcmread(tmp_path / "exports/s1/IM0")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "exports/s1/IM0")
    seen: list[tuple[str, int, int]] = []
    summary = load_clinic(tmp_path, LABELS, SIZE, progress=lambda *a: seen.append(a)).summary()
    assert summary["sizes"] == {"20x12": 4}
    assert summary["transfer_syntaxes"] == {"Explicit VR Little Endian": 3, "RLE Lossless": 1}
    assert ("headers", 4, 4) in seen and seen[-1] == ("pixels", 4, 4)


# ----------------------------------------------------------------------------- check-data


def run_check_data(*args: str):
    from client_node.cli import app

    return CliRunner().invoke(app, ["check-data", *args])


def test_check_data_prints_card_and_rejections_with_fixes(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=1)
    (tmp_path / "cut.dcm").write_bytes(b"")
    with (tmp_path / "labels.csv").open("a") as handle:
        handle.write("cut.dcm,normal\nnope.dcm,opacity\n")
    result = run_check_data(str(tmp_path), "--image-size", "16", "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["summary"]["sizes"] == {"20x12": 4} and card["shared"]["sizes"] == {"<256 px": 4}
    assert {(r["where"], r["reason"]) for r in card["rejected"]} == {
        ("cut.dcm", "empty-file"),
        ("labels.csv line 7: nope.dcm", "missing-file"),
    }
    assert all(r["fix"] for r in card["rejected"])
    text = run_check_data(str(tmp_path), "--image-size", "16")
    assert text.exit_code == 0 and "transfer syntaxes: Explicit VR Little Endian 4" in text.output
    assert "rejected cut.dcm: empty-file; copy or re-export the file again" in text.output
    assert "sent to the coordinator once per run" in text.output and "<256 px 4" in text.output


def test_check_data_fails_only_when_nothing_is_usable(tmp_path: Path) -> None:
    write_manifest(tmp_path, ["file", "label"], [("x.dcm", "normal")])
    result = run_check_data(str(tmp_path))
    assert result.exit_code == 1 and "rejected labels.csv line 2: x.dcm: missing-file" in result.output
    bad = run_check_data(str(tmp_path), "--window", "liver")
    assert bad.exit_code == 2 and "window must be one of" in bad.output


def test_check_data_tag_labels_filters_and_frames_options(tmp_path: Path) -> None:
    for p, series in enumerate(["PA", "PA OPACITY", "PA", "PA OPACITY", "LATERAL"]):
        path = tmp_path / f"s{p}.dcm"
        write_image(path, f"PID-{p}", 100 + 40 * p)
        retag(path, SeriesDescription=series)
    result = run_check_data(
        str(tmp_path),
        "--image-size",
        "16",
        "--json",
        "--label-source",
        "tag",
        "--label-tag",
        "SeriesDescription",
        "--label-map",
        "pa=normal",
        "--label-map",
        "PA OPACITY=opacity",
        "--filter",
        "SeriesDescription=PA,pa opacity",
        "--frame-policy",
        "all",
        "--window",
        "40/400",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["filtered"] == 1 and summary["rejected_total"] == 0
    assert summary["train"]["total_images"] + summary["val"]["total_images"] == 4
    bad = run_check_data(str(tmp_path), "--label-map", "novalue")
    assert bad.exit_code == 2 and "--label-map expects KEY=VALUE" in bad.output


def test_pool_that_cannot_start_falls_back_to_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from radfed.data import workers

    class BrokenPool:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def submit(self, *args: object, **kwargs: object) -> Future:
            future: Future = Future()
            future.set_exception(BrokenProcessPool("no __main__ guard"))
            return future

        def shutdown(self, *args: object, **kwargs: object) -> None:
            pass

    make_clinic(tmp_path, n_patients=4, images=2)
    serial = load_clinic(tmp_path, LABELS, SIZE)
    monkeypatch.setattr(workers, "ProcessPoolExecutor", BrokenPool)
    pooled = load_clinic(tmp_path, LABELS, SIZE, workers=2)
    torch.testing.assert_close(pooled.train.images, serial.train.images)
    assert pooled.rejected == []


@pytest.mark.e2e
def test_options_manifest_and_card_load_without_torch() -> None:
    """The coordinator and dashboard read options, manifests and cards without the pixel stack."""
    import subprocess
    import sys

    code = (
        "import sys; import radfed.data.options, radfed.data.card, radfed.data.manifest; "
        "from radfed.data import DataOptions, DataError, format_card, REJECTION_HELP; "
        "DataOptions(frame_policy='all'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
