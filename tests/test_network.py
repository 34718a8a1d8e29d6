"""SigmoidNetwork: gradients, a hand-worked step, learning, the sklearn contract, ONNX parity."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from trainer.graph import GraphBuilder, float_input
from trainer.layers import ParameterVector
from trainer.network import (
    ConvergenceWarning,
    NotFittedError,
    SigmoidNetwork,
    _backprop,
)

# Small test sets often end at max_epochs; that warning has its own test below.
pytestmark = pytest.mark.filterwarnings("ignore::trainer.network.ConvergenceWarning")

OUTPUTS = ["binary", "softmax", "sigmoid"]  # binary = two classes, one sigmoid unit
DEPTHS = [(), (5,), (6, 4)]


def blobs(n=120, n_features=4, n_classes=3, seed=0, spread=1.0):
    """Gaussian blobs: a well-separated, standardised-scale problem."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_classes, n_features))
    y = np.arange(n) % n_classes
    X = centres[y] + spread * rng.normal(size=(n, n_features))
    return X, y


def problem(output, n=60, seed=0):
    n_classes = 2 if output == "binary" else 3
    X, y = blobs(n=n, n_classes=n_classes, seed=seed)
    return X, y, ("softmax" if output == "binary" else output)


# ---------------------------------------------------------------------- gradients


def reference_objective(coefs, intercepts, X, Y, w, l2, head):
    """The objective written out independently of trainer.layers (plain numpy, float64)."""
    a = X
    for W, b in zip(coefs[:-1], intercepts[:-1], strict=True):
        a = 1.0 / (1.0 + np.exp(-(a @ W + b)))
    z = a @ coefs[-1] + intercepts[-1]
    if head == "softmax":
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        per_row = -(Y * logp).sum(axis=1)
    else:
        p = 1.0 / (1.0 + np.exp(-z))
        per_row = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(axis=1)
    data = per_row @ w
    return data + 0.5 * l2 * sum((W**2).sum() for W in coefs)


@pytest.mark.parametrize("depth", DEPTHS, ids=str)
@pytest.mark.parametrize("output", OUTPUTS)
def test_gradient_matches_finite_differences(output, depth):
    X, y, out = problem(output, n=30)
    net = SigmoidNetwork(hidden_layers=depth, output=out, dtype="float64", random_state=1)
    net.partial_fit(X, y)  # initialises classes_, the layers and the parameter vector
    pv = net._pv
    rng = np.random.default_rng(2)
    pv.params[:] = rng.normal(scale=0.7, size=pv.params.size)  # away from a minimum
    Y = net._targets(y)
    w = rng.uniform(0.5, 2.0, size=len(y))
    w /= w.sum()
    l2 = 0.3
    head = net._head()

    layers = net._layers()
    d_weights, d_biases = pv.views(pv.grads)
    for i, layer in enumerate(layers):
        layer.dW, layer.db = d_weights[i], d_biases[i]
        layer.allocate(len(X), np.float64, need_input_grad=i > 0)
    k = Y.shape[1]
    loss = _backprop(layers, head, X, Y, w, np.empty((len(X), k)), np.empty((len(X), k)), pv, l2)
    analytic = pv.grads.copy()

    def objective(theta):
        c, b = ParameterVector(pv.shapes, np.float64).views(theta)
        return reference_objective(c, b, X, Y, w, l2, head.name)

    theta = pv.params.copy()
    n_w = pv.n_weights
    assert loss + 0.5 * l2 * theta[:n_w] @ theta[:n_w] == pytest.approx(objective(theta), 1e-10)
    eps = 1e-6
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        numeric[i] = (objective(theta + step) - objective(theta - step)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------- one training step


def test_one_hand_worked_sgd_step():
    # Logistic regression, one feature, two samples, plain SGD with learning rate 0.5.
    # Start: w = 0.5, b = 0.   x = [1, -2], y = [1, 0]
    # z = [0.5, -1.0];  p = sigmoid(z) = [0.6224593, 0.2689414]
    # dL/dz = (p - y) / 2 = [-0.1887703, 0.1344707]
    # dL/dw = 1 * -0.1887703 + (-2) * 0.1344707 = -0.4577117;  dL/db = -0.0542996
    # w' = 0.5 - 0.5 * -0.4577117 = 0.7288559;  b' = 0 - 0.5 * -0.0542996 = 0.0271498
    X = np.array([[1.0], [-2.0]])
    y = np.array([1, 0])
    net = SigmoidNetwork(hidden_layers=(), solver="sgd", momentum=0.0, learning_rate=0.5,
                         alpha=0.0, dtype="float64", random_state=0)
    net.partial_fit(X, y)
    net.coefs_ = [np.array([[0.5]])]
    net.intercepts_ = [np.array([0.0])]
    net.partial_fit(X, y)
    assert net.coefs_[0][0, 0] == pytest.approx(0.7288559, abs=1e-7)
    assert net.intercepts_[0][0] == pytest.approx(0.0271498, abs=1e-7)
    # loss before the step: mean(-log 0.6224593, -log(1 - 0.2689414)) = mean(0.4740770, 0.3132617)
    assert net.loss_curve_[-1] == pytest.approx(0.3936693, abs=1e-7)


# ---------------------------------------------------------------------- learning


def xor(n_per_corner=50, seed=0):
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    X = np.repeat(corners, n_per_corner, axis=0) + 0.1 * rng.normal(size=(4 * n_per_corner, 2))
    y = np.repeat([0, 1, 1, 0], n_per_corner)
    return X - 0.5, y


def test_xor_needs_and_learns_a_hidden_layer():
    X, y = xor()
    linear = SigmoidNetwork(hidden_layers=(), random_state=0).fit(X, y)
    hidden = SigmoidNetwork(hidden_layers=(8,), learning_rate=0.05, random_state=0).fit(X, y)
    assert linear.score(X, y) < 0.8
    assert hidden.score(X, y) == 1.0
    corners = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    assert hidden.predict(corners).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_regression_agrees_with_sklearn(n_classes):
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(n=300, n_features=4, n_classes=n_classes, seed=3, spread=2.0)
    C = 1.0
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X, y)
    net = SigmoidNetwork(hidden_layers=(), alpha=1.0 / C, dtype="float64", batch_size=300,
                         learning_rate=0.05, max_epochs=3000, tol=0.0, n_iter_no_change=50,
                         early_stopping=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(X, y)
    np.testing.assert_allclose(net.predict_proba(X), ref.predict_proba(X), atol=2e-4)
    if n_classes == 2:
        np.testing.assert_allclose(net.coefs_[0][:, 0], ref.coef_[0], rtol=1e-3)
    assert (net.predict(X) == ref.predict(X)).all()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_lbfgs_reaches_sklearns_logistic_regression(n_classes):
    """The full-batch solver minimises the same objective (alpha = 1/C) to its optimum, in
    far fewer steps than the stochastic solvers need (3000 epochs above)."""
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(n=300, n_features=4, n_classes=n_classes, seed=3, spread=2.0)
    ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(X, y)
    net = SigmoidNetwork(hidden_layers=(), alpha=2.0, solver="lbfgs", dtype="float64",
                         tol=1e-12, max_epochs=200, random_state=0).fit(X, y)
    np.testing.assert_allclose(net.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    assert net.n_iter_ < 100
    assert net.n_iter_ == len(net.loss_curve_)
    assert all(b <= a for a, b in zip(net.loss_curve_, net.loss_curve_[1:], strict=False))


def test_lbfgs_minimises_a_known_function():
    """Pure logic: the Rosenbrock valley, whose minimum is at (1, 1)."""
    from trainer.optimizers import lbfgs

    def rosenbrock(v):
        x, y = v
        f = (1 - x) ** 2 + 100 * (y - x * x) ** 2
        return f, np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])

    start = np.array([-1.2, 1.0])
    x, values, converged = lbfgs(rosenbrock, start, max_iter=500, tol=1e-10)
    assert converged
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-4)
    assert values[-1] < 1e-8
    np.testing.assert_array_equal(start, [-1.2, 1.0])  # the start is not modified
    _, _, stopped = lbfgs(rosenbrock, start, max_iter=3, tol=1e-10)
    assert not stopped


def test_lbfgs_names_what_it_cannot_do():
    X, y = blobs(n=60, seed=2)
    net = SigmoidNetwork(hidden_layers=(4,), solver="lbfgs", max_epochs=2, random_state=0)
    with pytest.warns(ConvergenceWarning, match="L-BFGS iterations"):
        net.fit(X, y)
    with pytest.raises(ValueError, match="partial_fit needs a stochastic solver"):
        net.partial_fit(X, y)
    # A hidden layer trains too (a local minimum, as with any solver).
    deep = SigmoidNetwork(hidden_layers=(8,), solver="lbfgs", random_state=0).fit(X, y)
    assert deep.score(X, y) > 0.9


def test_same_seed_same_model_other_seed_other_model():
    X, y = blobs(n=400, seed=1)
    nets = [SigmoidNetwork(hidden_layers=(8,), random_state=s).fit(X, y) for s in (7, 7, 8)]
    for a, b in zip(nets[0].coefs_ + nets[0].intercepts_, nets[1].coefs_ + nets[1].intercepts_,
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert nets[0].loss_curve_ == nets[1].loss_curve_
    assert not np.array_equal(nets[0].coefs_[0], nets[2].coefs_[0])


@pytest.mark.parametrize("depth", DEPTHS, ids=str)
@pytest.mark.parametrize("output", OUTPUTS)
def test_learns_blobs_with_every_output_and_depth(output, depth):
    X, y, out = problem(output, n=300, seed=4)
    net = SigmoidNetwork(hidden_layers=depth, output=out, random_state=0).fit(X, y)
    assert net.score(X, y) > 0.9
    proba = net.predict_proba(X)
    assert proba.shape == (len(X), len(net.classes_)) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert net.loss_curve_[-1] < net.loss_curve_[0]
    assert net.n_iter_ == len(net.loss_curve_)
    dec = net.decision_function(X)
    assert dec.shape == ((len(X),) if output == "binary" else (len(X), 3))


def test_early_stopping_keeps_the_best_validation_weights():
    X, y = blobs(n=3000, n_features=6, n_classes=4, seed=5, spread=2.5)
    net = SigmoidNetwork(hidden_layers=(16,), random_state=0).fit(X, y)  # auto: >= 2000 rows
    assert len(net.validation_scores_) == net.n_iter_ > 0
    assert net.best_validation_score_ == max(net.validation_scores_)
    off = SigmoidNetwork(hidden_layers=(16,), early_stopping=False, random_state=0).fit(X, y)
    assert off.validation_scores_ == [] and off.best_validation_score_ is None


@pytest.mark.parametrize(
    "labels",
    [np.array(["walk", "run", "sit"]), np.array([3, -1, 10]), np.array([True, False])],
    ids=["str", "int", "bool"],
)
def test_labels_of_any_type(labels):
    X, y = blobs(n=150, n_classes=len(labels), seed=6)
    y = labels[y]
    net = SigmoidNetwork(random_state=0).fit(X, y)
    assert net.classes_.tolist() == sorted(labels.tolist())
    pred = net.predict(X)
    assert pred.dtype == labels.dtype
    assert (pred == y).mean() > 0.9


# ---------------------------------------------------------------------- weights


def full_batch(**kw):
    return SigmoidNetwork(hidden_layers=(4,), dtype="float64", batch_size=10_000,
                          early_stopping=False, max_epochs=30, random_state=0, **kw)


def fit_quietly(net, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return net.fit(*args, **kw)


def test_zero_and_integer_sample_weights_equal_dropping_and_repeating_rows():
    X, y = blobs(n=90, seed=7)
    w = np.random.default_rng(0).integers(0, 3, size=90).astype(float)  # 0, 1 or 2 per row
    weighted = fit_quietly(full_batch(), X, y, sample_weight=w)
    keep = np.repeat(np.arange(90), w.astype(int))
    repeated = fit_quietly(full_batch(), X[keep], y[keep])
    np.testing.assert_allclose(weighted.coefs_[0], repeated.coefs_[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)


def test_balanced_class_weight_is_sample_weight_and_helps_the_minority():
    X, y = blobs(n=400, n_classes=2, seed=8, spread=3.0)
    keep = (y == 0) | (np.arange(len(y)) % 8 == 1)  # class 1 keeps 1 in 4
    X, y = X[keep], y[keep]
    balanced = fit_quietly(full_batch(class_weight="balanced"), X, y)
    counts = np.bincount(y)
    explicit = fit_quietly(full_batch(), X, y, sample_weight=len(y) / (2 * counts[y]))
    np.testing.assert_allclose(balanced.coefs_[0], explicit.coefs_[0], rtol=1e-9, atol=1e-12)
    plain = fit_quietly(full_batch(), X, y)
    recall = [(m.predict(X[y == 1]) == 1).mean() for m in (plain, balanced)]
    assert recall[1] > recall[0]


# ---------------------------------------------------------------------- partial_fit


def test_partial_fit_streams_and_continues_a_fitted_model():
    X, y = blobs(n=600, seed=9)
    labels = np.array(["a", "b", "c"])[y]
    net = SigmoidNetwork(hidden_layers=(8,), random_state=0)
    for epoch in range(20):
        for chunk in range(0, 600, 150):
            net.partial_fit(X[chunk:chunk + 150], labels[chunk:chunk + 150],
                            classes=["c", "b", "a"] if epoch == chunk == 0 else None)
    assert net.n_iter_ == 80
    assert net.score(X, labels) > 0.9

    fitted = SigmoidNetwork(hidden_layers=(8,), random_state=0).fit(X[:300], labels[:300])
    before = fitted.coefs_[0].copy()
    n_iter = fitted.n_iter_
    fitted.partial_fit(X[300:], labels[300:])
    assert fitted.n_iter_ == n_iter + 1
    assert not np.array_equal(before, fitted.coefs_[0])
    with pytest.raises(ValueError, match=r"label\(s\) \['z'\] not in classes_"):
        fitted.partial_fit(X[:2], np.array(["a", "z"]))


def test_pickle_round_trip_predicts_the_same_and_keeps_training():
    X, y = blobs(n=200, seed=10)
    net = SigmoidNetwork(random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(copy.predict_proba(X), net.predict_proba(X))
    copy.partial_fit(X, y)
    assert np.shares_memory(copy.coefs_[0], copy._pv.params)
    assert not np.array_equal(copy.coefs_[0], net.coefs_[0])


# ---------------------------------------------------------------------- errors


def fitted_net():
    X, y = blobs(n=60, seed=11)
    return SigmoidNetwork(hidden_layers=(3,), max_epochs=5, random_state=0), X, y


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 6, np.nan, X), y),
         r"1 NaN or infinite value\(s\), first X\[1, 2\] = nan; impute or drop"),
        (lambda X, y: (np.where(X > 2.5, np.inf, X), y), r"NaN or infinite value\(s\)"),
        (lambda X, y: (X[:0], y[:0]), r"X has no samples"),
        (lambda X, y: (X, np.zeros_like(y)), r"single class 0; a classifier needs at least two"),
        (lambda X, y: (X[:, 0], y), r"X must be 2-D .* Reshape your data: X.reshape\(-1, 1\)"),
        (lambda X, y: (X, y[:-1]), r"X has 60 rows but y has 59 labels"),
        (lambda X, y: (X.astype(str), y), r"X must hold numbers"),
        (lambda X, y: (X[:, :0], y), r"X has 0 feature\(s\) \(shape=\(60, 0\)\)"),
        (lambda X, y: (X, y + 0.5), r"Unknown label type: continuous values in y"),
        (lambda X, y: (X, None), r"requires y to be passed, but the target y is None"),
        (lambda X, y: (X + 1j, y), r"Complex data not supported"),
    ],
    ids=["nan", "inf", "empty", "single-class", "1d", "lengths", "strings", "no-features",
         "continuous-y", "no-y", "complex"],
)
def test_bad_training_data_is_named(mutate, message):
    net, X, y = fitted_net()
    with pytest.raises(ValueError, match=message):
        net.fit(*mutate(X, y))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hidden_layers": 8}, r"write hidden_layers=\(8,\) for one layer"),
        ({"hidden_layers": (8, 0)}, r"hidden_layers must hold positive ints"),
        ({"output": "relu"}, r"output must be one of \['sigmoid', 'softmax'\], got 'relu'"),
        ({"solver": "newton"}, r"solver must be one of"),
        ({"solver": "lbfgs", "early_stopping": True}, r"early_stopping=True needs a stochastic"),
        ({"learning_rate": 0}, r"learning_rate must be a positive number, got 0"),
        ({"batch_size": 0}, r"batch_size must be a positive int"),
        ({"early_stopping": "yes"}, r"early_stopping must be True, False or 'auto'"),
        ({"class_weight": "equal"}, r"class_weight must be None, 'balanced' or a dict"),
        ({"dtype": "int8"}, r"dtype must be 'float32' or 'float64'"),
    ],
)
def test_bad_parameters_are_named(params, message):
    net, X, y = fitted_net()
    with pytest.raises(ValueError, match=message):
        net.set_params(**params).fit(X, y)


def test_errors_at_prediction_time():
    net, X, y = fitted_net()
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(X, y\)"):
        net.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features, but \w+ is expecting 4 features"):
        net.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        net.predict_proba(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match=r"invalid parameter 'hidden' for SigmoidNetwork"):
        net.set_params(hidden=(3,))


def test_other_input_forms():
    net, X, y = fitted_net()
    as_objects = net.fit(X.astype(object), y).predict_proba(X)  # numbers in an object array
    np.testing.assert_array_equal(as_objects, net.fit(X, y).predict_proba(X))
    with pytest.raises(ValueError, match=r"sums to zero; give some rows a weight > 0"):
        net.fit(X, y, sample_weight=np.zeros(len(y)))
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"sparse input is not supported; .*X.toarray\(\)"):
        net.fit(sparse.csr_matrix(X), y)


def test_progress_bar_on_a_terminal(monkeypatch, capsys):
    X, y = blobs(n=3000, seed=17)  # >= 2000 rows: a validation split, so "val" shows
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    SigmoidNetwork(hidden_layers=(4,), max_epochs=3, verbose=True, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert "SigmoidNetwork" in err and "loss=" in err and "val=" in err


def test_early_stopping_without_room_for_a_split_is_explained():
    X, y = blobs(n=6, n_classes=3, seed=12)
    with pytest.raises(ValueError, match=r"early_stopping=True needs a validation split"):
        SigmoidNetwork(early_stopping=True, validation_fraction=0.1).fit(X, y)


def test_non_convergence_is_a_warning_and_the_model_still_works(capsys):
    X, y = blobs(n=200, seed=13)
    with pytest.warns(ConvergenceWarning, match=r"reached max_epochs=2 before the training"):
        net = SigmoidNetwork(max_epochs=2, verbose=True, random_state=0).fit(X, y)
    assert net.n_iter_ == 2 and net.predict(X).shape == (200,)
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal


def test_divergence_is_an_error_that_says_what_to_do():
    X, y = blobs(n=200, seed=14)
    with pytest.raises(FloatingPointError, match=r"lower learning_rate or standardise"):
        SigmoidNetwork(solver="sgd", learning_rate=1e30, random_state=0).fit(X * 1e30, y)


# ---------------------------------------------------------------------- scikit-learn


def test_clone_and_grid_search():
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import GridSearchCV, cross_val_score

    X, y = blobs(n=240, seed=15)
    net = SigmoidNetwork(hidden_layers=(4,), learning_rate=0.02, random_state=0)
    twin = clone(net)
    assert twin is not net and twin.get_params() == net.get_params()
    assert is_classifier(net)
    assert "learning_rate=0.02" in repr(net) and "solver" not in repr(net)
    search = GridSearchCV(net, {"hidden_layers": [(), (4,)], "alpha": [1e-4, 1.0]}, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == {"hidden_layers", "alpha"}
    assert search.best_score_ > 0.85
    scores = cross_val_score(SigmoidNetwork(random_state=0), X, np.array(["u", "v", "w"])[y], cv=3)
    assert scores.min() > 0.85


# ---------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("depth", DEPTHS, ids=str)
@pytest.mark.parametrize("output", OUTPUTS)
def test_onnx_matches_predict_proba(output, depth):
    X, y, out = problem(output, n=120, seed=16)
    net = SigmoidNetwork(hidden_layers=depth, output=out, random_state=0).fit(X, y)
    g = GraphBuilder("network")
    probs = net.to_onnx(g, "features")
    g.rename(probs, "probabilities")
    k = len(net.classes_)
    model = g.model([float_input("features", [None, 4])], [float_input("probabilities", [None, k])])
    names = [n.name for n in model.graph.node]
    if depth:
        assert names[:3] == ["dense_0_matmul", "dense_0_add", "dense_0_sigmoid"]
    assert {"output_matmul", "output_add"} <= set(names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": X.astype(np.float32)})[0]
    np.testing.assert_allclose(got, net.predict_proba(X), atol=1e-5)



def test_wide_input_converges_after_an_overshoot():
    """800 inputs, 50 rows: Adam's first steps overshoot a minimum they pass; training must
    resume from the best weights at the learning-rate drop, not stop far above them (the
    old monitor stopped at epoch 45 with 5x the converged objective)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 800)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    net = SigmoidNetwork(hidden_layers=(), alpha=1.0, tol=1e-6, n_iter_no_change=20,
                         max_epochs=500, random_state=0).fit(X, y)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(X, y)

    def objective(proba, weights):  # the objective both minimise: alpha = 1/C = 1
        truth = proba[np.arange(len(y)), np.searchsorted(ref.classes_, y)]
        return -np.log(truth).mean() + 0.5 / len(y) * float((weights ** 2).sum())

    best = objective(ref.predict_proba(X), ref.coef_)
    assert objective(net.predict_proba(X), net.coefs_[0]) < 1.3 * best
