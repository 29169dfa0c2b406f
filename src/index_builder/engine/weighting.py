"""Weighting schemes: target weights of the selected constituents at a rebalance.

Every scheme works on a whole batch of rebalance dates at once: ``caps`` is an
``(R, K)`` matrix of market caps (row = rebalance date, column = constituent in
rank order) and ``present`` marks real entries (rows may hold fewer than K).
Rows of the result sum to 1 over present entries and are 0 elsewhere.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.registry import Registry

FloatMatrix = NDArray[np.float64]
FloatArray = NDArray[np.float64]
BoolMatrix = NDArray[np.bool_]

# A weight counts as above the cap only beyond this relative tolerance, so that
# floating-point noise after redistribution does not trigger another pass.
_CAP_TOLERANCE = 1e-12


class WeightingScheme(Protocol):
    """Computes target weights for a batch of rebalances."""

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> FloatMatrix:
        """Target weights, shape of ``caps``."""
        ...


WEIGHTINGS: Registry[WeightingScheme] = Registry("weighting")


@WEIGHTINGS.register("equal")
class EqualWeight:
    """w_i = 1 / |C|."""

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> FloatMatrix:
        counts = present.sum(axis=1, keepdims=True)
        return np.where(present, 1.0 / np.maximum(counts, 1), 0.0)


@WEIGHTINGS.register("market_cap")
class MarketCapWeight:
    """w_i = cap_i / sum of caps."""

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> FloatMatrix:
        return _proportional(caps, present)


@WEIGHTINGS.register("sqrt_market_cap")
class SqrtMarketCapWeight:
    """w_i = sqrt(cap_i) / sum of sqrt(caps): between equal and market-cap weights.

    Behind the feature flag ``weighting_sqrt_market_cap`` (off by default).
    """

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> FloatMatrix:
        return _proportional(np.sqrt(np.where(present, caps, 0.0)), present)


@WEIGHTINGS.register("capped_market_cap")
class CappedMarketCapWeight:
    """Market-cap weights with every weight above ``cap`` set to the cap.

    The excess is redistributed pro rata (by market cap) over the uncapped names,
    repeated until no weight exceeds the cap. When ``n * cap < 1`` the cap cannot be
    met and the result is equal weights (the smallest possible maximum weight).
    """

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> FloatMatrix:
        cap = float(definition.cap if definition.cap is not None else 1.0)
        weights = capped_weights(caps, present, cap)
        group = definition.group_cap
        if group is None:
            return weights
        limit = group.limit * (1.0 + _CAP_TOLERANCE)
        large = np.where(weights > group.threshold * (1.0 + _CAP_TOLERANCE), weights, 0.0)
        for row in np.flatnonzero(large.sum(axis=1) > limit):
            idx = np.flatnonzero(present[row])
            weights[row, idx] = group_capped_weights(
                caps[row, idx], cap, group.threshold, group.limit
            )
        return weights


def _proportional(values: FloatMatrix, present: BoolMatrix) -> FloatMatrix:
    vals = np.where(present, values, 0.0)
    totals = vals.sum(axis=1, keepdims=True)
    out: FloatMatrix = np.divide(vals, totals, out=np.zeros_like(vals), where=totals > 0)
    return out


def _fill(caps: FloatArray, bounds: FloatArray) -> FloatArray | None:
    """w_i = min(bound_i, lambda * cap_i) summing to 1; None when the bounds are too low."""
    if bounds.sum() < 1.0 - _CAP_TOLERANCE:
        return None
    fixed = np.zeros(len(caps), dtype=bool)
    weights = np.zeros(len(caps))
    for _ in range(len(caps) + 1):
        free = ~fixed
        room = 1.0 - weights[fixed].sum()
        weights[free] = caps[free] / caps[free].sum() * room
        over = free & (weights > bounds * (1.0 + _CAP_TOLERANCE))
        if not over.any():
            break
        fixed |= over
        weights[over] = bounds[over]
    return weights


def group_capped_weights(
    caps: FloatArray, cap: float, threshold: float, limit: float
) -> FloatArray:
    """Single-name cap plus an aggregate cap on the weights above ``threshold``.

    ``caps`` are in rank order (market cap descending, ties by symbol). Names from
    a cut position on are bounded by ``threshold`` instead of ``cap``; the cut
    starts past the last name and moves to the smallest name still above the
    threshold while those weights sum to more than ``limit``. Larger market caps
    never get smaller weights (names past the cut are bounded lower), and when no
    constraint binds the result is the single-name-capped weights. When the
    constraints cannot all be met, equal weights (as for ``n * cap < 1``).
    """
    n = len(caps)
    equal = np.full(n, 1.0 / max(n, 1))
    if n * cap < 1.0:
        return equal
    cut = n
    for _ in range(n + 1):
        bounds = np.where(np.arange(n) < cut, cap, threshold)
        weights = _fill(caps, bounds)
        if weights is None:
            return equal
        large = np.flatnonzero(weights > threshold * (1.0 + _CAP_TOLERANCE))
        if weights[large].sum() <= limit * (1.0 + _CAP_TOLERANCE):
            return weights
        if cut == 0 or len(large) == 0:
            return equal
        cut = int(large[-1])
    return equal


def capped_weights(caps: FloatMatrix, present: BoolMatrix, cap: float) -> FloatMatrix:
    """Iterative single-name capping for each row (see :class:`CappedMarketCapWeight`)."""
    counts = present.sum(axis=1)
    weights = _proportional(caps, present)
    capped = np.zeros_like(present)
    limit = cap * (1.0 + _CAP_TOLERANCE)
    for _ in range(caps.shape[1] + 1):
        over = present & ~capped & (weights > limit)
        if not over.any():
            break
        capped |= over
        free = present & ~capped
        room = 1.0 - cap * capped.sum(axis=1, keepdims=True)
        weights = np.where(capped, cap, room * _proportional(caps, free))
    infeasible = counts * cap < 1.0
    if infeasible.any():
        equal = np.where(present, 1.0 / np.maximum(counts, 1)[:, None], 0.0)
        weights[infeasible] = equal[infeasible]
    return np.where(present, weights, 0.0)
