"""Scoring a model by retrieval: embed a labelled set with the model's eval transform (`embedding`), then exact
k-NN recall@k (hit rate), MAP@R, R-precision and NMI, leave-one-out or against a gallery (`protocol`), beside the
raw-pixel baselines of the same images (`baselines`), and the Omniglot 20-way one-shot protocol (`scoring`), as typed
records with their JSON form and default file names (`records`)."""

from simsearch.evaluation.baselines import PCA_DIM, PIXEL_SIDE, baseline_records, pixel_baselines, pixel_vectors
from simsearch.evaluation.embedding import (
    TransformedDataset,
    autocast,
    collate_readable,
    embed_dataset,
    embed_queries_and_gallery,
    labels_by_class_name,
)
from simsearch.evaluation.protocol import EVAL_KS, nmi_omitted_reason, parse_ks, score_vectors, views_protocol
from simsearch.evaluation.records import (
    ONE_SHOT_DATA,
    EvalRecord,
    EvaluationError,
    OneShotRecord,
    default_record_path,
    read_record,
)
from simsearch.evaluation.scoring import (
    ScoredSet,
    evaluate,
    evaluate_embeddings,
    evaluate_labelled,
    one_shot_eval,
    one_shot_record,
)

__all__ = [
    "EVAL_KS",
    "ONE_SHOT_DATA",
    "PCA_DIM",
    "PIXEL_SIDE",
    "EvalRecord",
    "EvaluationError",
    "OneShotRecord",
    "ScoredSet",
    "TransformedDataset",
    "autocast",
    "baseline_records",
    "collate_readable",
    "default_record_path",
    "embed_dataset",
    "embed_queries_and_gallery",
    "evaluate",
    "evaluate_embeddings",
    "evaluate_labelled",
    "labels_by_class_name",
    "nmi_omitted_reason",
    "one_shot_eval",
    "one_shot_record",
    "parse_ks",
    "pixel_baselines",
    "pixel_vectors",
    "read_record",
    "score_vectors",
    "views_protocol",
]
