"""A tiny least-squares linear + softmax classifier, standing in for the network in tests.

It has the sklearn contract and ``to_onnx`` like :class:`trainer.network.SigmoidNetwork`,
so the pipeline, export and quantization can be tested on their own.
"""

from __future__ import annotations

import numpy as np


class LinearSoftmax:
    def __init__(self, hidden_layers=(), random_state=None, alpha=1e-2, **ignored):
        # Training knobs of the real network (tol, max_epochs, ...) mean nothing here.
        self.hidden_layers = hidden_layers
        self.random_state = random_state
        self.alpha = alpha

    def fit(self, X, y):
        self.classes_, idx = np.unique(y, return_inverse=True)
        Xb = np.hstack([X, np.ones((len(X), 1))])
        T = np.eye(len(self.classes_))[idx] * 4.0 - 2.0
        A = Xb.T @ Xb + self.alpha * np.eye(Xb.shape[1])
        W = np.linalg.solve(A, Xb.T @ T)
        self.coefs_ = [W[:-1].astype(np.float32)]
        self.intercepts_ = [W[-1].astype(np.float32)]
        self.loss_curve_ = [1.0, 0.5]
        return self

    def predict_proba(self, X):
        z = np.asarray(X, np.float32) @ self.coefs_[0] + self.intercepts_[0]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def to_onnx(self, g, x):
        z = g.op("MatMul", [x, g.const("standin_weights", self.coefs_[0])], name="standin_matmul")
        z = g.op("Add", [z, g.const("standin_bias", self.intercepts_[0])], name="standin_logits")
        return g.op("Softmax", [z], name="standin_softmax", axis=1)


def factory(hidden_layers, random_state, **params):
    return LinearSoftmax(hidden_layers, random_state, **params)
