"""k-means on feature vectors, in numpy for training and as ONNX ops for the graph.

Used twice: as an anomaly detector (the score of a window is its distance to the nearest
centroid, like Edge Impulse's anomaly block) and for ``sigmoid-train cluster`` (the
nearest centroid is the cluster, and soft assignments give a probability per cluster).

Soft assignments are the posterior of an isotropic Gaussian mixture with equal weights
and one shared variance: ``p_k = softmax(-d_k^2 / (2 s^2))`` with ``s^2`` the mean
within-cluster variance per feature, learned in :meth:`KMeans.fit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.graph import GraphBuilder


class KMeans:
    """Lloyd's k-means with k-means++ seeding and several restarts.

    Parameters
    ----------
    n_clusters : int
        Number of centroids.
    n_init : int
        Restarts from different k-means++ seeds; the lowest inertia wins.
    max_iter : int
        Lloyd iterations per restart at most.
    tol : float
        Stop a restart when no centroid moved more than ``tol`` times the mean feature
        variance (squared distance), as scikit-learn does.
    random_state : int or None
        Seed; the same seed and data give the same centroids.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of int64, shape (n_samples,)
        Cluster of each training sample.
    inertia_ : float
        Sum of squared distances of the training samples to their centroid.
    variance_ : float
        Mean within-cluster variance per feature (``inertia_ / (n * d)``), the width of
        the soft assignments.
    n_iter_ : int
        Lloyd iterations of the winning restart.
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        n_clusters: int = 8,
        n_init: int = 4,
        max_iter: int = 100,
        tol: float = 1e-4,
        random_state: int | None = 0,
    ):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    # sklearn-style parameters, so clone()/GridSearchCV work without depending on sklearn.
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("n_clusters", "n_init", "max_iter", "tol",
                                               "random_state")}

    def set_params(self, **params) -> KMeans:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"KMeans has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def fit(self, X, y=None) -> KMeans:
        """Find ``n_clusters`` centroids of ``X`` (``y`` is ignored).

        Raises
        ------
        ValueError
            If ``X`` is not a finite 2-D array or has fewer samples than clusters.
        """
        X = _check_array(X)
        if not isinstance(self.n_clusters, int | np.integer) or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        if self.n_init < 1 or self.max_iter < 1:
            raise ValueError(
                f"n_init and max_iter must be >= 1, got {self.n_init} and {self.max_iter}"
            )
        if len(X) < self.n_clusters:
            raise ValueError(
                f"k-means needs at least n_clusters={self.n_clusters} samples, got {len(X)}; "
                "use fewer clusters or more data"
            )
        rng = np.random.default_rng(self.random_state)
        tol = self.tol * float(X.var(axis=0).mean())
        best = None
        for _ in range(self.n_init):
            centers = _kmeans_plus_plus(X, self.n_clusters, rng)
            centers, labels, inertia, n_iter = _lloyd(X, centers, self.max_iter, tol)
            if best is None or inertia < best[2]:
                best = (centers, labels, inertia, n_iter)
        self.cluster_centers_, self.labels_, self.inertia_, self.n_iter_ = best
        self.n_features_in_ = X.shape[1]
        # Guard against a zero width when every sample sits on a centroid.
        self.variance_ = max(self.inertia_ / X.size, 1e-12)
        return self

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each sample to each centroid, shape ``(n, n_clusters)``."""
        return np.sqrt(self._squared_distances(X))

    def predict(self, X) -> np.ndarray:
        """Index of the nearest centroid (int64)."""
        return self._squared_distances(X).argmin(axis=1)

    def predict_proba(self, X) -> np.ndarray:
        """Soft assignments: the equal-weight isotropic Gaussian mixture posterior."""
        return _softmax(-self._squared_distances(X) / (2.0 * self.variance_))

    def score_samples(self, X) -> np.ndarray:
        """Anomaly score: distance to the nearest centroid (higher is more unusual)."""
        return np.sqrt(self._squared_distances(X).min(axis=1))

    def _squared_distances(self, X) -> np.ndarray:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("this KMeans is not fitted yet; call fit(X) first")
        X = _check_array(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but KMeans was fitted with {self.n_features_in_}"
            )
        return _squared_distances(X, self.cluster_centers_)

    def to_onnx(self, g: GraphBuilder, x: str, prefix: str = "kmeans") -> dict[str, str]:
        """Emit the distances as graph ops reading ``x`` (float32 ``[batch, n_features]``).

        The graph subtracts each centroid and sums squares (``[batch, k, d]``) instead of
        the expanded ``|x|^2 - 2 x.c + |c|^2`` numpy uses, because in float32 the expanded
        form loses the small distances of normal windows to cancellation.

        Returns
        -------
        dict
            Tensor names: ``"distance"`` (float32 ``[batch]``, nearest centroid),
            ``"cluster"`` (int64 ``[batch]``) and ``"proba"`` (float32 ``[batch, k]``).
        """
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("this KMeans is not fitted yet; call fit(X) first")
        centers = g.const(f"{prefix}_centroids", self.cluster_centers_.astype(np.float32))
        row = g.op("Unsqueeze", [x, g.const(f"{prefix}_axis1", np.array([1], np.int64))],
                   name=f"{prefix}_row")
        diff = g.op("Sub", [row, centers], name=f"{prefix}_diff")
        square = g.op("Mul", [diff, diff], name=f"{prefix}_diff_squared")
        d2 = g.op("ReduceSum", [square, g.const(f"{prefix}_axis2", np.array([2], np.int64))],
                  name=f"{prefix}_squared_distance", keepdims=0)
        nearest = g.op("ReduceMin", [d2, g.const(f"{prefix}_axis1", np.array([1], np.int64))],
                       name=f"{prefix}_nearest_squared", keepdims=0)
        distance = g.op("Sqrt", [nearest], name=f"{prefix}_distance")
        cluster = g.op("ArgMin", [d2], name=f"{prefix}_cluster", axis=1, keepdims=0)
        width = g.const(f"{prefix}_neg_inv_two_variance",
                        np.array(-1.0 / (2.0 * self.variance_), np.float32))
        logits = g.op("Mul", [d2, width], name=f"{prefix}_logits")
        proba = g.op("Softmax", [logits], name=f"{prefix}_proba", axis=1)
        return {"distance": distance, "cluster": cluster, "proba": proba}

    def describe(self) -> dict[str, Any]:
        """What goes into a model's metadata and report."""
        return {
            "detector": "kmeans",
            "n_clusters": int(self.n_clusters),
            "inertia": float(self.inertia_),
            "variance": float(self.variance_),
            "n_iter": int(self.n_iter_),
            "cluster_sizes": np.bincount(self.labels_, minlength=self.n_clusters).tolist(),
        }


def _check_array(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array [samples, features], got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity; clean or impute the features first")
    return X


def _squared_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    # The expanded form is one BLAS call; float64 keeps the cancellation harmless.
    d2 = (X * X).sum(axis=1)[:, None] - 2.0 * X @ centers.T + (centers * centers).sum(axis=1)
    return np.maximum(d2, 0.0)


def _kmeans_plus_plus(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Arthur and Vassilvitskii's seeding: each new centroid is drawn with probability
    proportional to the squared distance to the nearest centroid so far."""
    centers = np.empty((k, X.shape[1]))
    centers[0] = X[rng.integers(len(X))]
    closest = _squared_distances(X, centers[:1])[:, 0]
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than clusters: duplicates are fine
            centers[i] = X[rng.integers(len(X))]
        else:
            centers[i] = X[rng.choice(len(X), p=closest / total)]
        closest = np.minimum(closest, _squared_distances(X, centers[i : i + 1])[:, 0])
    return centers


def _lloyd(X: np.ndarray, centers: np.ndarray, max_iter: int, tol: float):
    k = len(centers)
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        labels = _squared_distances(X, centers).argmin(axis=1)
        counts = np.bincount(labels, minlength=k)
        onehot = np.zeros((len(X), k))
        onehot[np.arange(len(X)), labels] = 1.0
        sums = onehot.T @ X  # one BLAS call instead of a scatter-add
        new = centers.copy()
        filled = counts > 0
        new[filled] = sums[filled] / counts[filled, None]
        # An empty cluster takes the point farthest from its centroid, so k stays k.
        for j in np.flatnonzero(~filled):
            d2 = _squared_distances(X, new).min(axis=1)
            new[j] = X[d2.argmax()]
        shift = ((new - centers) ** 2).sum(axis=1).max()
        centers = new
        if shift <= tol:
            break
    d2 = _squared_distances(X, centers)
    labels = d2.argmin(axis=1)
    inertia = float(d2[np.arange(len(X)), labels].sum())
    return centers, labels, inertia, n_iter


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
