from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
ArrayLike = Union[Sequence[int], npt.NDArray[Any]]

def cu_seqlens(lengths: ArrayLike, out_ptr: int, itemsize: int) -> Tuple[int, int, int]: ...
def concat(src_ptrs: ArrayLike, lengths: ArrayLike, row_bytes: int, out_ptr: int, n_out: int,
           starts: Optional[ArrayLike] = ..., storages: Optional[List[Any]] = ...,
           snapshot: Optional[IntArray] = ..., stream: int = ...) -> None: ...
def positions(lengths: ArrayLike, out_ptr: int, n_out: int, start: int = ...,
              segments: bool = ...) -> None: ...
def boundary_labels(src_ptr: int, lengths: ArrayLike, out_ptr: int, n_out: int, shift: bool,
                    ignore_index: int) -> None: ...
def first_fit_decreasing(lengths: ArrayLike, capacity: int) -> Tuple[IntArray, IntArray]: ...
