"""Labelled image data for metric learning: datasets (folders, arrays, LMDB), two-view data, the real shared sets,
samplers."""

from __future__ import annotations

from simsearch.data.caltech import caltech101_classes, caltech101_split, default_cache_dir
from simsearch.data.folders import (
    IMAGE_EXTENSIONS,
    ArrayDataset,
    ClassSubset,
    DataNotFoundError,
    DatasetError,
    ImageFolderDataset,
)
from simsearch.data.packed import LMDBImageDataset, is_lmdb_dataset, open_image_dataset, write_lmdb_dataset
from simsearch.data.real import (
    DATA_ENV,
    FASHION_MNIST_CLASSES,
    OneShotRun,
    data_root,
    load_fashion_mnist,
    load_omniglot,
    omniglot_one_shot_runs,
)
from simsearch.data.samplers import PKSampler, SiamesePairs, pairs_from_batch, triplets_from_batch
from simsearch.data.specs import (
    SHARED_SPLITS,
    data_file_name,
    data_label,
    is_shared_split_name,
    open_data,
    open_shared_split,
)
from simsearch.data.views import ViewedDataset, ViewFolderDataset, class_subset, open_views, pack_views

__all__ = [
    "DATA_ENV",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "SHARED_SPLITS",
    "ArrayDataset",
    "ClassSubset",
    "DataNotFoundError",
    "DatasetError",
    "ImageFolderDataset",
    "LMDBImageDataset",
    "OneShotRun",
    "PKSampler",
    "SiamesePairs",
    "ViewFolderDataset",
    "ViewedDataset",
    "caltech101_classes",
    "caltech101_split",
    "class_subset",
    "data_file_name",
    "data_label",
    "data_root",
    "default_cache_dir",
    "is_lmdb_dataset",
    "is_shared_split_name",
    "load_fashion_mnist",
    "load_omniglot",
    "omniglot_one_shot_runs",
    "open_data",
    "open_image_dataset",
    "open_shared_split",
    "open_views",
    "pack_views",
    "pairs_from_batch",
    "triplets_from_batch",
    "write_lmdb_dataset",
]
