"""k-means: seeded, finds obvious clusters, agrees with scikit-learn, and its ONNX twin
computes the same distances, clusters and soft assignments as numpy."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from trainer.graph import GraphBuilder, float_input
from trainer.kmeans import KMeans


def blobs(n=300, d=4, k=3, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    y = rng.integers(k, size=n)
    return centers[y] + rng.normal(0, spread, (n, d)), y, centers


def test_finds_well_separated_clusters():
    X, y, centers = blobs()
    km = KMeans(n_clusters=3, random_state=0).fit(X)
    # Every true cluster maps to exactly one found cluster.
    pairs = set(zip(y.tolist(), km.labels_.tolist(), strict=True))
    assert len(pairs) == 3
    found = km.cluster_centers_[np.argsort(km.cluster_centers_[:, 0])]
    np.testing.assert_allclose(found, centers[np.argsort(centers[:, 0])], atol=0.1)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    assert km.variance_ == pytest.approx(0.3**2, rel=0.2)


def test_inertia_matches_scikit_learn():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    X, _, _ = blobs(n=500, d=6, k=5, spread=1.5, seed=2)
    ours = KMeans(n_clusters=5, n_init=4, random_state=0).fit(X)
    ref = sklearn_cluster.KMeans(n_clusters=5, n_init=4, random_state=0).fit(X)
    assert ours.inertia_ <= ref.inertia_ * 1.01


def test_same_seed_same_centroids():
    X, _, _ = blobs(spread=2.0)
    a = KMeans(n_clusters=4, random_state=3).fit(X).cluster_centers_
    b = KMeans(n_clusters=4, random_state=3).fit(X).cluster_centers_
    np.testing.assert_array_equal(a, b)


def test_more_clusters_than_distinct_points_still_gives_k_centroids():
    X = np.repeat(np.eye(2), 5, axis=0)
    km = KMeans(n_clusters=3, random_state=0).fit(X)
    assert km.cluster_centers_.shape == (3, 2)
    assert km.score_samples(X).max() == pytest.approx(0.0, abs=1e-9)


def run_graph(km: KMeans, X: np.ndarray) -> dict[str, np.ndarray]:
    g = GraphBuilder("kmeans_test")
    names = km.to_onnx(g, "x")
    outputs = [g.rename(names["distance"], "distance"), g.rename(names["cluster"], "cluster"),
               g.rename(names["proba"], "proba")]
    from onnx import TensorProto, helper
    model = g.model(
        [float_input("x", ["batch", X.shape[1]])],
        [float_input("distance", ["batch"]),
         helper.make_tensor_value_info("cluster", TensorProto.INT64, ["batch"]),
         float_input("proba", ["batch", km.n_clusters])],
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(outputs, {"x": X.astype(np.float32)})
    return dict(zip(["distance", "cluster", "proba"], values, strict=True))


@pytest.mark.parametrize("seed", [0, 1])
def test_graph_matches_numpy(seed):
    X, _, _ = blobs(n=400, d=12, k=4, spread=1.0, seed=seed)
    km = KMeans(n_clusters=4, random_state=seed).fit(X[:300])
    # held-out points plus far-away outliers, the windows an anomaly detector must score
    test = np.vstack([X[300:], X[300:310] + 25.0])
    got = run_graph(km, test)
    assert got["distance"].shape == (len(test),) and got["distance"].dtype == np.float32
    np.testing.assert_allclose(got["distance"], km.score_samples(test), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["cluster"], km.predict(test))
    np.testing.assert_allclose(got["proba"], km.predict_proba(test), atol=1e-5)
    np.testing.assert_allclose(got["proba"].sum(axis=1), 1.0, atol=1e-6)


def test_graph_is_batch_independent():
    X, _, _ = blobs(n=100, d=5)
    km = KMeans(n_clusters=3).fit(X)
    whole = run_graph(km, X[:16])["distance"]
    one = np.concatenate([run_graph(km, X[i : i + 1])["distance"] for i in range(16)])
    # float ops may vectorise differently per batch size: equal to the last bits, not bitwise
    np.testing.assert_allclose(whole, one, rtol=1e-6)


@pytest.mark.parametrize(
    ("X", "kwargs", "message"),
    [
        (np.zeros((2, 3)), {"n_clusters": 5}, "at least n_clusters=5 samples"),
        (np.array([[1.0, np.inf]] * 4), {"n_clusters": 2}, "NaN or infinity"),
        (np.zeros(4), {"n_clusters": 2}, "2-D"),
        (np.zeros((4, 2)), {"n_clusters": 0}, "positive integer"),
    ],
)
def test_bad_input_is_named(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        KMeans(**kwargs).fit(X)


def test_wrong_width_and_unfitted_are_named():
    with pytest.raises(RuntimeError, match="not fitted"):
        KMeans().predict(np.zeros((1, 2)))
    km = KMeans(n_clusters=2).fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="2 features but KMeans was fitted with 3"):
        km.score_samples(np.zeros((1, 2)))
