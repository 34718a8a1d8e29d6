"""Injected faults: seeded, shaped like the normal data, and each visibly what it claims."""

from __future__ import annotations

import numpy as np
import pytest

from edge.tools import synthetic


def test_fault_windows_are_seeded_and_labelled():
    X1, f1 = synthetic.make_fault_windows(4, window=48, channels=2, seed=3)
    X2, f2 = synthetic.make_fault_windows(4, window=48, channels=2, seed=3)
    assert X1.shape == (16, 48, 2) and X1.dtype == np.float32
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(f1, f2)
    assert sorted(set(f1)) == sorted(synthetic.FAULTS)


def normal(n=200, window=64):
    X, _ = synthetic.make_windows(n, window=window, labels=("normal",), seed=11)
    return X


def faults(kind, n=200, **kw):
    X, _ = synthetic.make_fault_windows(n, faults=(kind,), seed=12, **kw)
    return X


def test_spikes_raise_the_peak():
    peak = lambda X: np.abs(X).max(axis=(1, 2))  # noqa: E731
    assert np.median(peak(faults("spike"))) > 2.0 * np.median(peak(normal()))


def test_drift_moves_the_mean_of_one_axis():
    offset = lambda X: np.abs(X.mean(axis=1)).max(axis=1)  # noqa: E731
    assert np.median(offset(faults("drift"))) > 5 * np.median(offset(normal()))


def test_stuck_axis_stops_moving():
    X = faults("stuck")
    # the last three quarters of one axis never change
    still = (np.diff(X[:, 16:], axis=1) == 0).all(axis=1).any(axis=1)
    assert still.all()
    assert not (np.diff(normal()[:, 16:], axis=1) == 0).all(axis=1).any()


def dominant_hz(X):
    spectrum = np.abs(np.fft.rfft(X[..., 0] - X[..., 0].mean(axis=1, keepdims=True), n=1024))
    return np.fft.rfftfreq(1024, 1 / synthetic.SAMPLE_RATE_HZ)[spectrum.argmax(axis=1)]


def test_frequency_fault_changes_the_speed():
    # long, quiet windows so the 1x peak stands out of the noise
    f_normal = dominant_hz(normal(50, window=400))
    X, _ = synthetic.make_fault_windows(50, faults=("frequency",), window=400, noise=0.05, seed=1)
    f_fault = dominant_hz(X)
    assert np.all((f_normal > 4.3) & (f_normal < 5.7))
    # normal runs at 4.5 to 5.5 Hz; 1.5x to 2x faster or slower leaves that band clearly
    assert np.all((f_fault > 6.5) | (f_fault < 3.8)), f_fault
    assert (f_fault > 6.5).any() and (f_fault < 3.8).any()


def test_fault_starts_where_asked():
    rng = np.random.default_rng(0)
    x = synthetic.faulty_signal("stuck", 300, rng, start=120)
    ref = synthetic.signal("normal", 300, np.random.default_rng(0))
    np.testing.assert_array_equal(x[:120], ref[:120])
    assert (np.diff(x[120:], axis=0) == 0).all(axis=0).any()


def test_severity_scales_the_fault():
    small = faults("drift", severity=0.25)
    big = faults("drift", severity=2.0)
    assert np.abs(big.mean(axis=1)).max(axis=1).mean() > 4 * np.abs(small.mean(axis=1)).max(
        axis=1).mean()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("melt", 10), "unknown fault 'melt'"),
        (("spike", 10, ), None),
    ],
)
def test_unknown_fault_is_named(args, message):
    rng = np.random.default_rng(0)
    if message is None:
        assert synthetic.faulty_signal(*args, rng).shape == (10, 3)
    else:
        with pytest.raises(ValueError, match=message):
            synthetic.faulty_signal(*args, rng)


def test_bad_start_and_severity_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="start must be in"):
        synthetic.faulty_signal("spike", 10, rng, start=10)
    with pytest.raises(ValueError, match="severity must be > 0"):
        synthetic.faulty_signal("spike", 10, rng, severity=0)
