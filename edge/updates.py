"""Model updates in the daemon: signed pushes, file reloads, persistence and rollback.

With ``--trusted-key`` the daemon subscribes to ``sigmoid-edge/{node}/model`` and accepts a
new model only when a trusted Ed25519 key signed it (:mod:`edge.signing`). A push is
handled off the network thread, in this order, and any failure leaves the serving model
untouched:

1. decode and verify the signature (:func:`edge.signing.verify_push`), refusing a model
   signed before the one in use (``replay``);
2. a model with the sha256 of the serving one is a no-op (retained pushes arrive again on
   every reconnect);
3. load it, check the contract and the channel mapping, self-test it, and swap it in
   (:meth:`edge.models.ModelSlot.swap`; the worker picks it up between batches);
4. store it as the model file with its ``MODEL.sig`` (:func:`edge.signing.write_verified`),
   so a restart serves it and still knows when it was signed.

A SIGHUP reload goes through the same steps, reading ``MODEL`` and ``MODEL.sig`` from disk
when keys are trusted. Pushes, reloads and the storing of a rolled-back model all run on
this module's own thread, never on the threads that serve data and signals; the self-test
of a candidate runs in a child process with a time limit (:mod:`edge.modelcheck`). The
previous model is kept (in :class:`edge.models.ModelSlot`, its one owner): if the new one
fails on real, in-range windows (see :mod:`edge.runner`) the worker rolls back to it and
re-runs the batch, and this thread writes it back to disk. Refusals, rollbacks and accepted
pushes are published on ``sigmoid-edge/{node}/errors``; everything is counted in ``stats``
(``model_updates``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from edge.modelcheck import Check
from edge.models import LoadedModel, ModelError, ModelSlot, load_model
from edge.signing import (
    MAX_MODEL_BYTES,
    SignatureError,
    VerifiedModel,
    load_trusted_keys,
    verify_file,
    verify_push,
    write_verified,
)
from edge.stats import RateLimit, to_json

log = logging.getLogger(__name__)

MAX_WAITING_PUSHES = 2  # more pushes while these wait are refused as "busy"

Publish = Callable[..., object]


def verify_startup(cfg, model: LoadedModel | None = None):
    """Load the trusted keys and verify the configured model file against its ``MODEL.sig``.

    Returns
    -------
    keys : list of TrustedKey
        Empty when no key is configured (remote push off, nothing verified).
    verified : VerifiedModel or None
    model : LoadedModel
        ``model`` when it is the verified file, else loaded from the verified bytes.

    Raises
    ------
    ModelError
        A key file is not an Ed25519 public key, or the model is unsigned, altered or
        signed by an untrusted key.
    """
    if not cfg.trusted_keys:
        return [], None, model or load_model(cfg.model, threads=cfg.threads,
                                             runtime=cfg.runtime, extra_ops=cfg.extra_ops)
    try:
        keys = load_trusted_keys(cfg.trusted_keys)
        verified = verify_file(cfg.model, None, keys)
    except SignatureError as e:
        raise ModelError(f"{e} (with --trusted-key the model file needs a valid MODEL.sig)") \
            from None
    if model is None or model.sha256 != verified.sha256:
        model = load_model(verified.model, threads=cfg.threads, origin=cfg.model,
                           runtime=cfg.runtime, extra_ops=cfg.extra_ops)
    return keys, verified, model


class ModelUpdates:
    """Verify, apply, persist, report and roll back model updates for one daemon.

    Parameters
    ----------
    cfg : edge.config.Config
    slot : ModelSlot
    publish : callable
        ``publish(topic, payload, qos=1)``.
    keys : list of TrustedKey
        Empty: remote push is off and reloads are not verified.
    verified : VerifiedModel, optional
        The serving model's verified bytes and signature (with keys).
    stats : edge.stats.Stats, optional
        Its ``model_rejects`` counts refused updates.

    Notes
    -----
    Reports on the errors topic are JSON with ``event`` (``model_accepted``,
    ``model_rejected``, ``model_rolled_back``, ``model_not_stored``); a rejection has
    ``reason: "model_rejected"`` and the precise ``cause``: a :data:`edge.signing.REASONS`
    value, ``invalid_model`` (contract, channel mapping or self-test), ``rolled_back``
    (this model failed before) or ``busy``.
    """

    def __init__(self, cfg, slot: ModelSlot, publish: Publish, keys=(),
                 verified: VerifiedModel | None = None, stats=None):
        self.cfg = cfg
        self.stats = stats
        self.slot = slot
        self.publish = publish
        self.keys = list(keys)
        # The signed bytes of the serving model and of the one before it, by sha256; which
        # model is current or previous is the slot's to say (one owner).
        self._verified: dict[str, VerifiedModel] = {}
        self.current = verified
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._bad: set[str] = set()  # sha256 of models rolled back in this run
        # Jobs for the update thread: push payloads (bytes), "reload", ("store", verified),
        # None (stop). Pushes waiting are bounded by MAX_WAITING_PUSHES.
        self._pending: queue.Queue = queue.Queue()
        self._pushes_waiting = 0
        self._stopping = False
        self._lock = threading.Lock()  # one update at a time (update thread, worker)
        self._lock_waiting = threading.Lock()
        self._report_limit = RateLimit(per_second=1.0, burst=10)
        self._thread = threading.Thread(target=self._loop, name="sigmoid-edge-updates",
                                        daemon=True)
        self._checker: Check | None = None  # the model check running now, for stop()
        if cfg.model_check_timeout > 0:
            slot.prechecks.append(self._check_in_child)

    @property
    def push_enabled(self) -> bool:
        return bool(self.keys)

    @property
    def current(self) -> VerifiedModel | None:
        """The serving model's verified bytes and signature (None without keys)."""
        return self._verified.get(self.slot.current.sha256) if self.keys else None

    @current.setter
    def current(self, verified: VerifiedModel | None) -> None:
        if verified is not None:
            keep = {verified.sha256, self.slot.current.sha256}
            if self.slot.previous is not None:
                keep.add(self.slot.previous.sha256)
            self._verified = {k: v for k, v in self._verified.items() if k in keep}
            self._verified[verified.sha256] = verified

    # lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the update thread; a model check in progress is killed."""
        self._stopping = True
        checker = self._checker
        if checker is not None:
            checker.kill()
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join(3)

    def _check_in_child(self, data: bytes, label: str) -> None:
        """Load and self-test a candidate in a child process, with the time limit."""
        if self._stopping:
            raise ModelError(f"{label}: not checked, the daemon is stopping")
        self._checker = Check(data, label, timeout=self.cfg.model_check_timeout,
                              threads=self.cfg.threads, extra_ops=self.cfg.extra_ops)
        try:
            self._checker.run()
        finally:
            self._checker = None

    # network and main threads: hand off, nothing else
    def on_push(self, msg) -> None:
        """A message on ``sigmoid-edge/{node}/model`` (paho's network thread)."""
        payload = msg.payload
        if not payload:
            return  # an empty retained message clears an old push; nothing to do
        with self._lock_waiting:
            if self._pushes_waiting >= MAX_WAITING_PUSHES:
                busy = True
            else:
                busy = False
                self._pushes_waiting += 1
        if busy:
            self._rejected("busy", "another model update is still being checked; push again "
                                   "later", "push")
            return
        self._pending.put(bytes(payload))

    def request_reload(self, origin: str = "SIGHUP") -> None:
        """Reload the model file on the update thread (the main thread only asks)."""
        self._pending.put(("reload", origin))

    def _loop(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            try:
                if isinstance(job, bytes):
                    with self._lock_waiting:
                        self._pushes_waiting -= 1
                    self.apply_push(job)
                elif job[0] == "reload":
                    if self.reload_file(job[1]) in ("accepted", "unchanged"):
                        new = self.slot.current
                        log.info("reloaded model %s %s (sha256 %s)", new.info.name,
                                 new.info.version, new.sha256)
                elif job[0] == "store":
                    self._store(job[1], "rolled-back")
            except Exception:  # a bug must not end model updates for the daemon's life
                log.exception("model update failed unexpectedly")

    # the steps
    def apply_push(self, payload: bytes) -> str:
        """Verify and apply a push; returns ``accepted``, ``unchanged`` or the reject reason."""
        try:
            verified = verify_push(payload, self.keys, max_bytes=MAX_MODEL_BYTES,
                                   current=self.current.signature if self.current else None)
        except SignatureError as e:
            return self._rejected(e.reason, str(e), "push")
        return self._apply(verified, "push")

    def reload_file(self, origin: str = "SIGHUP") -> str:
        """Reload the model file (verified against ``MODEL.sig`` when keys are trusted)."""
        if not self.keys:
            with self._lock:
                try:
                    old = self.slot.current
                    new = self.slot.swap(self.cfg.model, origin=f"{self.cfg.model} ({origin})")
                except ModelError as e:
                    return self._rejected(e.cause, str(e), origin)
            if new.sha256 == old.sha256:
                self.counts["unchanged"] += 1
                return "unchanged"
            return self._accepted(new, old, origin)
        try:
            verified = verify_file(self.cfg.model, None, self.keys,
                                   current=self.current.signature if self.current else None)
        except SignatureError as e:
            return self._rejected(e.reason, str(e), origin)
        return self._apply(verified, origin, persist=False)

    def _apply(self, verified: VerifiedModel, origin: str, persist: bool = True) -> str:
        with self._lock:
            old = self.slot.current
            if verified.sha256 == old.sha256:
                # Same bytes (a retained push seen again, a re-signed file): keep serving, but
                # remember the newer signature for replay protection.
                self.current = verified
                self.counts["unchanged"] += 1
                log.info("model update from %s is the model already serving (sha256 %.12s)",
                         origin, old.sha256)
                return "unchanged"
            if verified.sha256 in self._bad:
                return self._rejected("rolled_back", f"model sha256 {verified.sha256[:12]} was "
                                      "rolled back after it failed on real windows; fix it and "
                                      "sign a new version", origin)
            label = f"model {verified.signature.file!r} ({origin})"
            try:
                new = self.slot.swap(verified.model, origin=label)
            except ModelError as e:
                return self._rejected(e.cause, str(e), origin)
            self.current = verified
        if persist:
            self._store(verified, "accepted")
        return self._accepted(new, old, origin, verified)

    def _store(self, verified: VerifiedModel, what: str) -> None:
        """Write a model and its signature as the model file (update thread only)."""
        try:
            write_verified(verified, self.cfg.model)
        except OSError as e:
            log.error("%s model could not be stored as %s (%s): a restart will serve the old "
                      "file", what, self.cfg.model, e.strerror)
            self._report({"event": "model_not_stored", "detail": f"{self.cfg.model}: "
                          f"{e.strerror}", "model": verified.sha256})

    # worker thread
    def on_model_failure(self, model: LoadedModel, error: Exception) -> bool:
        """The serving model failed on real windows: roll back if a good previous exists.

        Returns True when another model now serves (the caller re-runs the batch).
        """
        with self._lock:
            prev = self.slot.previous
            if model is not self.slot.current or prev is None or prev.sha256 in self._bad:
                return False
            self._bad.add(model.sha256)
            self.slot.rollback()
            restored = self._verified.get(prev.sha256)
        self.counts["rolled_back"] += 1
        log.error("model %s %s (sha256 %.12s) failed on real windows (%s): rolled back to "
                  "%s %s", model.info.name, model.info.version, model.sha256, error,
                  prev.info.name, prev.info.version)
        if restored is not None:  # written by the update thread: no disk I/O here
            self._pending.put(("store", restored))
        self._report({"event": "model_rolled_back", "reason": "model_failed",
                      "detail": f"{type(error).__name__}: {error}"[:500],
                      "failed": model.identity, "model": prev.identity})
        return True

    # reporting
    def _accepted(self, new: LoadedModel, old: LoadedModel, origin: str,
                  verified: VerifiedModel | None = None) -> str:
        self.counts["accepted"] += 1
        doc = {"event": "model_accepted", "origin": origin, "model": new.identity,
               "previous": old.identity}
        if verified is not None:
            doc["signed_at"] = verified.signature.signed_at
            doc["key_id"] = verified.key.key_id
        log.info("model update from %s accepted: %s %s (sha256 %.12s)", origin, new.info.name,
                 new.info.version, new.sha256)
        if origin == "push":  # a remote push has no other way to learn it was taken
            self._report(doc)
        return "accepted"

    def _rejected(self, reason: str, detail: str, origin: str) -> str:
        self.rejected[reason] += 1
        log.error("model update from %s refused (%s), still serving %s %s: %s", origin,
                  reason, self.slot.current.info.name, self.slot.current.info.version, detail)
        if self.stats is not None:
            self.stats.model_rejects += 1
        self._report({"event": "model_rejected", "reason": "model_rejected", "cause": reason,
                      "detail": detail, "origin": origin, "serving": self.slot.current.identity})
        return reason

    def _report(self, doc: dict) -> None:
        if self._report_limit.allow():
            doc["time"] = round(time.time(), 3)
            self.publish(self.cfg.errors_topic, to_json(doc), qos=1)

    def snapshot(self) -> dict:
        """For the stats topic."""
        return {"push_enabled": self.push_enabled, "accepted": self.counts["accepted"],
                "unchanged": self.counts["unchanged"],
                "rolled_back": self.counts["rolled_back"], "rejected": dict(self.rejected),
                "signed_at": self.current.signature.signed_at if self.current else None}
