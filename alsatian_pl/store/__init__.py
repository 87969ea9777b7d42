"""The block store: a content-addressed, block-level model store on local disk (paper §4.2).

Every distinct block is one safetensors file named by its content hash; a model is a JSON manifest of ordered block
hashes plus metadata. The package, by job:

- ``_records``: the JSON records (:class:`ModelManifest`, :class:`BlockEntry`, :class:`HeadEntry`,
  :class:`StoreStats`);
- ``_codec``: block files (content hash, spec, the checksummed safetensors bytes, mapped and verified reads,
  :func:`materialize`) and the format constants;
- ``_locking``: :class:`StoreLock`, the ``flock`` that keeps gc away from a running import;
- ``_store``: :class:`BlockStore`: put, get and query models, blocks and heads;
- ``_upkeep``: what ``BlockStore`` delegates its upkeep to: damaged blocks, gc, verify, the format upgrade, shape
  propagation.
"""

from ._codec import (BLOCK_FORMAT, CHECKSUM, FORMAT_FILE, HEAD_FORMAT, STORE_FORMAT, block_file_bytes, block_spec,
                     block_tensors, checksum_matches, content_hash, head_sizes, materialize, parse_block)
from ._locking import StoreLock
from ._records import BlockEntry, HeadEntry, ModelManifest, StoreStats
from ._store import BlockStore

__all__ = [
    "BLOCK_FORMAT", "CHECKSUM", "FORMAT_FILE", "HEAD_FORMAT", "STORE_FORMAT",
    "BlockEntry", "BlockStore", "HeadEntry", "ModelManifest", "StoreLock", "StoreStats",
    "block_file_bytes", "block_spec", "block_tensors", "checksum_matches", "content_hash", "head_sizes",
    "materialize", "parse_block",
]
