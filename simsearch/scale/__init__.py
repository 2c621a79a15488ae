"""Scale-out: indexing runs whose embedding and index builds run on a Ray cluster (`RayEngine`, the optional extra
`ray`), and collections whose index is larger than memory (`ondisk`: an IVF index trained once, filled shard by shard
in parallel, merged on disk and searched memory-mapped). Ray is imported only when an engine starts."""

from simsearch.scale.ray_engine import RayEngine, open_engine, ray_available

__all__ = ["RayEngine", "open_engine", "ray_available"]
