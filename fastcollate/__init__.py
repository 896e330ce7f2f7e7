"""fastcollate: ragged batches into PyTorch's PackedSequence in one Cython pass."""
from . import _core  # noqa: F401  (fails loudly if the extension was not built)

__version__ = "0.1.0"
__all__ = ["__version__"]
