"""A round checkpoint as a portable model file: ONNX or TorchScript, checked against PyTorch.

Checkpoints (`round-NNN.pt`) are state_dicts: using one needs radfed, the right
architecture and the run's input convention. An exported file carries the computation
itself, including the model's own input conversion (grey to 3 channels, the weight
source's normalisation), so a deployment feeds it exactly what radfed's pipeline feeds
the model in training: N x 1 x S x S float32 grey values in [0, 1]. The model card
(radfed.model_card) says so in words.

Every export is verified before it is kept: the file is loaded back with the runtime a
user would use (onnxruntime, `torch.jit.load`) and its outputs on one fixed batch are
compared with the PyTorch model's; a file further than the tolerance is deleted.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radfed.models import Classifier, WeightsError, create_model
from radfed.spec import ExperimentSpec, SpecError
from radfed.weights import checkpoint_info

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_OPSET = 18
TOLERANCE = 1e-4  # max abs difference of logits, exported vs PyTorch
INPUT_NAME, OUTPUT_NAME = "image", "logits"
CHECK_BATCH = 3  # not the export's example batch (2): the check also exercises the dynamic axis


class ExportError(RuntimeError):
    """A checkpoint that cannot be exported, or an export that does not match; one line."""


@dataclass(frozen=True)
class ExportCheck:
    """How the exported file was checked: runtime, batch and the largest logit difference."""

    runtime: str
    batch_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


@dataclass(frozen=True)
class ExportedModel:
    """An exported file and what produced and checked it."""

    format: str
    path: Path
    size_bytes: int
    exporter: str
    opset: int | None
    check: ExportCheck


def load_checkpoint_model(path: Path, spec_json: str) -> tuple[Classifier, str]:
    """(the checkpoint's model in eval mode, its input convention).

    The architecture and the number of classes come from the run's spec; the convention
    from the checkpoint (radfed.weights.checkpoint_info), as a clinic rebuilds the model.
    """
    path = Path(path)
    try:
        spec = ExperimentSpec.from_json(spec_json)
        info = checkpoint_info(path)
    except (SpecError, WeightsError) as err:
        raise ExportError(f"{path}: {str(err).splitlines()[0]}") from None
    if info is None:
        raise ExportError(f"{path}: not a radfed round checkpoint (no state_dict and spec in it)")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = create_model(spec.backbone, len(spec.labels), "random", normalisation=info["normalisation"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # keys or shapes that do not fit the spec's model
        raise ExportError(
            f"{path}: does not fit a {spec.backbone} with {len(spec.labels)} classes "
            f"({' '.join(str(err).split())[:160]})"
        ) from None
    return model.eval(), info["normalisation"]


def check_batch(image_size: int, batch: int = CHECK_BATCH, seed: int = 0) -> torch.Tensor:
    """The fixed batch exports are checked on: uniform grey values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, image_size, image_size, generator=g)


def _reference(model: Classifier, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(batch).numpy()


def _max_diff(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


# --------------------------------------------------------------------------- ONNX


def _onnx_export(model: Classifier, example: torch.Tensor, path: Path) -> str:
    """torch.onnx.export with a dynamic batch axis; the dynamo exporter, else the TorchScript
    one (a backbone torch.export cannot capture). Returns which exporter wrote the file."""
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
        return "torch.onnx (dynamo)"
    except Exception:  # noqa: BLE001 - the exporter raises many kinds; the legacy one may work
        path.unlink(missing_ok=True)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=ONNX_OPSET,
        dynamo=False,
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )
    return "torch.onnx (torchscript)"


def check_onnx(path: Path, model: Classifier, image_size: int, tolerance: float = TOLERANCE) -> ExportCheck:
    """onnx.checker on the file, then onnxruntime (CPU) against PyTorch on `check_batch`."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # noqa: BLE001 - ValidationError and friends
        raise ExportError(f"{path.name}: onnx.checker refused it: {str(err).splitlines()[0][:200]}") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    batch = check_batch(image_size)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    return ExportCheck(
        f"onnxruntime {ort.__version__} (CPU)", tuple(batch.shape), _max_diff(got, _reference(model, batch)), tolerance
    )


def export_onnx(model: Classifier, path: Path, image_size: int, tolerance: float = TOLERANCE) -> ExportedModel:
    """`path` as ONNX (opset ONNX_OPSET, input `image` N x 1 x S x S, output `logits`)."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes)
        exporter = _onnx_export(model, check_batch(image_size, batch=2, seed=1), path)
    return _kept(path, "onnx", exporter, ONNX_OPSET, check_onnx(path, model, image_size, tolerance))


# -------------------------------------------------------------------- TorchScript


def check_torchscript(path: Path, model: Classifier, image_size: int, tolerance: float = TOLERANCE) -> ExportCheck:
    """`torch.jit.load` the file and compare with PyTorch on `check_batch`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still shipped
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    batch = check_batch(image_size)
    with torch.no_grad():
        got = loaded(batch).numpy()
    return ExportCheck(
        f"torch.jit {torch.__version__} (CPU)", tuple(batch.shape), _max_diff(got, _reference(model, batch)), tolerance
    )


def export_torchscript(model: Classifier, path: Path, image_size: int, tolerance: float = TOLERANCE) -> ExportedModel:
    """`path` as a traced TorchScript module (input N x 1 x S x S, output logits).

    Traced with one-channel input, which is what the model is given: the grey to 3
    channels branch is recorded as taken.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning on that branch; jit deprecation notes
        traced = torch.jit.trace(model, check_batch(image_size, batch=2, seed=1), check_trace=False)
        extra = {"radfed.json": json.dumps({"input": [None, 1, image_size, image_size], "output": OUTPUT_NAME})}
        torch.jit.save(traced, str(path), _extra_files=extra)
    return _kept(path, "torchscript", "torch.jit.trace", None, check_torchscript(path, model, image_size, tolerance))


def _kept(path: Path, fmt: str, exporter: str, opset: int | None, check: ExportCheck) -> ExportedModel:
    """The export, or ExportError (and no file) when it does not match PyTorch."""
    if not check.passed:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"{fmt} export differs from PyTorch by {check.max_abs_diff:.3g} "
            f"(tolerance {check.tolerance:g}) on a {tuple(check.batch_shape)} batch; "
            "the file was not kept"
        )
    return ExportedModel(fmt, path, path.stat().st_size, exporter, opset, check)


def export_model(
    model: Classifier, fmt: str, path: Path, image_size: int, tolerance: float = TOLERANCE
) -> ExportedModel:
    """Export in `fmt` ("onnx" or "torchscript") and verify; see the module doc."""
    if fmt == "onnx":
        return export_onnx(model, path, image_size, tolerance)
    if fmt == "torchscript":
        return export_torchscript(model, path, image_size, tolerance)
    raise ExportError(f"unknown export format '{fmt}'; allowed: {', '.join(FORMATS)}")
