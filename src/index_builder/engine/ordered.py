"""Sums in a fixed order, so a result never depends on how a batch was shaped.

NumPy's reductions choose their summation order by array layout, length and the
CPU's vector width (pairwise blocks, SIMD lanes). A level computed for one day
inside a 2,520-day batch and the same level computed alone in an incremental
build must be the same double, on every x86-64 machine: published history is
compared bit for bit with its reproduction (METHODOLOGY "Published history").
Element-wise IEEE operations (+, -, *, /, sqrt) are correctly rounded on every
machine; only the order of accumulation has to be pinned, and it is here:
left to right along the last axis.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def row_sums(matrix: FloatArray) -> FloatArray:
    """Sum of each row, accumulated left to right (column 0 first).

    A loop over columns, each step one element-wise addition over all rows: the
    order is fixed and the work stays vectorised over rows. Zero padding changes
    nothing (x + 0.0 == x).
    """
    if matrix.ndim != 2:
        raise ValueError("row_sums needs a 2-D array")
    rows, columns = matrix.shape
    if columns == 0:
        return np.zeros(rows)
    total = matrix[:, 0].astype(np.float64, copy=True)
    for j in range(1, columns):
        total += matrix[:, j]
    return total


def ordered_sum(values: FloatArray) -> float:
    """Sum of a 1-D array, left to right (the order :func:`row_sums` uses)."""
    total = 0.0
    for value in values.tolist():
        total += value
    return total
