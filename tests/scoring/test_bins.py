"""The shared binning rule: the same bins as ``searchsorted(side="right")``, the rule training binned by."""

from __future__ import annotations

import numpy as np
import pytest

from lambdas.scoring.bins import COMPARISONS_UP_TO_EDGES, bin_index

EDGE_COUNTS = [0, 1, 9, COMPARISONS_UP_TO_EDGES, COMPARISONS_UP_TO_EDGES + 1, 200]  # both code paths


@pytest.mark.parametrize("edge_count", EDGE_COUNTS)
def test_given_values_on_and_off_edges_when_binned_then_bins_are_searchsorted_right(edge_count: int) -> None:
    # Given ascending edges (with a repeated one) and values on every edge, between them, beyond both
    # ends, signed zeros and infinities
    rng = np.random.default_rng(edge_count)
    edges = np.sort(rng.uniform(-50.0, 50.0, edge_count))
    if edge_count > 2:
        edges[np.argmin(np.abs(edges))] = 0.0  # the edge nearest zero: the edges stay ascending
        edges[1] = edges[2]
    values = np.concatenate(
        [edges, edges - 1e-9, edges + 1e-9, rng.uniform(-80.0, 80.0, 500), [-0.0, 0.0, -np.inf, np.inf]]
    )
    # When binned
    bins = bin_index(edges, values)
    # Then every value is in the bin searchsorted gives, as an intp array of the same shape
    np.testing.assert_array_equal(bins, np.searchsorted(edges, values, side="right"))
    assert bins.dtype == np.intp
    assert bins.shape == values.shape
