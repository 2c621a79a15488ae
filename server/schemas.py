"""Typed request and response bodies: they validate input and make the OpenAPI page (`/docs`) describe the API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: The store keys images by int64.
ImageId = Annotated[int, Field(ge=0, le=2**63 - 1)]


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in one line.", examples=["no image with id 7 in the collection"])


class Hit(BaseModel):
    """One similar image."""

    rank: int = Field(description="1 for the most similar.")
    id: int
    score: float = Field(description="Cosine similarity to the query, 1.0 for the same image.")
    path: str = Field(description="Where the image file was when it was indexed (on the server).")
    width: int
    height: int
    thumbnail_url: str = Field(description="The stored JPEG preview (longest side at most 256 px).")


class SearchResponse(BaseModel):
    results: list[Hit]
    k: int
    timings_ms: dict[str, float] = Field(description="Milliseconds per stage, as in the Server-Timing header.")


class BatchSearchResponse(BaseModel):
    results: list[list[Hit]] = Field(description="One list per query, in the order they were sent.")
    k: int
    timings_ms: dict[str, float]


class VectorQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vectors: list[list[float]] = Field(
        min_length=1, description="One or more L2-normalised vectors of the collection's dimension."
    )
    k: int = Field(10, ge=1, description="Results per vector.")
    exclude_ids: list[ImageId] = Field(default_factory=list, description="Ids left out of every result list.")


class IdQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[ImageId] = Field(min_length=1, description="Stored images to search from.")
    k: int = Field(10, ge=1)
    exclude_self: bool = Field(True, description="Leave each query image out of its own results.")
    exclude_ids: list[ImageId] = Field(default_factory=list)


class PathToAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A file under the server's --allow-root folder (absolute, or relative to it).")


class Vector(BaseModel):
    id: int
    vector: list[float] = Field(description="The stored L2-normalised vector.")


class ImageInfo(BaseModel):
    id: int
    path: str
    width: int
    height: int
    format: str
    size: int = Field(description="File size in bytes.")
    sha256: str
    thumbnail_url: str


class Added(BaseModel):
    image: ImageInfo
    created: bool = Field(description="False when the collection already held this exact file.")
    timings_ms: dict[str, float]


class Removed(BaseModel):
    removed: ImageInfo


class Health(BaseModel):
    status: str = Field(examples=["ok", "loading"])
    detail: str | None = None


class Info(BaseModel):
    """The collection and the server."""

    images: int
    model: str
    dim: int
    metric: str
    index_factory: str
    search_params: str
    device: str
    engine: str = Field(
        description="What runs the model for photo searches: 'onnxruntime' (the collection's ONNX export, "
        "`simsearch index --onnx`) or 'torch'; 'not loaded' until ready."
    )
    ready: bool
    max_batch: int
    max_k: int
    max_request_mb: float
    max_pixels: int
    writes: bool = Field(description="Whether the server takes adds and deletes (it has an admin token).")
    add_by_path: bool = Field(description="Whether adding by a server path is allowed (--allow-root).")
    auth: bool = Field(description="Whether reads need a token.")
    version: str
