"""SigmoidNetwork: logistic regression stacked into layers of sigmoid units.

A classifier with the scikit-learn estimator contract (without depending on
scikit-learn): the constructor only stores its keyword arguments, everything learned is
created by :meth:`SigmoidNetwork.fit` and ends in ``_``.

The network is a stack of :class:`trainer.layers.Dense` sigmoid layers, one affine output
layer, and a head (softmax or sigmoid with the log-loss). Parameters live in one flat
vector updated in place by :mod:`trainer.optimizers`.

Training defaults are chosen for speed without losing accuracy: float32, mini-batches that
are contiguous views of a once-per-epoch shuffled copy, Adam, and stopping when the
monitored score stops improving (on a held-out validation split when there is enough data,
otherwise on the training loss), with the learning rate lowered once before giving up.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import numbers
import sys
import warnings

import numpy as np

from trainer.layers import HEADS, Dense, ParameterVector, glorot_uniform
from trainer.optimizers import OPTIMIZERS, SOLVERS, lbfgs

log = logging.getLogger(__name__)


class ConvergenceWarning(UserWarning):
    """Training stopped at ``max_epochs`` before the stopping criterion was met."""


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before :meth:`SigmoidNetwork.fit` (same bases as scikit-learn's)."""


# Below this many samples, a validation split is too small to be a reliable stopping signal
# and costs too much training data; the training loss is monitored instead.
AUTO_EARLY_STOPPING_MIN_SAMPLES = 2000
# How often the learning rate is divided by LR_DECAY on a plateau before training stops.
LR_DROPS = 1
LR_DECAY = 10.0
# A plateau whose training loss is this much (relative) above the best seen is an overshoot:
# training resumes from the best weights (see _Monitor).
OVERSHOOT = 0.01


class BaseSigmoidNetwork:
    """What every network of sigmoid layers shares: parameters, checks, training, export.

    Dense sigmoid layers with one flat parameter vector, the optimizers, the mini-batch
    training loop with its stopping rule, optional RBM pretraining and the ONNX emission of
    the layer stack. A subclass says what the network learns: the number of outputs
    (``_n_outputs``), the output head and loss (``_head``) and its ``fit``.
    :class:`SigmoidNetwork` is the classifier;
    :class:`~trainer.autoencoder.SigmoidAutoencoder` reconstructs its input. The
    constructor parameters are documented on :class:`SigmoidNetwork`; a subclass ignores
    those that do not apply to it.
    """

    def __init__(
        self,
        *,
        hidden_layers=(32,),
        output="softmax",
        solver="adam",
        learning_rate=0.01,
        batch_size="auto",
        max_epochs=200,
        alpha=1e-4,
        momentum=0.9,
        nesterov=True,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        class_weight=None,
        dtype="float32",
        random_state=None,
        verbose=False,
        pretrain=None,
    ):
        self.hidden_layers = hidden_layers
        self.output = output
        self.solver = solver
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.alpha = alpha
        self.momentum = momentum
        self.nesterov = nesterov
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.class_weight = class_weight
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.pretrain = pretrain

    # ------------------------------------------------------------------ estimator contract

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY)

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict (scikit-learn contract)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> BaseSigmoidNetwork:
        """Set constructor parameters; unknown names raise ``ValueError``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters: {valid}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = [
            f"{k}={v!r}" for k, v in self.get_params().items()
            if not (isinstance(v, type(defaults[k])) and v == defaults[k])
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    # ------------------------------------------------------------------ validation

    def _validate_params(self) -> None:
        hidden = self.hidden_layers
        if isinstance(hidden, numbers.Integral):
            raise ValueError(
                f"hidden_layers must be a tuple of layer widths, got {hidden!r}; "
                f"write hidden_layers=({hidden},) for one layer"
            )
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise ValueError(f"hidden_layers must be a tuple of ints, got {hidden!r}") from None
        if not all(isinstance(h, numbers.Integral) and h > 0 for h in hidden):
            raise ValueError(f"hidden_layers must hold positive ints, got {self.hidden_layers!r}")
        if self.output not in HEADS:
            raise ValueError(f"output must be one of {sorted(HEADS)}, got {self.output!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if self.solver == "lbfgs" and self.early_stopping is True:
            raise ValueError("early_stopping=True needs a stochastic solver (it stops between "
                             "epochs); use solver='adam' or early_stopping=False with 'lbfgs'")
        _positive("learning_rate", self.learning_rate)
        _positive("max_epochs", self.max_epochs, integral=True)
        _positive("n_iter_no_change", self.n_iter_no_change, integral=True)
        if self.batch_size != "auto":
            _positive("batch_size", self.batch_size, integral=True)
        if not isinstance(self.alpha, numbers.Real) or self.alpha < 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.early_stopping not in (True, False, "auto"):
            raise ValueError(
                f"early_stopping must be True, False or 'auto', got {self.early_stopping!r}"
            )
        if not (isinstance(self.validation_fraction, numbers.Real)
                and 0 < self.validation_fraction < 1):
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, dict)):
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict, got {self.class_weight!r}"
            )
        if self.pretrain not in (None, "rbm"):
            raise ValueError(f"pretrain must be None or 'rbm', got {self.pretrain!r}")
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def _check_X(self, X, *, fitting: bool) -> np.ndarray:
        """X as a C-contiguous float array of the model's dtype, with clear errors."""
        dtype = np.dtype(self.dtype)
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):
            raise TypeError("sparse input is not supported; pass a dense array (X.toarray())")
        try:
            X = np.asarray(X)
        except Exception as exc:  # ragged lists
            raise ValueError(f"X could not be read as a 2-D array of numbers: {exc}") from None
        if X.ndim == 1:
            raise ValueError(
                f"X must be 2-D [n_samples, n_features], got a 1-D array of shape {X.shape}. "
                "Reshape your data: X.reshape(-1, 1) for one feature or X.reshape(1, -1) for "
                "one sample"
            )
        if X.ndim != 2:
            raise ValueError(
                f"X must be 2-D [n_samples, n_features], got shape {X.shape}; "
                "flatten windows first, e.g. X.reshape(len(X), -1)"
            )
        if X.shape[0] == 0:
            raise ValueError(f"X has no samples (shape {X.shape}); pass at least one row")
        if X.shape[1] == 0:
            raise ValueError(
                f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required; "
                "pass at least one column"
            )
        if np.iscomplexobj(X):
            raise ValueError("Complex data not supported: X must be real-valued")
        if X.dtype == object:
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    "X must hold numbers, got dtype object with non-numeric values; "
                    "convert or encode them first"
                ) from None
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"X must hold numbers, got dtype {X.dtype}; convert or encode first")
        X = np.ascontiguousarray(X, dtype=dtype)
        finite = np.isfinite(X)
        if not finite.all():
            bad = np.argwhere(~finite)
            r, c = bad[0]
            raise ValueError(
                f"X contains {len(bad)} NaN or infinite value(s), first X[{r}, {c}] = "
                f"{X[r, c]}; impute or drop them before calling SigmoidNetwork"
            )
        if not fitting and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but SigmoidNetwork is expecting "
                f"{self.n_features_in_} features as input (as in fit); pass the same columns"
            )
        return X

    _fit_call = "fit(X)"  # named in the not-fitted error

    def _check_fitted(self) -> None:
        if not hasattr(self, "coefs_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call {self._fit_call} "
                "before using it"
            )

    # ------------------------------------------------------------------ fitting

    def _reset(self) -> None:
        for name in ("_pv", "_optimizer", "_rng", "best_validation_score_"):
            self.__dict__.pop(name, None)
        self.loss_curve_, self.validation_scores_ = [], []
        self.best_validation_score_ = None
        self.n_iter_ = 0

    def _start(self, n_features: int) -> None:
        """Forget any previous fit and draw fresh weights for ``n_features`` inputs.

        A classifier sets ``classes_`` first: it sizes the output layer.
        """
        self._reset()
        self.n_features_in_ = n_features
        self._rng = _rng(self.random_state)
        self._init_parameters(self._rng)

    def _init_parameters(self, rng: np.random.Generator) -> None:
        widths = [self.n_features_in_, *self.hidden_layers, self._n_outputs()]
        shapes = list(zip(widths[:-1], widths[1:], strict=True))
        pv = ParameterVector(shapes, np.dtype(self.dtype))
        weights, _ = pv.views(pv.params)
        for W, (n_in, n_out) in zip(weights, shapes, strict=True):
            W[...] = glorot_uniform(n_in, n_out, rng)
        self._pv = pv
        self.coefs_, self.intercepts_ = pv.views(pv.params)

    def _pretrain_rbm(self, X: np.ndarray, unlabelled) -> None:
        """Greedy layer-wise RBM pretraining of the hidden layers, in place."""
        from trainer.rbm import pretrain_layers

        if not tuple(self.hidden_layers):
            warnings.warn("pretrain='rbm' does nothing without hidden layers "
                          "(hidden_layers=()); give hidden_layers=(32,) or similar",
                          UserWarning, stacklevel=3)
        if unlabelled is not None:
            X = np.concatenate([X, self._check_X(unlabelled, fitting=False)])
        seed = int(self._rng.integers(2**31))
        layers = pretrain_layers(X, tuple(self.hidden_layers), dtype=np.dtype(self.dtype),
                                 random_state=seed)
        for (coef, intercept), W, b in zip(layers, self.coefs_, self.intercepts_, strict=False):
            W[...] = coef
            b[...] = intercept

    def _parameter_vector(self) -> ParameterVector:
        """The flat vector behind ``coefs_``/``intercepts_``, rebuilt if they were replaced
        (set by hand, or copied apart by pickling)."""
        pv = getattr(self, "_pv", None)
        coefs = self.coefs_
        if pv is not None and all(np.shares_memory(W, pv.params) for W in coefs) and all(
            np.shares_memory(b, pv.params) for b in self.intercepts_
        ):
            return pv
        pv = ParameterVector([W.shape for W in coefs], np.dtype(self.dtype))
        weights, biases = pv.views(pv.params)
        for dst, src in zip(weights + biases, list(coefs) + list(self.intercepts_), strict=True):
            dst[...] = src
        self._pv = pv
        self.__dict__.pop("_optimizer", None)
        self.coefs_, self.intercepts_ = pv.views(pv.params)
        return pv

    def _layers(self) -> list[Dense]:
        """Dense layers bound to ``coefs_``/``intercepts_`` (and gradients when training)."""
        n = len(self.coefs_)
        layers = []
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            layer = Dense(*W.shape, activation="identity" if i == n - 1 else "sigmoid")
            layer.bind(W, b, None, None)
            layers.append(layer)
        return layers

    def _train(self, X, Y, w, *, epochs: int, val, stop: bool) -> None:
        """Run up to ``epochs`` epochs of mini-batch training (the core loop), or as many
        L-BFGS iterations (``solver="lbfgs"``)."""
        if self.solver == "lbfgs":
            self._train_lbfgs(X, Y, w, max_iter=epochs)
            return
        dtype = np.dtype(self.dtype)
        pv = self._parameter_vector()
        n, n_out = Y.shape[0], Y.shape[1]
        batch = n if self.batch_size == "auto" and n < 200 else (
            200 if self.batch_size == "auto" else min(int(self.batch_size), n))
        rng = getattr(self, "_rng", None) or _rng(self.random_state)
        self._rng = rng

        optimizer = getattr(self, "_optimizer", None)
        if optimizer is None:
            kwargs = {"momentum": self.momentum, "nesterov": self.nesterov} \
                if self.solver == "sgd" else {}
            optimizer = OPTIMIZERS[self.solver](
                pv.params.size, learning_rate=self.learning_rate, dtype=dtype, **kwargs)
            self._optimizer = optimizer

        layers, head, p_buf, dz_buf = self._training_layers(pv, batch, n_out)

        # Weights scaled to mean 1, so a batch's weighted mean loss estimates the objective.
        total_weight = float(n if w is None else w.sum())
        w_scaled = None if w is None else (w * (n / total_weight)).astype(dtype)
        l2 = self.alpha / total_weight
        X_shuf, Y_shuf = np.empty_like(X), np.empty_like(Y)
        w_shuf = None if w_scaled is None else np.empty_like(w_scaled)

        n_w = pv.n_weights
        params, grads = pv.params, pv.grads
        monitor = _Monitor(self, val, stop)
        with _one_blas_thread(), _progress(self.verbose, epochs) as bar:
            for _ in range(epochs):
                monitor.begin_epoch()
                perm = rng.permutation(n)
                np.take(X, perm, axis=0, out=X_shuf)  # one copy; batches are views
                np.take(Y, perm, axis=0, out=Y_shuf)
                if w_shuf is not None:
                    np.take(w_scaled, perm, out=w_shuf)
                epoch_loss = 0.0
                for start in range(0, n, batch):
                    stop_at = min(start + batch, n)
                    m = stop_at - start
                    wb = None if w_shuf is None else w_shuf[start:stop_at] / m
                    epoch_loss += m * _backprop(
                        layers, head, X_shuf[start:stop_at], Y_shuf[start:stop_at], wb,
                        p_buf[:m], dz_buf[:m], pv, l2)
                    optimizer.step(params, grads)
                loss = epoch_loss / n + 0.5 * l2 * float(params[:n_w] @ params[:n_w])
                if not np.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged (loss {loss}) at epoch {self.n_iter_ + 1}; "
                        "lower learning_rate or standardise the features"
                    )
                self.n_iter_ += 1
                self.loss_curve_.append(loss)
                done = monitor.update(loss, optimizer)
                bar.update(self.n_iter_, loss, monitor.last_score)
                if done:
                    break
        monitor.finish()

    def _training_layers(self, pv: ParameterVector, rows: int, n_out: int):
        """Layers writing their gradients into ``pv.grads`` with buffers for ``rows`` rows,
        the output head, and its probability and gradient buffers."""
        dtype = np.dtype(self.dtype)
        layers = self._layers()
        d_weights, d_biases = pv.views(pv.grads)
        for i, layer in enumerate(layers):
            layer.dW, layer.db = d_weights[i], d_biases[i]
            layer.allocate(rows, dtype, need_input_grad=i > 0)
        return (layers, self._head(), np.empty((rows, n_out), dtype),
                np.empty((rows, n_out), dtype))

    def _train_lbfgs(self, X, Y, w, *, max_iter: int) -> None:
        """Full-batch L-BFGS on the training objective (the same loss and L2 term as
        :meth:`_train`'s epochs), from the current weights."""
        dtype = np.dtype(self.dtype)
        pv = self._parameter_vector()
        n, n_out = Y.shape
        layers, head, p_buf, dz_buf = self._training_layers(pv, n, n_out)
        total_weight = float(n if w is None else w.sum())
        w_rows = None if w is None else (w / total_weight).astype(dtype)  # sums to 1
        l2 = self.alpha / total_weight
        params, n_w = pv.params, pv.n_weights

        def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
            params[...] = x
            loss = _backprop(layers, head, X, Y, w_rows, p_buf, dz_buf, pv, l2)
            return loss + 0.5 * l2 * float(params[:n_w] @ params[:n_w]), pv.grads

        with _one_blas_thread():
            x, values, converged = lbfgs(objective, params, max_iter=max_iter, tol=self.tol)
        params[...] = x  # the line search accepts finite values only: no divergence check
        self.n_iter_ += len(values)
        self.loss_curve_ += values
        if self.verbose:
            log.info("L-BFGS: %d iterations, loss %s", len(values),
                     f"{values[-1]:.5f}" if values else "unchanged")
        if not converged:
            warnings.warn(
                f"{type(self).__name__} reached max_epochs={max_iter} L-BFGS iterations before "
                "the training loss stopped improving; raise max_epochs or standardise the "
                "features", ConvergenceWarning, stacklevel=3)

    def _check_sample_weight(self, sample_weight, n: int) -> np.ndarray | None:
        """``sample_weight`` as float64 ``[n]``, checked (``None`` stays ``None``)."""
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},) like y, got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite and >= 0")
        if not w.sum() > 0:
            raise ValueError(
                "sample_weight (times class_weight) sums to zero; give some rows a weight > 0"
            )
        return w

    # ------------------------------------------------------------------ inference

    def _forward(self, X) -> np.ndarray:
        """The last layer's pre-activations ``[n, n_outputs]`` for the rows of ``X``."""
        self._check_fitted()
        a = self._check_X(X, fitting=False)
        for layer in self._layers():
            a = layer.forward(a)
        return a

    # ------------------------------------------------------------------ export

    def _dense_stack_to_onnx(self, g, x: str, prefix: str, last: str, last_add: str) -> str:
        """Emit MatMul/Add(/Sigmoid) per layer, as the forward pass runs them.

        Hidden layers are named ``{prefix}dense_{i}``; the last (linear) layer ``last``, its
        Add node ``last_add``. Returns the name of the last layer's pre-activation tensor.
        """
        a = x
        n = len(self.coefs_)
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            base = f"{prefix}dense_{i}" if i < n - 1 else last
            w = g.const(f"{base}_weight", np.asarray(W, np.float32))
            c = g.const(f"{base}_bias", np.asarray(b, np.float32))
            a = g.op("MatMul", [a, w], name=f"{base}_matmul")
            a = g.op("Add", [a, c], name=f"{base}_add" if i < n - 1 else last_add)
            if i < n - 1:
                a = g.op("Sigmoid", [a], name=f"{base}_sigmoid")
        return a


class SigmoidNetwork(BaseSigmoidNetwork):
    """A feed-forward network of sigmoid units trained by backpropagation.

    Parameters
    ----------
    hidden_layers : tuple of int, default=(32,)
        Width of each hidden sigmoid layer, input side first. ``()`` is plain (multinomial
        or binary) logistic regression.
    output : {"softmax", "sigmoid"}, default="softmax"
        Output units for more than two classes: one softmax over all classes, or one
        sigmoid unit per class (one-vs-rest; probabilities are normalised to sum to 1).
        Binary problems always use a single sigmoid unit.
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        Optimizer; ``"sgd"`` uses ``momentum`` and ``nesterov``. ``"lbfgs"`` is full-batch
        limited-memory BFGS (:func:`trainer.optimizers.lbfgs`): no learning rate, batches
        or early stopping; ``max_epochs`` bounds its iterations and ``tol`` is its
        convergence tolerance. On a few hundred windows it converges in a fraction of
        Adam's time (the default selection fits its networks with it).
    learning_rate : float, default=0.01
        Initial step size.
    batch_size : int or "auto", default="auto"
        Rows per gradient step; ``"auto"`` is ``min(200, n_samples)``.
    max_epochs : int, default=200
        Upper bound on passes over the training data.
    alpha : float, default=1e-4
        L2 penalty on the weights (not biases). The objective is the (weighted) mean
        log-loss plus ``alpha / (2 * sum(sample_weight)) * ||W||^2``, so ``alpha = 1/C``
        of scikit-learn's ``LogisticRegression``.
    momentum : float, default=0.9
        Momentum for ``solver="sgd"``.
    nesterov : bool, default=True
        Nesterov momentum for ``solver="sgd"``.
    early_stopping : bool or "auto", default="auto"
        Hold out ``validation_fraction`` of the training data (stratified), stop when
        neither its accuracy nor its log-loss improves any more, and keep the weights with
        the best validation accuracy. ``False`` monitors the training loss instead.
        ``"auto"`` holds out data only from 2000 samples on (a smaller split is too noisy
        to stop on, and the data is better spent on training).
    validation_fraction : float, default=0.1
        Share of the training data held out when early stopping.
    n_iter_no_change : int, default=5
        Epochs without progress (see ``tol``) before the learning rate is divided by 10;
        the next such plateau stops training.
    tol : float, default=1e-4
        Smallest change that counts as progress: a rise in validation accuracy or a fall
        in validation log-loss (with a validation split), else a fall in training loss.
    class_weight : None, "balanced" or dict, default=None
        Per-class weights multiplied into ``sample_weight``; ``"balanced"`` weights class
        ``c`` by ``n_samples / (n_classes * n_c)``.
    dtype : {"float32", "float64"}, default="float32"
        Floating type for training and inference.
    random_state : int, numpy Generator or None, default=None
        Seeds initialisation, shuffling and the validation split.
    verbose : bool, default=False
        Show a progress bar (epoch, loss, validation score) when stderr is a terminal,
        and log one line per epoch otherwise.
    pretrain : None or "rbm", default=None
        ``"rbm"``: before backpropagation, initialise the hidden layers by greedy
        layer-wise RBM pretraining (a deep belief network, :mod:`trainer.rbm`) on the
        training inputs plus any ``unlabelled`` rows given to :meth:`fit`. The output
        layer starts as usual. Helps most with few labels and many unlabelled windows.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted; columns of :meth:`predict_proba` follow this order.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    coefs_ : list of ndarray
        ``coefs_[i]`` is the ``[n_in, n_out]`` weight matrix of layer ``i``.
    intercepts_ : list of ndarray
        ``intercepts_[i]`` is the bias vector of layer ``i``.
    loss_curve_ : list of float
        Training objective after each epoch.
    validation_scores_ : list of float
        Validation accuracy after each epoch (empty without a validation split).
    best_validation_score_ : float or None
        Best validation accuracy (its weights are the ones kept).
    n_iter_ : int
        Epochs run.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)).astype(np.float32)
    >>> y = np.where(X[:, 0] * X[:, 1] > 0, "same", "different")
    >>> net = SigmoidNetwork(hidden_layers=(8,), random_state=0).fit(X, y)
    >>> net.predict(X[:3]).tolist()  # doctest: +SKIP
    ['different', 'same', 'same']
    """

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so importing it here adds no dependency.
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_label=False),
            input_tags=InputTags(two_d_array=True),
        )

    _estimator_type = "classifier"  # scikit-learn < 1.6
    _fit_call = "fit(X, y)"

    def fit(self, X, y, sample_weight=None, unlabelled=None) -> SigmoidNetwork:
        """Train from scratch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features (standardise them first for best results).
        y : array-like of shape (n_samples,)
            Labels: strings, integers or booleans; at least two classes.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight per sample.
        unlabelled : array-like of shape (n_unlabelled, n_features), optional
            Extra inputs without labels, used only by ``pretrain="rbm"``.

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._check_X(X, fitting=True)
        if unlabelled is not None and self.pretrain is None:
            raise ValueError("unlabelled data is only used by pretrain='rbm'; set it or drop "
                             "the unlabelled rows")
        y = _check_y(y, len(X))
        classes = np.unique(y)
        self._start_classes(classes, X.shape[1],
                            "y has a single class {!r}; a classifier needs at least two classes")
        rng = self._rng
        if self.pretrain == "rbm":
            self._pretrain_rbm(X, unlabelled)
        w = self._sample_weights(y, sample_weight)
        Y = self._targets(y)

        use_validation = self.early_stopping is True or (
            self.early_stopping == "auto" and len(X) >= AUTO_EARLY_STOPPING_MIN_SAMPLES
            and self.solver != "lbfgs"
        )
        val = None
        if use_validation:
            train, held = _stratified_split(y, self.validation_fraction, rng)
            if len(held) == 0 or len(np.unique(y[train])) < len(classes):
                raise ValueError(
                    f"early_stopping=True needs a validation split, but {len(X)} samples "
                    f"with validation_fraction={self.validation_fraction} leave none (or lose "
                    "a class); use more data, a larger validation_fraction or early_stopping=False"
                )
            val = (X[held], y[held], None if w is None else w[held])
            X, Y = X[train], Y[train]
            w = None if w is None else w[train]
        self._train(X, Y, w, epochs=self.max_epochs, val=val, stop=True)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> SigmoidNetwork:
        """One more epoch over ``(X, y)``, continuing from the current weights.

        Use it to retrain a fitted network on new recordings, or to train from a stream.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            All class labels. Needed on the first call unless ``y`` already holds every
            class; must match ``classes_`` afterwards.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        self._validate_params()
        if self.solver == "lbfgs":
            raise ValueError("partial_fit needs a stochastic solver (one epoch at a time); "
                             "use solver='adam' or 'sgd', or fit() with 'lbfgs'")
        fitted = hasattr(self, "coefs_")
        X = self._check_X(X, fitting=not fitted)
        y = _check_y(y, len(X))
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if fitted and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"classes={classes.tolist()} differ from the fitted classes_ "
                    f"{self.classes_.tolist()}; call fit to start over with new classes"
                )
        if not fitted:
            classes = np.unique(y) if classes is None else classes
            self._start_classes(classes, X.shape[1],
                                "partial_fit saw a single class {!r}; pass classes=[...] "
                                "with every label on the first call")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(
                f"y has label(s) {unknown.tolist()} not in classes_ {self.classes_.tolist()}; "
                "pass every label in classes= on the first partial_fit call"
            )
        w = self._sample_weights(y, sample_weight)
        self._train(X, self._targets(y), w, epochs=1, val=None, stop=False)
        return self

    def _start_classes(self, classes: np.ndarray, n_features: int, single: str) -> None:
        """Start a fresh fit for ``classes``; ``single`` (with ``{!r}``) when there is one."""
        if len(classes) < 2:
            raise ValueError(single.format(classes.tolist()[0]))
        self.classes_ = classes
        self._start(n_features)

    def _n_outputs(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _sample_weights(self, y: np.ndarray, sample_weight) -> np.ndarray | None:
        """Sample weights times class weights, or ``None`` when all are equal."""
        w = self._check_sample_weight(sample_weight, len(y))
        if self.class_weight is not None:
            if self.class_weight == "balanced":
                counts = np.array([(y == c).sum() for c in self.classes_], dtype=np.float64)
                present = counts > 0
                per_class = np.zeros(len(self.classes_))
                per_class[present] = len(y) / (present.sum() * counts[present])
            else:
                unknown = set(self.class_weight) - set(self.classes_.tolist())
                if unknown:
                    raise ValueError(
                        f"class_weight has label(s) {sorted(unknown, key=str)} that are not "
                        f"classes {self.classes_.tolist()}"
                    )
                per_class = np.array([float(self.class_weight.get(c, 1.0))
                                      for c in self.classes_.tolist()])
            cw = per_class[np.searchsorted(self.classes_, y)]
            w = cw if w is None else w * cw
        if w is not None and not w.sum() > 0:
            raise ValueError(
                "sample_weight (times class_weight) sums to zero; give some rows a weight > 0"
            )
        return w

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """One-hot targets ``[n, K]``, or one column ``y == classes_[1]`` for two classes."""
        index = np.searchsorted(self.classes_, y)
        dtype = np.dtype(self.dtype)
        if len(self.classes_) == 2:
            return (index == 1).astype(dtype)[:, None]
        Y = np.zeros((len(y), len(self.classes_)), dtype)
        Y[np.arange(len(y)), index] = 1
        return Y

    def _head(self):
        return HEADS["sigmoid" if len(self.classes_) == 2 else self.output]

    def decision_function(self, X) -> np.ndarray:
        """Pre-activations of the output units (log-odds).

        Returns
        -------
        ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        a = self._forward(X)
        return a[:, 0] if a.shape[1] == 1 else a

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order, rows summing to 1.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        z = self.decision_function(X)
        if z.ndim == 1:
            p = HEADS["sigmoid"].forward(z)
            return np.stack([1 - p, p], axis=1)
        p = self._head().forward(z, out=z)
        if self._head() is HEADS["sigmoid"]:
            p /= p.sum(axis=1, keepdims=True)
        return p

    def predict(self, X) -> np.ndarray:
        """Most probable class label per row."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """(Weighted) accuracy of :meth:`predict` on ``(X, y)``."""
        correct = self.predict(X) == _check_y(y, len(X))
        return float(np.average(correct, weights=sample_weight))

    def to_onnx(self, g, x: str, prefix: str = "") -> str:
        """Emit the forward pass into an ONNX graph; the exporter mirrors :meth:`predict_proba`.

        Per hidden layer ``i``: ``dense_{i}_matmul`` (MatMul with ``dense_{i}_weight``),
        ``dense_{i}_add`` (Add ``dense_{i}_bias``), ``dense_{i}_sigmoid``; then
        ``output_matmul``, ``output_add`` and ``output_softmax``, or for sigmoid outputs
        ``output_sigmoid`` followed by ``output_normalise`` (K units) or
        ``output_complement`` + ``output_probabilities`` (``[1 - p, p]``, one unit).

        Parameters
        ----------
        g : trainer.graph.GraphBuilder
            The graph to add nodes and initializers to.
        x : str
            Name of a float32 ``[batch, n_features_in_]`` tensor already in ``g``.
        prefix : str, default=""
            Prepended to every node/initializer name (for several networks in one graph).

        Returns
        -------
        str
            Name of the float32 ``[batch, n_classes]`` probabilities tensor, columns in
            ``classes_`` order.
        """
        self._check_fitted()
        out = f"{prefix}output"
        a = self._dense_stack_to_onnx(g, x, prefix, out, f"{out}_add")
        if len(self.classes_) == 2:
            p = g.op("Sigmoid", [a], name=f"{out}_sigmoid")
            one = g.const(f"{out}_one", np.ones((1, 1), np.float32))
            q = g.op("Sub", [one, p], name=f"{out}_complement")
            return g.op("Concat", [q, p], name=f"{out}_probabilities", axis=1)
        if self._head() is HEADS["softmax"]:
            return g.op("Softmax", [a], name=f"{out}_softmax", axis=1)
        p = g.op("Sigmoid", [a], name=f"{out}_sigmoid")
        axes = g.const(f"{out}_sum_axes", np.array([1], np.int64))
        total = g.op("ReduceSum", [p, axes], name=f"{out}_sum", keepdims=1)
        return g.op("Div", [p, total], name=f"{out}_normalise")


# ---------------------------------------------------------------------- helpers


def _backprop(layers, head, x, y, w, p_buf, dz_buf, pv: ParameterVector, l2: float) -> float:
    """Forward pass, loss, and backward pass for one batch; gradients land in ``pv.grads``.

    ``w`` holds per-row weights that sum to 1 (``None``: equal weights). Returns the
    batch's data loss (without the L2 term, whose gradient ``l2 * W`` is added here).
    """
    a = x
    for layer in layers:
        a = layer.forward(a, train=True)
    p, loss = head.forward_loss(a, y, w, out=p_buf)
    grad = head.backward(p, y, w, out=dz_buf)
    for layer in reversed(layers):
        grad = layer.backward(grad)
    if l2:
        n_w = pv.n_weights
        pv.grads[:n_w] += l2 * pv.params[:n_w]
    return loss


def _one_blas_thread():
    """Run BLAS single-threaded while training, if threadpoolctl is installed.

    A training step multiplies small matrices (a batch by a layer); splitting those across
    threads costs more in synchronisation than it gains, and on a busy machine spinning
    BLAS threads slow each product down by 10-100x.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up, not a requirement
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class _Monitor:
    """Decides when to lower the learning rate and when to stop; keeps the best weights.

    With a validation split, an epoch is progress when the validation accuracy rises by
    more than ``tol`` OR the validation log-loss falls by more than ``tol``: accuracy alone
    is coarse and plateaus for many epochs while the network still improves, and the loss
    alone keeps improving on confidence after the predictions stop changing. The weights
    with the best validation accuracy (ties: lower loss) are kept. Without a split,
    progress is the training loss falling by more than ``tol``.

    After ``n_iter_no_change`` epochs without progress the learning rate is divided by
    ``LR_DECAY``; after ``LR_DROPS`` such drops the next plateau stops training.

    Without a split, a plateau can also be an overshoot: on wide inputs (hundreds of
    standardized features) Adam's first steps at the default rate can throw the loss far
    above a minimum it passed, and it then stays above that minimum for a whole patience
    (measured: 801 conv features, loss 0.27 when stopped at epoch 44 against 0.02 when
    converged, 20 points of test accuracy). So the weights with the lowest training loss
    are kept, training resumes from them at each drop (with fresh optimizer moments), and
    they are the ones returned.
    """

    def __init__(self, net: BaseSigmoidNetwork, val, stop: bool):
        self.net, self.stop = net, stop
        self.val = None
        if val is not None:
            Xv, yv, wv = val
            self.val = (Xv, yv, net._targets(yv), None if wv is None else wv / wv.sum())
        self.best_acc, self.best_loss = -np.inf, np.inf  # best seen, for the kept weights
        self.ref_acc, self.ref_loss = -np.inf, np.inf    # best by more than tol, for patience
        self.best_params = None
        # Without a split: the weights each epoch starts from (see begin_epoch).
        self._track = self.val is None and stop
        self._start = None
        self.waited = 0
        self.drops = 0
        self.last_score = None
        self.converged = False

    def begin_epoch(self) -> None:
        """Note the weights this epoch starts from (kept if its loss is the best)."""
        if not self._track:
            return
        if self._start is None:
            self._start = self.net._pv.params.copy()
        else:
            np.copyto(self._start, self.net._pv.params)

    def update(self, loss: float, optimizer) -> bool:
        """Record the epoch; return True when training should stop."""
        net = self.net
        if self.val is not None:
            acc, val_loss = self._validate()
            net.validation_scores_.append(acc)
            self.last_score = acc
            if (acc, -val_loss) > (self.best_acc, -self.best_loss):
                self.best_acc, self.best_loss = acc, val_loss
                self.best_params = net._pv.params.copy()
            progress = acc > self.ref_acc + net.tol or val_loss < self.ref_loss - net.tol
            self.ref_acc, self.ref_loss = max(acc, self.ref_acc), min(val_loss, self.ref_loss)
        else:
            progress = loss < self.ref_loss - net.tol
            if self._track and loss < self.best_loss:
                # The epoch's loss was taken on its way from the weights it started with
                # (exactly those with full batches): keep them.
                self.best_loss = loss
                self.best_params, self._start = self._start, self.best_params
            self.ref_loss = min(loss, self.ref_loss)
        if not self.stop:
            return False
        self.waited = 0 if progress else self.waited + 1
        if self.waited < net.n_iter_no_change:
            return False
        if self.drops < LR_DROPS:
            self.drops += 1
            self.waited = 0
            optimizer.learning_rate /= LR_DECAY
            if self.val is None and loss > self.best_loss * (1 + OVERSHOOT) + net.tol:
                net._pv.params[...] = self.best_params
                optimizer.reset()
            return False
        self.converged = True
        return True

    def _validate(self) -> tuple[float, float]:
        """Validation (weighted) accuracy and mean log-loss from one forward pass."""
        Xv, yv, Yv, wv = self.val
        net = self.net
        z = Xv
        for layer in net._layers():
            z = layer.forward(z)
        # argmax of the pre-activations is the argmax of the probabilities
        pred = z[:, 0] > 0 if z.shape[1] == 1 else np.argmax(z, axis=1)
        correct = pred == (Yv[:, 0] > 0.5 if z.shape[1] == 1 else np.argmax(Yv, axis=1))
        acc = float(correct.mean() if wv is None else correct @ wv)
        return acc, net._head().forward_loss(z, Yv, wv, out=z)[1]

    def finish(self) -> None:
        net = self.net
        if self.best_params is not None:
            net._pv.params[...] = self.best_params
            if self.val is not None:
                net.best_validation_score_ = float(self.best_acc)
        if self.stop and not self.converged:
            warnings.warn(
                f"{type(net).__name__} reached max_epochs={net.max_epochs} before the "
                f"{'validation score' if self.val is not None else 'training loss'} stopped "
                "improving; raise max_epochs or learning_rate, or standardise the features",
                ConvergenceWarning,
                stacklevel=3,
            )


class _progress:
    """A tqdm bar on a terminal when verbose; a log line per epoch when verbose elsewhere."""

    def __init__(self, verbose: bool, total: int):
        self.bar = None
        self.verbose = verbose
        if verbose and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="epoch", desc="SigmoidNetwork")

    def update(self, epoch: int, loss: float, score) -> None:
        if not self.verbose:
            return
        if self.bar is None:
            log.info("epoch %d loss %.5f validation %s", epoch, loss,
                     "-" if score is None else f"{score:.4f}")
            return
        post = {"loss": f"{loss:.4f}"}
        if score is not None:
            post["val"] = f"{score:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _positive(name: str, value, integral: bool = False) -> None:
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive int" if integral else "a positive number"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _check_y(y, n: int) -> np.ndarray:
    if y is None:
        raise ValueError(
            "SigmoidNetwork requires y to be passed, but the target y is None; "
            "pass one label per row of X"
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per row), got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)} labels; they must match")
    if y.dtype == object:
        kinds = {type(v) for v in y.tolist()}
        if len(kinds) > 1:
            raise ValueError(
                f"y mixes label types {sorted(k.__name__ for k in kinds)}; use one type"
            )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite labels; drop those rows")
        if (y != np.round(y)).any():
            raise ValueError(
                "Unknown label type: continuous values in y (e.g. "
                f"{y[y != np.round(y)][0]!r}); a classifier needs class labels, "
                "so bin the target or use integer/string labels"
            )
    return y


def _rng(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31))
    return np.random.default_rng(random_state)


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Indices ``(train, held_out)``, holding out about ``fraction`` of every class."""
    train, held = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx))) if len(idx) > 1 else 0
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
