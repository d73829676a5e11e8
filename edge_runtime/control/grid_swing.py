"""The grid-swing figure: largest change of the 100 ms mean power within any 1 s interval.

Spec Table 1 monitors power over 100 ms and calls a change of more than 50 MW within less
than 1 s grid-destabilizing (clause 3). The figure is measured the strict way, so that no
placement of the intervals can hide a swing:

- m(t_k) is the trailing mean over `mean_s` ending at sample k (every sample, not fixed
  100 ms blocks);
- the swing at k is max - min of m over every sample in the `window_s` ending at k, both ends
  included (two means exactly `window_s` apart count);
- the figure is the largest swing over the whole record.

Consecutive, non-overlapping 1 s windows can miss a change that straddles their boundary;
this cannot. Sans-IO and pure: the samples are evenly spaced `dt` apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


def trailing_means(samples: Sequence[float], n: int) -> list[float]:
    """Mean of the n samples ending at each sample, from the first full n on."""
    if n < 1:
        raise ValueError(f"mean length must be >= 1 sample, got {n}")
    out: list[float] = []
    total = 0.0
    for k, x in enumerate(samples):
        total += x
        if k >= n:
            total -= samples[k - n]
        if k >= n - 1:
            out.append(total / n)
    return out


def window_spans(samples: Sequence[float], dt: float, *, mean_s: float = 0.1,
                 window_s: float = 1.0) -> list[float]:
    """Swing (max - min of the trailing means within window_s) ending at each mean.

    Entry j belongs to sample j + n - 1 (n = mean_s / dt samples). The first window_s of
    means have shorter windows (only what exists so far).
    """
    if not dt > 0.0:
        raise ValueError(f"dt must be > 0, got {dt!r}")
    n = round(mean_s / dt)
    lag = round(window_s / dt)  # means up to this many samples apart share a window
    if n < 1 or lag < 1:
        raise ValueError(f"mean_s ({mean_s!r}) and window_s ({window_s!r}) must be >= dt")
    means = trailing_means(samples, n)
    hi: deque[int] = deque()  # indices of decreasing maxima / increasing minima
    lo: deque[int] = deque()
    spans: list[float] = []
    for j, m in enumerate(means):
        while hi and means[hi[-1]] <= m:
            hi.pop()
        hi.append(j)
        while lo and means[lo[-1]] >= m:
            lo.pop()
        lo.append(j)
        while hi[0] < j - lag:
            hi.popleft()
        while lo[0] < j - lag:
            lo.popleft()
        spans.append(means[hi[0]] - means[lo[0]])
    return spans


def max_swing(samples: Sequence[float], dt: float, *, mean_s: float = 0.1,
              window_s: float = 1.0) -> float:
    """Largest change of the mean_s mean within any window_s interval (0 if too short)."""
    return max(window_spans(samples, dt, mean_s=mean_s, window_s=window_s), default=0.0)
