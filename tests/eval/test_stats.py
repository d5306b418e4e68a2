"""cwarp.eval.stats against scipy (where installed) and against brute force."""
import itertools

import numpy as np
import pytest

from cwarp.eval import stats


@pytest.fixture(scope="module")
def st():
    return stats


GAPS = [12.4, 4.8, 0.8, -1.5, 6.0, 3.3, -0.7, 9.9]


def test_paired_t_against_scipy(st):
    stats = pytest.importorskip("scipy.stats")
    for diffs in (GAPS, [0.5, -0.2, 0.1], [3.0, 2.0, 4.0, 5.5, 1.0]):
        t, df, p = st.paired_t(diffs)
        ref = stats.ttest_1samp(diffs, 0.0)
        assert df == len(diffs) - 1
        assert t == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-9)


def test_t_tail_at_known_quantiles(st):
    # Student's t quantiles: 2.365 is the two-sided 5 % point at 7 degrees of freedom, 1.96 the normal one.
    assert 2 * st.t_sf(2.3646, 7) == pytest.approx(0.05, abs=2e-5)
    assert 2 * st.t_sf(1.96, 100000) == pytest.approx(0.05, abs=1e-4)
    assert st.t_sf(0.0, 5) == pytest.approx(0.5) and st.t_sf(-1.0, 3) == pytest.approx(1 - st.t_sf(1.0, 3))


def test_wilcoxon_exact_against_brute_force_and_scipy(st):
    for diffs in (GAPS, [1.0, 1.0, -2.0, 3.0], [2.0, 4.0, 1.0, 3.0, 5.0]):
        w, p, method = st.wilcoxon(diffs)
        d = np.array([x for x in diffs if x != 0])
        ranks = st._ranks(np.abs(d))
        total = ranks.sum()
        patterns = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
        expect = np.mean([abs(x - total / 2) >= abs(w - total / 2) - 1e-9 for x in patterns])
        assert method == "exact" and w == ranks[d > 0].sum() and p == pytest.approx(expect)
    stats = pytest.importorskip("scipy.stats")
    ref = stats.wilcoxon(GAPS, method="exact")
    assert st.wilcoxon(GAPS)[1] == pytest.approx(ref.pvalue)
    # All eight ahead: the smallest p eight pairs allow.
    assert st.wilcoxon([1, 2, 3, 4, 5, 6, 7, 8])[1] == pytest.approx(2 / 2 ** 8)


def test_wilcoxon_normal_approximation_beyond_the_exact_range(st):
    stats = pytest.importorskip("scipy.stats")
    diffs = list(np.random.default_rng(0).normal(0.4, 1.0, st.EXACT_MAX + 5))
    w, p, method = st.wilcoxon(diffs)
    ref = stats.wilcoxon(diffs, method="approx", correction=False)
    assert method == "normal" and p == pytest.approx(ref.pvalue, rel=1e-6)


def test_mcnemar(st):
    a = [True] * 30 + [False] * 10 + [True] * 50
    b = [False] * 30 + [True] * 10 + [True] * 50
    only_a, only_b, p = st.mcnemar(a, b)
    assert (only_a, only_b) == (30, 10)
    stats = pytest.importorskip("scipy.stats")
    assert p == pytest.approx(stats.binomtest(10, 40, 0.5).pvalue)
    assert st.mcnemar([True, False], [True, False])[2] == 1.0
    with pytest.raises(ValueError, match="equal 1-d"):
        st.mcnemar([True], [True, False])


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_values(st):
    lo, hi = st.bootstrap_ci(GAPS)
    assert lo < np.mean(GAPS) < hi
    assert st.bootstrap_ci(GAPS) == (lo, hi)                 # a fixed seed: the same interval
    wide = hi - lo
    lo2, hi2 = st.bootstrap_ci(GAPS * 4)
    assert hi2 - lo2 < wide
    assert st.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_paired_bootstrap_of_an_accuracy_difference(st):
    rng = np.random.default_rng(1)
    a = rng.random(1400) < 0.25
    b = rng.random(1400) < 0.18
    lo, hi = st.paired_bootstrap_ci(a, b)
    diff = a.mean() - b.mean()
    assert lo < diff < hi and 0.01 < hi - lo < 0.1
    # The same classifier against itself: no difference, whatever the faces.
    assert st.paired_bootstrap_ci(a, a) == (0.0, 0.0)
    with pytest.raises(ValueError, match="equal non-empty 1-d"):
        st.paired_bootstrap_ci(a, b[:-1])
