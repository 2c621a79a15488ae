"""A model exported to ONNX beside the vectors it made, so that a query runs with ONNX Runtime and never imports torch.

Importing torch and timm costs seconds; a query that only embeds one photo should not pay them. The export is made
once, from the loaded model, and is kept only if its vectors on real photos (decoded and transformed without torch,
`simsearch.models.preprocess`) agree with the model's own to `MIN_COSINE`; a record beside it names the model it was
made from, and it is used only for a collection whose recorded model that is. Needs the `onnx` extra
(`pip install simsearch[onnx]`): `onnx` to export, `onnxruntime` to run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simsearch.errors import ModelError
from simsearch.images import DEFAULT_MAX_PIXELS, load_image
from simsearch.models.preprocess import NumpyTransform, as_image_list, decode_min_side, numpy_transform

if TYPE_CHECKING:
    from simsearch.models.embedder import Embedder

log = logging.getLogger(__name__)

EXPORT_FILE = "model.onnx"
EXPORT_RECORD = "model.onnx.json"
#: Every checked photo's vector from the export must have at least this cosine with the model's own.
MIN_COSINE = 0.99999
_FORMAT = 1
_OPSET = 17


def model_identity(
    model_id: str, weights_sha256: str, dim: int, data_config: Mapping[str, Any], tta: str | None
) -> dict[str, Any]:
    """What an export is held to: the model's id, weights, output size, preprocessing and test-time augmentation,
    in the form JSON gives back (tuples as lists), so a record read from disk compares equal."""
    identity = {
        "id": model_id,
        "weights_sha256": weights_sha256,
        "dim": int(dim),
        "data_config": dict(data_config),
        "tta": tta,
    }
    return json.loads(json.dumps(identity, sort_keys=True))


def embedder_identity(embedder: Embedder) -> dict[str, Any]:
    return model_identity(
        embedder.model_id, embedder.weights_sha256, embedder.embed_dim, embedder.data_config, embedder.tta
    )


@dataclass
class ExportCheck:
    """How the export was checked: photos embedded both ways and the lowest cosine between the two vectors."""

    photos: int
    min_cosine: float


def export_onnx(
    embedder: Embedder, folder: str | os.PathLike[str], photos: Sequence[Any], *, min_cosine: float = MIN_COSINE
) -> ExportCheck:
    """Export `embedder` to `folder`/model.onnx with its record, after checking it on `photos` (paths, bytes or PIL
    images): each photo through the torch model and transform, and through ONNX Runtime and the numpy transform.

    Raises:
        ModelError: no photos, a preprocessing with no torch-free form, a missing `onnx` extra, or vectors that
            differ beyond `min_cosine` (nothing is written then).
    """
    from simsearch.fsio import atomic_write_bytes, atomic_write_json

    listed = as_image_list(photos)
    if not listed:
        raise ModelError("exporting the model needs real photos to check it on, and none were given")
    if numpy_transform(embedder.data_config) is None:
        raise ModelError(f"the preprocessing of {embedder.model_id} has no torch-free form: it needs torch to run")
    data = _onnx_bytes(embedder)
    exported = ExportedModel(data, embedder.data_config, embedder.embed_dim)
    ours = exported.embed(listed)
    theirs = embedder.embed(listed)
    cosines = np.sum(ours * theirs, axis=1)
    check = ExportCheck(photos=len(listed), min_cosine=float(cosines.min()))
    if check.min_cosine < min_cosine:
        raise ModelError(
            f"the ONNX export of {embedder.model_id} gives other vectors than the model (cosine down to "
            f"{check.min_cosine:.6f} on {check.photos} photos, {min_cosine} needed): not kept"
        )
    target = Path(folder)
    record = {
        "format": _FORMAT,
        "model": embedder_identity(embedder),
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "checked": {"photos": check.photos, "min_cosine": check.min_cosine, "required": min_cosine},
        "versions": _versions(),
    }
    # The record goes last: an export without a record (a crash between the two) is never used.
    (target / EXPORT_RECORD).unlink(missing_ok=True)
    atomic_write_bytes(target / EXPORT_FILE, data)
    atomic_write_json(target / EXPORT_RECORD, record)
    log.info("exported %s (checked on %d photos, cosine >= %.6f)", embedder.model_id, check.photos, check.min_cosine)
    return check


def load_exported(
    folder: str | os.PathLike[str], identity: Mapping[str, Any], *, threads: int | None = None
) -> ExportedModel | None:
    """The export in `folder` when it was made from the model `identity` describes (`model_identity`) and its file is
    the one checked; None otherwise (no export, another model, a changed file, no onnxruntime), so the caller loads
    the model itself. `threads`: see `ExportedModel`."""
    target = Path(folder)
    try:
        record = json.loads((target / EXPORT_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the model export in %s: its record is unreadable (%s)", target, exc)
        return None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        return None
    if record.get("model") != json.loads(json.dumps(dict(identity), sort_keys=True)):
        log.info("the model export in %s was made from another model: not used", target)
        return None
    try:
        data = (target / EXPORT_FILE).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != record.get("onnx_sha256"):
        log.warning("the model export in %s changed since it was checked: not used", target)
        return None
    try:
        return ExportedModel(data, identity["data_config"], int(identity["dim"]), threads=threads)
    except ModelError as exc:
        log.info("%s: the model loads with torch instead", exc)
        return None


class ExportedModel:
    """An exported model run by ONNX Runtime on the CPU, with the torch-free decode and transform.

    `threads`: ONNX Runtime's threads for one run (default: $OMP_NUM_THREADS, as torch takes it, else the runtime's
    own choice). Runs may be called from several threads at once: a server runs one per core on one thread each.
    """

    def __init__(
        self, onnx_model: bytes, data_config: Mapping[str, Any], dim: int, *, threads: int | None = None
    ) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelError("running an exported model needs onnxruntime: pip install simsearch[onnx]") from None
        transform = numpy_transform(data_config)
        if transform is None:
            raise ModelError("this model's preprocessing has no torch-free form")
        self.transform: NumpyTransform = transform
        self.min_side = decode_min_side(data_config)
        self.dim = int(dim)
        options = onnxruntime.SessionOptions()
        given = os.environ.get("OMP_NUM_THREADS", "")
        if threads is None and given.isdigit():
            threads = int(given)  # as torch does: the same thread count either way
        if threads is not None:
            options.intra_op_num_threads = max(1, threads)
        self.session = onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def embed(self, images: Any, *, batch_size: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """`(N, D) float32` L2-normalised vectors of images (paths, bytes, PIL images; one alone counts as a list).

        Raises:
            ImageError: an input of another type, or an image that cannot be read.
        """
        listed = as_image_list(images)
        chunks = []
        for start in range(0, len(listed), batch_size):
            batch = listed[start : start + batch_size]
            decoded = [load_image(image, max_pixels=max_pixels, min_side=self.min_side) for image in batch]
            chunks.append(self.forward(np.stack([self.transform(image) for image in decoded])))
        if not chunks:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Vectors of a ready batch `(N, C, H, W) float32` (numpy-transformed images): `(N, D) float32`."""
        (out,) = self.session.run(None, {self._input: batch})
        return np.asarray(out, dtype=np.float32)


def _onnx_bytes(embedder: Embedder) -> bytes:
    """The model in eval mode as ONNX, traced on the CPU with a free batch size."""
    import copy

    import torch

    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise ModelError("exporting the model needs onnx: pip install simsearch[onnx]") from None
    model = copy.deepcopy(embedder).cpu().eval()
    model.use_channels_last(False)  # the layout is the runtime's business: the graph stays plain NCHW
    _, height, width = embedder.data_config["input_size"]
    channels = int(embedder.data_config["input_size"][0])
    example = torch.zeros(2, channels, int(height), int(width))
    with (
        tempfile.TemporaryDirectory(prefix="simsearch-onnx-") as tmp,
        warnings.catch_warnings(),
        torch.inference_mode(False),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow: the check below is the judge
        path = Path(tmp) / EXPORT_FILE
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=False,
            input_names=["images"],
            output_names=["vectors"],
            dynamic_axes={"images": {0: "batch"}, "vectors": {0: "batch"}},
            opset_version=_OPSET,
        )
        return path.read_bytes()


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
