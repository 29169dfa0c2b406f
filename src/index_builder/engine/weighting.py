"""Weighting schemes: target weights of the selected constituents at a rebalance.

Every scheme works on a whole batch of rebalance dates at once: ``caps`` is an
``(R, K)`` matrix of market caps (row = rebalance date, column = constituent in
rank order) and ``present`` marks real entries (rows may hold fewer than K).
Rows of the result sum to 1 over present entries and are 0 elsewhere.

A row's weights depend on that row only, summed in rank order
(:mod:`index_builder.engine.ordered`): a rebalance weighted inside a ten-year
batch and the same rebalance weighted alone give the same doubles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.ordered import ordered_sum, row_sums
from index_builder.engine.registry import Registry

FloatMatrix = NDArray[np.float64]
FloatArray = NDArray[np.float64]
BoolMatrix = NDArray[np.bool_]

# Comparisons of weights with caps, thresholds and limits allow this much, so that
# floating-point noise after a redistribution never triggers another pass
# (METHODOLOGY part 2 "Aggregate capping": comparisons allow 1e-12).
TOLERANCE = 1e-12


@dataclass(frozen=True)
class TargetWeights:
    """Target weights of a batch of rebalances, and the rows whose rules could not
    all be met (row -> why), which the build reports as warnings."""

    values: FloatMatrix
    infeasible: dict[int, str] = field(default_factory=dict)


class WeightingScheme(Protocol):
    """Computes target weights for a batch of rebalances."""

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> TargetWeights:
        """Target weights, shape of ``caps``."""
        ...


WEIGHTINGS: Registry[WeightingScheme] = Registry("weighting")


@WEIGHTINGS.register("equal")
class EqualWeight:
    """w_i = 1 / |C|."""

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> TargetWeights:
        counts = present.sum(axis=1, keepdims=True)
        return TargetWeights(np.where(present, 1.0 / np.maximum(counts, 1), 0.0))


@WEIGHTINGS.register("market_cap")
class MarketCapWeight:
    """w_i = cap_i / sum of caps."""

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> TargetWeights:
        return TargetWeights(proportional(caps, present))


@WEIGHTINGS.register("sqrt_market_cap")
class SqrtMarketCapWeight:
    """w_i = sqrt(cap_i) / sum of sqrt(caps): between equal and market-cap weights.

    Behind the feature flag ``weighting_sqrt_market_cap`` (off by default).
    """

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> TargetWeights:
        return TargetWeights(proportional(np.sqrt(np.where(present, caps, 0.0)), present))


@WEIGHTINGS.register("capped_market_cap")
class CappedMarketCapWeight:
    """Market-cap weights with a single-name cap, and optionally a group cap.

    Single-name cap: every weight above ``cap`` is set to the cap and the excess
    redistributed pro rata (by market cap) over the uncapped names, repeated until
    no weight exceeds the cap; when ``n * cap < 1`` the cap cannot be met and the
    weights are equal (the smallest possible maximum weight).

    Group cap (``group_cap: {threshold, limit}``): the weights above the threshold
    must sum to at most the limit, by the algorithm of METHODOLOGY part 2,
    :func:`group_capped_weights`. A rebalance where it has no solution keeps the
    single-name capped weights and is reported.
    """

    def weights(
        self, caps: FloatMatrix, present: BoolMatrix, definition: IndexDefinition
    ) -> TargetWeights:
        cap = float(definition.cap if definition.cap is not None else 1.0)
        weights = capped_weights(caps, present, cap)
        group = definition.group_cap
        if group is None:
            return TargetWeights(weights)
        infeasible: dict[int, str] = {}
        for row in range(weights.shape[0]):
            idx = np.flatnonzero(present[row])
            if meets_group_limit(weights[row, idx], group.threshold, group.limit):
                continue
            solved = group_capped_weights(
                caps[row, idx], weights[row, idx], cap, group.threshold, group.limit
            )
            if solved is None:
                infeasible[row] = (
                    f"the group cap (weights above {group.threshold:g} summing to at most "
                    f"{group.limit:g}) cannot be met with {len(idx)} constituents under the "
                    f"{cap:g} cap; single-name capped weights used"
                )
            else:
                weights[row, idx] = solved
        return TargetWeights(weights, infeasible)


def proportional(values: FloatMatrix, present: BoolMatrix) -> FloatMatrix:
    """Each present value divided by its row's sum (rank order), 0 elsewhere."""
    vals = np.where(present, values, 0.0)
    totals = row_sums(vals)[:, None]
    out: FloatMatrix = np.divide(vals, totals, out=np.zeros_like(vals), where=totals > 0)
    return out


def capped_weights(caps: FloatMatrix, present: BoolMatrix, cap: float) -> FloatMatrix:
    """Iterative single-name capping for each row (see :class:`CappedMarketCapWeight`).

    Every pass recomputes every row from its own inputs, so a row's result is the
    same whatever other rows the batch holds.
    """
    counts = present.sum(axis=1)
    weights = proportional(caps, present)
    capped = np.zeros_like(present)
    limit = cap + TOLERANCE
    for _ in range(caps.shape[1] + 1):
        over = present & ~capped & (weights > limit)
        if not over.any():
            break
        capped |= over
        free = present & ~capped
        room = 1.0 - cap * capped.sum(axis=1, keepdims=True)
        weights = np.where(capped, cap, room * proportional(caps, free))
    infeasible = counts * cap < 1.0
    if infeasible.any():
        equal = np.where(present, 1.0 / np.maximum(counts, 1)[:, None], 0.0)
        weights[infeasible] = equal[infeasible]
    return np.where(present, weights, 0.0)


def meets_group_limit(weights: FloatArray, threshold: float, limit: float) -> bool:
    """True when the weights above ``threshold`` (strictly) sum to at most ``limit``."""
    large = weights[weights > threshold + TOLERANCE]
    return ordered_sum(large) <= limit + TOLERANCE


def fill(caps: FloatArray, bounds: FloatArray, total: float = 1.0) -> FloatArray | None:
    """Weights pro rata to ``caps`` summing to ``total``, none above its bound.

    A weight above its bound is set to the bound and the excess goes pro rata to
    the names still below theirs, repeatedly (w_i = min(bound_i, lambda * cap_i)).
    None when the bounds sum to less than ``total``.
    """
    if ordered_sum(bounds) < total - TOLERANCE:
        return None
    n = len(caps)
    fixed = np.zeros(n, dtype=bool)
    weights = np.zeros(n)
    for _ in range(n + 1):
        free = ~fixed
        room = total - ordered_sum(weights[fixed])
        free_caps = ordered_sum(caps[free])
        if free_caps <= 0.0:
            break
        weights[free] = caps[free] / free_caps * room
        over = free & (weights > bounds + TOLERANCE)
        if not over.any():
            break
        fixed |= over
        weights[over] = bounds[over]
    return weights


def group_capped_weights(
    caps: FloatArray, single: FloatArray, cap: float, threshold: float, limit: float
) -> FloatArray | None:
    """The aggregate cap of METHODOLOGY part 2, step 2 (``caps`` in rank order,
    ``single`` the single-name capped weights w0, which break the group limit).

    For m = the number of w0 weights above the threshold, then m - 1, ..., 0:
    (a) the top m names bounded by ``cap``, the others by ``threshold``, filled pro
    rata by market cap; done when the group limit holds; (b) else, when
    m * cap >= limit and (n - m) * threshold >= 1 - limit, the top m filled pro
    rata to exactly ``limit`` and the others to ``1 - limit``; done when the
    smallest of the top m is at least the largest of the others. None: no m works.
    """
    n = len(caps)
    m_start = int(np.count_nonzero(single > threshold + TOLERANCE))
    for m in range(m_start, -1, -1):
        bounds = np.where(np.arange(n) < m, cap, threshold)
        weights = fill(caps, bounds)
        if weights is not None and meets_group_limit(weights, threshold, limit):
            return weights
        if m * cap >= limit - TOLERANCE and (n - m) * threshold >= 1.0 - limit - TOLERANCE:
            top = fill(caps[:m], np.full(m, cap), limit)
            rest = fill(caps[m:], np.full(n - m, threshold), 1.0 - limit)
            if top is None or rest is None:
                continue
            smallest_top = float(top.min()) if m else np.inf
            largest_rest = float(rest.max()) if n - m else -np.inf
            if smallest_top >= largest_rest - TOLERANCE:
                return np.concatenate([top, rest])
    return None
