"""Drift of scored data against the card's reference distributions: the population stability index.

Pure domain code (numpy and the card). A :class:`DriftMonitor` is fed the valid rows of a file chunk by
chunk (the same ONNX feed the model saw, and the probabilities it gave) and only keeps counts, so the
memory it needs does not grow with the file. :meth:`DriftMonitor.summary` compares those counts with
the card's ``reference`` (training rows for features, holdout scores for the score):

    PSI = sum over bins of (actual share - expected share) * ln(actual share / expected share)

Numeric features use the card's bins (quantile cut points of the training rows; the outer bins are
open) plus one bin for missing values; categories use one bin per category the card lists or the
reference has, one for a category neither has (possible only when the card lists no categories, so
validation accepts any text: a category training never saw is a shift, not a missing value) and one for
missing. A share of 0 is floored at ``SHARE_FLOOR`` on both sides (the data's and the reference's), so
a bin the reference left empty gives a large but finite PSI. The usual reading: below 0.1 stable,
from 0.1 a moderate shift worth watching, from 0.25 a significant shift (a retraining candidate).
Fewer than ``MIN_ROWS_FOR_VERDICT`` rows give figures but no verdict: sampling noise alone moves a
PSI by about ``(bins - 1) / rows`` (0.018 for ten bins and 500 rows). So a feature counts in the
verdict at full weight from ``ROWS_PER_EXTRA_BIN`` rows per bin its reference filled beyond the first
(every numeric feature from 500 rows; a category of more than 21 filled bins, a spec file's 50 states,
later); with fewer rows its figure counts scaled by ``rows / rows needed``, so that its noise weighs
about 0.04 whatever its bins. The figures reported are unscaled. Unscaled, a 51-value category drawn
from its own reference measured 0.1 or more in over half of 500-row samples, and 200 values 0.25 or
more in all of them. Scaled (categories of 30 to 1,000 values, 500 and 1,000 rows), none reached 0.25
and at most 0.4 % reached 0.1, while the 51 values' real shift (the ten rarest 20 times as frequent)
stayed significant from 500 rows.

The batch Lambda measures each file; the API measures windows of applications (:class:`DriftWindow`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from lambdas.scoring.bins import bin_index
from lambdas.scoring.card import CategoricalReference, FeatureSchema, ModelCard, NumericReference

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
MIN_ROWS_FOR_VERDICT = 500
# Rows per bin beyond the first a PSI needs to count in the verdict at full weight: its noise, about
# (bins - 1) / rows, is then about 0.04, well below PSI_MODERATE. Numeric references fill at most 11
# bins (deciles or ten values, and missing), so only a category of more than 21 filled bins needs more
# than MIN_ROWS_FOR_VERDICT.
ROWS_PER_EXTRA_BIN = 25
SHARE_FLOOR = 1e-4
# How the runtime feeds a missing category given as text (lambdas.scoring.runtime.NULL_CATEGORY; not
# imported, to keep this module free of onnxruntime).
MISSING_CATEGORY_TEXT = ""
DriftStatus = Literal["stable", "moderate", "significant", "too_few_rows"]


@dataclass(frozen=True)
class DriftSummary:
    rows: int
    feature_psi: dict[str, float]
    score_psi: float
    status: DriftStatus
    most_drifted_feature: str | None

    @property
    def max_feature_psi(self) -> float:
        return max(self.feature_psi.values(), default=0.0)


class _Histogram:
    """Counts per bin of one quantity, with the expected shares from the reference."""

    def __init__(self, expected: list[float]) -> None:
        self.expected = np.asarray(expected, dtype=np.float64)
        self.counts = np.zeros(len(expected), dtype=np.int64)

    @property
    def rows_to_judge(self) -> int:
        """Rows below which this PSI is mostly sampling noise, by the bins the reference filled."""
        filled = int(np.count_nonzero(self.expected > 0))
        return ROWS_PER_EXTRA_BIN * max(filled - 1, 0)

    def psi(self) -> float:
        total = int(self.counts.sum())
        if total == 0:
            return 0.0
        actual = np.maximum(self.counts / total, SHARE_FLOOR)
        expected = np.maximum(self.expected, SHARE_FLOOR)
        return float(np.sum((actual - expected) * np.log(actual / expected)))


class _NumericBins(_Histogram):
    def __init__(self, reference: NumericReference) -> None:
        present = 1.0 - reference.null_rate
        super().__init__([share * present for share in reference.proportions] + [reference.null_rate])
        self._edges = np.asarray(reference.bin_edges, dtype=np.float64)

    def add(self, values: NDArray[np.float64]) -> None:
        missing = np.isnan(values)
        bins = bin_index(self._edges, values[~missing])  # as the reference was binned
        self.counts[: len(self._edges) + 1] += np.bincount(bins, minlength=len(self._edges) + 1)
        self.counts[-1] += int(missing.sum())


class _CategoryBins(_Histogram):
    def __init__(self, reference: CategoricalReference, feature: FeatureSchema) -> None:
        # Every category the model accepts gets a bin, also those the training rows never had.
        names = list(reference.proportions) + [
            c for c in feature.categories or [] if c not in reference.proportions
        ]
        present = 1.0 - reference.null_rate
        # Then a bin for a category neither lists (expected share 0), and the missing bin, last.
        super().__init__(
            [reference.proportions.get(n, 0.0) * present for n in names] + [0.0, reference.null_rate]
        )
        self._index = {name: position for position, name in enumerate(names)}
        self._unseen = len(names)
        self._missing = len(names) + 1
        # A coded input (onnx_type int64) feeds the position in the card's categories, or a negative
        # null code: the bin of each code, with the missing bin last so that code -1 lands in it.
        self._bin_of_code: NDArray[np.intp] | None = None
        if feature.onnx_type == "int64":
            categories = feature.categories or []
            self._bin_of_code = np.asarray(
                [self._index[c] for c in categories] + [self._missing], dtype=np.intp
            )

    def add(self, values: NDArray[Any]) -> None:
        if self._bin_of_code is not None:
            codes = np.asarray(values, dtype=np.int64)
            # Validation lets only the card's categories (codes 0..k-1) and the null code through.
            bins = self._bin_of_code[np.where(codes >= 0, codes, len(self._bin_of_code) - 1)]
            self.counts += np.bincount(bins, minlength=self.counts.size)
            return
        for value, count in Counter(values.tolist()).items():
            # Missing values arrive as the runtime's NULL_CATEGORY; any other text is a category, in the
            # unseen bin when neither the card nor the reference has it (a card without categories).
            if value == MISSING_CATEGORY_TEXT:
                position = self._missing
            else:
                position = self._index.get(value, self._unseen)
            self.counts[position] += count


class DriftMonitor:
    """PSI of one file's scored rows per feature and for the score, from counts kept chunk by chunk."""

    def __init__(self, card: ModelCard) -> None:
        self._features = list(card.features)
        self._numeric: dict[str, _NumericBins] = {}
        self._categories: dict[str, _CategoryBins] = {}
        for feature in self._features:
            reference = card.reference.features.get(feature.name)
            if isinstance(reference, NumericReference):
                self._numeric[feature.name] = _NumericBins(reference)
            elif isinstance(reference, CategoricalReference):
                self._categories[feature.name] = _CategoryBins(reference, feature)
        self._score = _NumericBins(card.reference.score)
        self._rows = 0

    def add(self, feed: Mapping[str, np.ndarray], probability: NDArray[np.float64]) -> None:
        """Count the rows of ``feed`` (valid rows only, as scored) and their probabilities."""
        self._rows += int(probability.shape[0])
        for feature in self._features:
            column = feed[feature.onnx_input].reshape(-1)
            if feature.name in self._numeric:
                self._numeric[feature.name].add(np.asarray(column, dtype=np.float64))
            elif feature.name in self._categories:
                self._categories[feature.name].add(column)
        self._score.add(np.asarray(probability, dtype=np.float64))

    def summary(self) -> DriftSummary:
        histograms: dict[str, _Histogram] = {**self._numeric, **self._categories}
        feature_psi = {
            feature.name: _rounded(histograms[feature.name].psi())
            for feature in self._features
            if feature.name in histograms
        }
        score_psi = _rounded(self._score.psi())
        # What the verdict reads: each figure scaled down where the rows are fewer than its bins need,
        # so that sampling noise weighs about the same in every one (the score's reference fills at
        # most ten bins: never scaled).
        judged = {
            name: psi * min(1.0, self._rows / max(histograms[name].rows_to_judge, 1))
            for name, psi in feature_psi.items()
        }
        most_drifted = max(judged, key=lambda name: judged[name]) if judged else None
        return DriftSummary(
            rows=self._rows,
            feature_psi=feature_psi,
            score_psi=score_psi,
            status=_status(self._rows, max([score_psi, *judged.values()])),
            most_drifted_feature=most_drifted,
        )


def _status(rows: int, worst_psi: float) -> DriftStatus:
    if rows < MIN_ROWS_FOR_VERDICT:
        return "too_few_rows"
    if worst_psi >= PSI_SIGNIFICANT:
        return "significant"
    if worst_psi >= PSI_MODERATE:
        return "moderate"
    return "stable"


def _rounded(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else value


class DriftWindow:
    """The applications one execution environment scores, judged once ``size`` of them are in.

    For the API: each request's feed and probabilities are kept as they are (a list append per
    request); once at least ``size`` applications are in, the window is concatenated, measured with a
    :class:`DriftMonitor` (a few milliseconds, once per window) and emptied. A request is never split:
    the one that fills the window counts whole, so a window holds ``size`` to ``size`` + one request's
    applications - 1.
    """

    def __init__(self, card: ModelCard, size: int) -> None:
        if size < 1:
            raise ValueError(f"a drift window needs at least 1 application, got {size}")
        self._card = card
        self._size = size
        self._feeds: list[Mapping[str, np.ndarray]] = []
        self._probabilities: list[NDArray[np.float64]] = []
        self._rows = 0

    def record(self, feed: Mapping[str, np.ndarray], probability: NDArray[np.float64]) -> DriftSummary | None:
        """Keep one request's scored rows; the window's summary when this request filled it."""
        self._feeds.append(feed)
        self._probabilities.append(probability)
        self._rows += int(probability.shape[0])
        if self._rows < self._size:
            return None
        monitor = DriftMonitor(self._card)
        names = list(self._feeds[0])
        monitor.add(
            {name: np.concatenate([feed[name] for feed in self._feeds]) for name in names},
            np.concatenate(self._probabilities),
        )
        self._feeds, self._probabilities, self._rows = [], [], 0
        return monitor.summary()
