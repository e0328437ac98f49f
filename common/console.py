"""What a training command prints: library warnings a user cannot act on are held back.

`quiet(True)` (what `train_hgn.py` and `train_nhf.py` do below `--verbose 2`) drops the
warnings listed in `LIBRARY_NOISE` from Python's logging: TensorFlow's and TFDS's notices about
their own internals, which no flag or code change of a user removes. `quiet(False)` (at
`--verbose 2`) shows them again. Nothing else is filtered: every warning about the run itself
(a forced bfloat16, a rollback, a non-finite step) still prints.
"""
from __future__ import annotations

import logging
from typing import Dict, Tuple

# logger name -> message fragments (matched against the formatted message).
LIBRARY_NOISE: Dict[str, Tuple[str, ...]] = {
    # TFDS: every non-default dataset variant is a "custom data configuration"; its own reader
    # calls a property it has deprecated.
    "absl": ("Using custom data configuration", "`FeatureConnector.dtype` is deprecated"),
    # TensorFlow: saving TFP bijectors and distributions touches LinearOperator.graph_parents,
    # deprecated inside TensorFlow itself.
    "tensorflow": ("LinearOperator.graph_parents",),
}


class _DropLibraryNoise(logging.Filter):
    def __init__(self, fragments: Tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


_FILTERS = {name: _DropLibraryNoise(fragments) for name, fragments in LIBRARY_NOISE.items()}


def quiet(enable: bool = True) -> None:
    """Drops (True) or shows again (False) the warnings of `LIBRARY_NOISE`; idempotent."""
    for name, flt in _FILTERS.items():
        logger = logging.getLogger(name)
        if enable:
            logger.addFilter(flt)  # logging ignores a filter added twice
        else:
            logger.removeFilter(flt)
