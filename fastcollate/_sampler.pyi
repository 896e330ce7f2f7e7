from typing import Tuple

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

def build_epoch(order: npt.ArrayLike, lengths: npt.ArrayLike, max_length: int,
                bucket_size: int, batch_size: int, max_tokens: int,
                sort: bool = ...) -> Tuple[IntArray, IntArray]: ...
