from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

ArrayLike = Union[Sequence[int], npt.NDArray[Any]]

SOURCE_CODES: Dict[str, int]
TARGET_CODES: Dict[str, int]
LOSSLESS: FrozenSet[Tuple[str, str]]

def cast_scatter(src_ptrs: ArrayLike, lengths: ArrayLike, starts: ArrayLike,
                 offsets: ArrayLike, row_elems: int, src_code: str, dst_code: str,
                 out_ptr: int, n_out_rows: int, storages: Optional[List[Any]] = ...,
                 snapshot: Optional[npt.NDArray[np.int64]] = ...) -> None: ...
CAST_CHUNK_BYTES: int
def cast_pack(src_ptrs: ArrayLike, lengths: ArrayLike, sorted_indices: Optional[ArrayLike],
              batch_sizes: ArrayLike, row_elems: int, src_code: str, dst_code: str,
              out_ptr: int, n_out_rows: int, storages: Optional[List[Any]] = ...,
              snapshot: Optional[npt.NDArray[np.int64]] = ...,
              chunk_bytes: int = ...) -> None: ...
def pack_arrays_cast(seqs: Sequence[Any], enforce_sorted: bool, dtype: np.dtype[Any],
                     chunk_bytes: int = ...
                     ) -> Optional[Tuple[npt.NDArray[Any], npt.NDArray[np.int64],
                                         Optional[npt.NDArray[np.int64]],
                                         Optional[npt.NDArray[np.int64]]]]: ...
