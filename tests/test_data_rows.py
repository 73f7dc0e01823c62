"""radfed.data.rows: a clinic's pixels as float16 rows on disk, read a batch at a time.

The rows must be exactly what decoding each file gives (float16, as the cache always held
them), whatever order the workers finish in, with or without a cache folder; training,
evaluation, feature extraction and the data digest must read one batch at a time and
compute what they computed on one in-memory tensor."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radfed import dicom, features as feat
from radfed.batchnorm import reestimate_batchnorm
from radfed.data import DataOptions, load_clinic
from radfed.data.rows import ConcatRows, ImageRows, PixelFile, PixelWriter, as_pixel_file
from radfed.models import create_model
from radfed.training import predict_logits, train_local

LABELS = ("normal", "opacity")
SIZE = 24


def _write(path: Path, patient: str, rng: np.random.Generator) -> None:
    """A small DX image of random 12-bit pixels (every image differs)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.Modality, ds.Manufacturer = patient, "DX", "RowsVendor"
    rows, cols = int(rng.integers(20, 40)), int(rng.integers(20, 40))
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4096, (rows, cols), dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 patients with 2 images each, labels alternating by patient, one broken file."""
    root = tmp_path_factory.mktemp("rows-clinic")
    rng = np.random.default_rng(7)
    lines = ["file,label"]
    for p in range(30):
        for k in range(2):
            rel = f"p{p:02d}/im{k}.dcm"
            _write(root / rel, f"PID-{p:03d}", rng)
            lines.append(f"{rel},{LABELS[p % 2]}")
    (root / "broken.dcm").write_bytes(b"DICM but not really")
    lines.append(f"broken.dcm,{LABELS[0]}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _decoded(root: Path, relpath: str) -> torch.Tensor:
    """What decoding one file gives, as the in-memory path built it (float16 -> float32)."""
    img, reason = dicom.preprocess_file(str(root / relpath), SIZE, None, "middle")
    assert not reason
    return torch.from_numpy(img[:1].astype(np.float32))


def test_rows_are_exactly_each_files_decoded_pixels_with_cache_and_workers(clinic: Path, tmp_path: Path) -> None:
    plain = load_clinic(clinic, LABELS, SIZE)
    for split in (plain.train, plain.val):
        assert isinstance(split.pixels, ImageRows) and split.pixels.shape == (len(split), 1, SIZE, SIZE)
        for i, rel in enumerate(split.files):
            assert torch.equal(split.pixels[i], _decoded(clinic, rel)), rel
    assert [r for _, r in plain.rejected]  # the broken file, rejected as before
    cached = load_clinic(clinic, LABELS, SIZE, cache_dir=tmp_path / "cache", workers=2)  # out-of-order writes
    again = load_clinic(clinic, LABELS, SIZE, cache_dir=tmp_path / "cache")  # from the cache entry
    for other in (cached, again):
        assert other.train.files == plain.train.files and other.val.files == plain.val.files
        assert torch.equal(other.train.labels, plain.train.labels)
        assert torch.equal(other.train.images, plain.train.images)
        assert torch.equal(other.val.images, plain.val.images)
        assert other.summary() == plain.summary()
    train_patients = {rel.split("/")[0] for rel in plain.train.files}
    assert train_patients.isdisjoint({rel.split("/")[0] for rel in plain.val.files})


def test_cache_entry_is_rows_plus_index_and_replaces_old_and_broken_entries(clinic: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_clinic(clinic, LABELS, SIZE, cache_dir=cache)
    expected = first.train.images
    rows = sorted(cache.glob("*.pixels"))
    assert len(rows) == 1 and len(list(cache.glob("*.index.npz"))) == 1
    assert rows[0].stat().st_size == (len(first.train) + len(first.val)) * SIZE * SIZE * 2  # float16 rows
    prefix = rows[0].name.rsplit("-", 1)[0]
    (cache / f"{prefix}-{'0' * 32}.npz").write_bytes(b"an entry of the old format")
    with open(rows[0], "r+b") as fh:  # a truncated entry: rebuilt, never read short
        fh.truncate(SIZE * SIZE * 2)
    second = load_clinic(clinic, LABELS, SIZE, cache_dir=cache)
    assert torch.equal(second.train.images, expected)
    assert rows[0].stat().st_size == (len(first.train) + len(first.val)) * SIZE * SIZE * 2
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith("headers.json")) == sorted(
        [rows[0].name, rows[0].with_suffix(".index.npz").name]
    )
    changed = load_clinic(clinic, LABELS, SIZE + 8, cache_dir=cache)  # another size: its own entry
    assert changed.train.pixels.shape[-1] == SIZE + 8 and len(list(cache.glob("*.pixels"))) == 2


def test_writer_keeps_load_order_whatever_order_rows_arrive_in(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stacks = [rng.random((n, 4, 4)).astype(np.float16) if n else None for n in (2, 0, 1, 3)]
    for path in (None, tmp_path / "x.pixels"):
        writer = PixelWriter(4, len(stacks), path)
        for i in (3, 1, 0, 2):
            writer.put(i, stacks[i])
        pixels = writer.finish([0 if s is None else len(s) for s in stacks])
        expected = np.concatenate([s for s in stacks if s is not None])
        assert pixels.count == 6 and pixels.order is not None
        assert np.array_equal(pixels.read(np.arange(6)), expected)
        assert np.array_equal(pixels.read([5, 0, 5]), expected[[5, 0, 5]])
        with pytest.raises(IndexError):
            pixels.read([6])


def test_rows_index_like_a_tensor_and_serve_a_dataloader() -> None:
    images = torch.rand(10, 3, 5, 5).half().float()  # float16-exact values
    store = as_pixel_file(images.reshape(30, 5, 5).numpy().astype(np.float16))
    rows = ImageRows(store, np.arange(30).reshape(10, 3))
    assert len(rows) == 10 and rows.shape == images.shape
    idx = torch.tensor([7, 2, 2, 9])
    assert torch.equal(rows[idx], images[idx])
    assert torch.equal(rows[3], images[3]) and torch.equal(rows[-1], images[-1])
    assert torch.equal(rows[2:8:3], images[2:8:3]) and torch.equal(rows[4, 0], images[4, 0])
    assert torch.equal(rows[np.array([1, 0])], images[[1, 0]]) and rows[:0].shape == (0, 3, 5, 5)
    with pytest.raises(IndexError):
        rows[10]
    loader = torch.utils.data.DataLoader(rows, batch_size=4)
    assert torch.equal(torch.cat(list(loader)), images)
    pooled = ConcatRows([rows, images[:0], images[:3]])  # the centralised baseline's pooled splits
    whole = torch.cat([images, images[:3]])
    assert len(pooled) == 13 and pooled.shape == whole.shape
    for index in (torch.tensor([12, 0, 10, 9, 11]), slice(8, 13), 11, -1):
        assert torch.equal(pooled[index], whole[index])
    with pytest.raises(TypeError):  # an anonymous file has no path to reopen
        pickle.dumps(rows)


def test_a_cached_split_pickles_by_path(clinic: Path, tmp_path: Path) -> None:
    data = load_clinic(clinic, LABELS, SIZE, cache_dir=tmp_path / "cache")
    copy = pickle.loads(pickle.dumps(data.val.pixels))
    assert torch.equal(copy.tensor(), data.val.images)


class _Counting(PixelFile):
    """A PixelFile that records the most rows any one read asked for."""

    def __init__(self, base: PixelFile) -> None:
        super().__init__(base.fd, None, base.size, base.count, base.order)
        base.fd = -1
        self.most = 0

    def read(self, rows: np.ndarray) -> np.ndarray:
        self.most = max(self.most, int(np.asarray(rows).size))
        return super().read(rows)


def test_training_evaluation_and_features_read_a_batch_at_a_time_and_match_a_tensor(clinic: Path) -> None:
    data = load_clinic(clinic, LABELS, SIZE, options=DataOptions())
    counting = _Counting(data.train.pixels.pixels)
    rows = ImageRows(counting, data.train.pixels.rows[:20])  # small: the 2-core test machine is shared
    labels = data.train.labels[:20]
    tensor = rows.tensor()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare(rows, tensor, labels, counting)
    finally:
        torch.set_num_threads(threads)


def _compare(rows: ImageRows, tensor: torch.Tensor, labels: torch.Tensor, counting: _Counting) -> None:
    counting.most = 0
    batch = 8

    def model():
        torch.manual_seed(0)
        return create_model("resnet18", 2, "random")

    on_rows, on_tensor = model(), model()
    for net, images in ((on_rows, rows), (on_tensor, tensor)):
        train_local(
            net,
            images,
            labels,
            epochs=2,
            batch_size=batch,
            learning_rate=1e-3,
            seed=3,
            augment="intensity",
            device=torch.device("cpu"),
        )
    assert counting.most <= batch
    for a, b in zip(on_rows.state_dict().values(), on_tensor.state_dict().values()):
        assert torch.equal(a, b)  # same batches, same augmentation, same weights
    assert torch.equal(
        predict_logits(on_rows, rows, batch_size=batch), predict_logits(on_rows, tensor, batch_size=batch)
    )
    reestimate_batchnorm(on_rows, rows, batch_size=batch)
    reestimate_batchnorm(on_tensor, tensor, batch_size=batch)
    assert all(torch.equal(a, b) for a, b in zip(on_rows.state_dict().values(), on_tensor.state_dict().values()))
    feats_rows = feat.compute_features(on_rows, rows, rows[:5], batch_size=batch, device=torch.device("cpu"))
    feats_tensor = feat.compute_features(on_rows, tensor, tensor[:5], batch_size=batch, device=torch.device("cpu"))
    for a, b in ((feats_rows.train, feats_tensor.train), (feats_rows.train_flipped, feats_tensor.train_flipped)):
        assert torch.equal(a, b)
    assert counting.most <= batch
    assert feat.tensors_digest(rows, labels) == feat.tensors_digest(tensor, labels)
    assert counting.most <= 256


def test_head_only_features_stream_to_their_file_and_train_the_head_as_tensors_do(tmp_path: Path) -> None:
    from radfed.data.rows import StoredRows
    from radfed.training import predict_head_logits, train_head

    torch.manual_seed(0)
    model = create_model("resnet18", 2, "random")
    feat.split_head(model)
    images = torch.rand(12, 1, 16, 16)
    labels = torch.arange(12) % 2
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "old.pt").write_bytes(b"a feature file of the previous format")
    path = feat.feature_path(tmp_path, "b" * 64, "d" * 64, 16)
    in_memory = feat.compute_features(model, images, images[:5], batch_size=4, device=torch.device("cpu"))
    on_disk = feat.compute_features(model, images, images[:5], batch_size=4, device=torch.device("cpu"), path=path)
    assert isinstance(on_disk.train, StoredRows) and not (tmp_path / "features" / "old.pt").exists()
    for a, b in (
        (on_disk.train, in_memory.train),
        (on_disk.train_flipped, in_memory.train_flipped),
        (on_disk.val, in_memory.val),
    ):
        assert torch.equal(a[:], b)
    heads = []
    for feats in (on_disk, in_memory):
        torch.manual_seed(1)
        head = torch.nn.Linear(model.head.in_features, 2)
        train_head(
            head,
            feats.train,
            feats.train_flipped,
            labels,
            epochs=2,
            batch_size=4,
            learning_rate=1e-2,
            seed=5,
            device=torch.device("cpu"),
        )
        heads.append(head)
    assert all(torch.equal(a, b) for a, b in zip(heads[0].state_dict().values(), heads[1].state_dict().values()))
    assert torch.equal(predict_head_logits(heads[0], on_disk.val), predict_head_logits(heads[0], in_memory.val))
    again = feat.load_features(path)
    assert again is not None and torch.equal(again.val[:], in_memory.val)
