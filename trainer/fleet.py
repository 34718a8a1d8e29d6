"""Many daemons on one broker: ``sigmoid-train fleet status`` and ``fleet push``.

Everything comes from what each daemon already publishes under ``sigmoid-edge/{node}/``:
the retained ``info`` (model sha256, start time, stats interval), the retained ``status``
(``online``/``offline``, the last will), the retained ``stats`` (counters and rates) and the
``errors`` events (``model_accepted``, ``model_rejected``, ``model_rolled_back``). There is no
coordinator and nothing on the daemons to install.

A staged push signs the model once (:func:`trainer.push.prepare_push`) and sends the same
message to one wave of nodes after another: ``canary`` nodes first, then waves twice as large
as the one before. A node passes when it reports ``model_accepted`` for this sha256, its
``info`` says it serves it, and (with ``soak`` > 0) its stats after ``soak`` seconds show
inferences made by the new model, no rollback, and rejected plus dropped messages under
``max_error_rate`` of those received. The first failing wave halts the rollout: later waves
are never pushed, and every node keeps serving a model it accepted (a refused model never
replaces the old one; a failing one is rolled back by the daemon itself).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge import topics
from edge.signing import describe
from trainer.push import (
    BrokerSettings,
    PushError,
    check_node,
    close,
    connect,
    prepare_push,
    publish_confirmed,
)

KINDS = {"info": topics.INFO, "status": topics.STATUS, "stats": topics.STATS,
         "errors": topics.ERRORS}
MAX_EVENTS = 200  # errors events kept per node


@dataclass
class Node:
    """The latest of everything one daemon published.

    Attributes
    ----------
    name : str
    info, stats : dict or None
        The latest ``info`` and ``stats`` documents.
    status : str or None
        ``online`` or ``offline`` (None: never seen).
    stats_seen : float
        ``time.monotonic()`` when the latest stats arrived (0: never).
    events : deque of (float, dict)
        ``errors`` events with the monotonic time they arrived.
    """

    name: str
    info: dict | None = None
    status: str | None = None
    stats: dict | None = None
    stats_seen: float = 0.0
    events: deque = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))

    @property
    def sha256(self) -> str | None:
        """The sha256 of the model the node's ``info`` says it serves."""
        model = (self.info or {}).get("model") or {}
        return model.get("sha256")

    @property
    def model_label(self) -> str:
        model = (self.info or {}).get("model") or {}
        if not model:
            return "?"
        return f"{model.get('name', '?')} {model.get('version', '?')}, " \
               f"sha256 {str(model.get('sha256', '?'))[:12]}"


class FleetWatcher:
    """Every node's ``info``, ``status``, ``stats`` and ``errors``, kept up to date.

    Parameters
    ----------
    client : paho.mqtt.client.Client
        Connected, its network loop running (:func:`trainer.push.connect`).
    timeout : float
        Seconds to wait for the broker to acknowledge the subscriptions.

    Raises
    ------
    PushError
        If the broker refuses or does not acknowledge the subscriptions.
    """

    def __init__(self, client: mqtt.Client, timeout: float = 10.0):
        self.client = client
        self.nodes: dict[str, Node] = {}
        self.cond = threading.Condition()
        self._subacks: list = []
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        filters = [(topics.all_nodes(t), 1) for t in KINDS.values()]
        result, _ = client.subscribe(filters)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise PushError(f"cannot subscribe to the daemons' topics: "
                            f"{mqtt.error_string(result)}")
        with self.cond:
            if not self.cond.wait_for(lambda: self._subacks, timeout):
                raise PushError(f"the broker did not acknowledge the subscription to "
                                f"{topics.PREFIX}/+/... within {timeout:g} s")
            codes = self._subacks[0]
        refused = [f for (f, _), rc in zip(filters, codes, strict=False) if rc.is_failure]
        if refused:
            raise PushError(f"the broker refused the subscriptions {refused} (this user needs "
                            f"read access to {topics.PREFIX}/+/info, status, stats and errors)")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self.cond:
            self._subacks.append(reason_codes)
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 3 or parts[0] != topics.PREFIX or parts[2] not in KINDS:
            return
        kind = parts[2]
        if kind == "status":
            value = msg.payload.decode("utf-8", "replace")
        else:
            try:
                value = json.loads(msg.payload)
            except ValueError:
                return
            if not isinstance(value, dict):
                return
        with self.cond:
            node = self.nodes.get(parts[1])
            if node is None:
                node = self.nodes[parts[1]] = Node(parts[1])
            if kind == "errors":
                node.events.append((time.monotonic(), value))
            else:
                setattr(node, kind, value)
                if kind == "stats":
                    node.stats_seen = time.monotonic()
            self.cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every message); False on timeout."""
        with self.cond:
            return self.cond.wait_for(predicate, max(0.0, timeout))

    def node(self, name: str) -> Node:
        with self.cond:
            return self.nodes.setdefault(name, Node(name))


def watch(settings: BrokerSettings, timeout: float = 10.0) -> FleetWatcher:
    """Connect and subscribe to every node's topics (:class:`PushError` on failure)."""
    client = connect(settings, timeout=timeout)
    try:
        return FleetWatcher(client, timeout)
    except BaseException:
        close(client)
        raise


# ---------------------------------------------------------------------------- status

def status_rows(nodes: dict[str, Node], now: float | None = None) -> list[dict]:
    """One JSON-ready row per node, sorted by name (what ``fleet status --json`` prints)."""
    now = time.time() if now is None else now
    rows = []
    for name in sorted(nodes):
        node = nodes[name]
        info, stats = node.info or {}, node.stats or {}
        rates = stats.get("rates") or {}
        seen = [t for t in (info.get("time"), stats.get("time")) if isinstance(t, int | float)]
        started = info.get("started")
        online = node.status == "online"
        rows.append({
            "node": name,
            "state": node.status or "unknown",
            "model": info.get("model"),
            "software_version": info.get("software_version"),
            "uptime_s": round(now - started, 1) if online and started else None,
            "messages_per_s": rates.get("messages_per_s"),
            "windows_per_s": rates.get("windows_per_s"),
            "errors": {"rejected": stats.get("rejected_total"), "queue_drops": stats.get("drops"),
                       "output_drops": stats.get("output_drops"),
                       "model_rejects": stats.get("model_rejects")} if stats else None,
            "last_seen": max(seen) if seen else None,
            "input_topic": info.get("input_topic"),
            "shard": info.get("shard"),
            "metrics_port": info.get("metrics_port"),
        })
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def format_table(rows: list[dict], now: float | None = None) -> str:
    """``fleet status`` for a terminal: one line per node."""
    now = time.time() if now is None else now
    header = ("NODE", "STATE", "MODEL", "UPTIME", "MSG/S", "WIN/S", "ERRORS", "LAST SEEN")
    lines = [header]
    for r in rows:
        model = r["model"] or {}
        errors = r["errors"]
        lines.append((
            r["node"], r["state"],
            f"{model.get('name', '?')} {model.get('version', '?')} "
            f"{str(model.get('sha256', '?'))[:12]}" if model else "-",
            _duration(r["uptime_s"]),
            "-" if r["messages_per_s"] is None else f"{r['messages_per_s']:g}",
            "-" if r["windows_per_s"] is None else f"{r['windows_per_s']:g}",
            "-" if errors is None else str(sum(v or 0 for v in errors.values())),
            "-" if r["last_seen"] is None else f"{_duration(max(0, now - r['last_seen']))} ago",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def fleet_status(settings: BrokerSettings, wait: float = 2.0) -> list[dict]:
    """Listen ``wait`` seconds (retained messages arrive at once) and return the rows."""
    watcher = watch(settings)
    try:
        time.sleep(wait)
        with watcher.cond:
            return status_rows(dict(watcher.nodes))
    finally:
        close(watcher.client)


# ---------------------------------------------------------------------------- staged push

def plan_waves(nodes: list[str], canary: int) -> list[list[str]]:
    """``canary`` nodes first, then waves twice the size of the one before, in order.

    >>> plan_waves(list("abcdefgh"), 1)
    [['a'], ['b', 'c'], ['d', 'e', 'f', 'g'], ['h']]
    """
    if canary < 1:
        raise ValueError(f"canary must be at least 1, got {canary}")
    waves, size, i = [], canary, 0
    while i < len(nodes):
        waves.append(nodes[i:i + size])
        i += size
        size *= 2
    return waves


@dataclass
class Failure:
    """Why a node failed its wave: the reason, and its ``errors`` event when it sent one."""

    node: str
    reason: str
    event: dict | None = None


@dataclass
class Rollout:
    """The outcome of :func:`fleet_push`.

    Attributes
    ----------
    sha256 : str
        The pushed model's.
    targets : list of str
    waves : list of list of str
        As planned (nodes already serving the model are in none).
    failure : Failure or None
        The node that halted the rollout.
    new, old : list of str
        Target nodes serving the pushed model at the end, and the others.
    """

    sha256: str
    targets: list[str]
    waves: list[list[str]]
    failure: Failure | None = None
    new: list[str] = field(default_factory=list)
    old: list[str] = field(default_factory=list)
    serving: dict[str, str] = field(default_factory=dict)  # node -> model it serves

    @property
    def complete(self) -> bool:
        return not self.old and self.failure is None


class FleetPush:
    """One staged rollout over a :class:`FleetWatcher` (see the module docstring).

    Parameters
    ----------
    watcher : FleetWatcher
    payload : bytes
        The signed push message (:func:`trainer.push.prepare_push`).
    sha256 : str
        The model's.
    soak : float
        Seconds each wave must run the new model before the next wave.
    max_error_rate : float
        Highest (rejected + dropped) / received messages over the soak.
    timeout : float
        Seconds to wait for each node's answer to the push.
    say : callable
        Progress lines (``print``).
    """

    def __init__(self, watcher: FleetWatcher, payload: bytes, sha256: str, *, soak: float,
                 max_error_rate: float, timeout: float = 60.0, say=print):
        self.watcher = watcher
        self.payload = payload
        self.sha256 = sha256
        self.soak = soak
        self.max_error_rate = max_error_rate
        self.timeout = timeout
        self.say = say

    def run_wave(self, wave: list[str]) -> Failure | None:
        """Push to every node of ``wave`` and check them; the first failure, or None."""
        baselines = {name: self._baseline(name) for name in wave}
        sent = time.monotonic()
        for name in wave:
            publish_confirmed(self.watcher.client, topics.node_topic(topics.MODEL, name),
                              self.payload, timeout=30.0)
        accepted = {}
        for name in wave:
            failure = self._accepted(name, sent)
            if failure is not None:
                return failure
            accepted[name] = time.monotonic()
            self.say(f"  {name}: accepted, serving sha256 {self.sha256[:12]}")
        if self.soak <= 0:
            return None
        self.say(f"  soaking {self.soak:g} s")
        for name in wave:
            failure = self._soaked(name, accepted[name], baselines[name])
            if failure is not None:
                return failure
        return None

    def _baseline(self, name: str) -> dict | None:
        """The node's latest stats before the push: the soak's error rate starts from them.

        A node that has published none yet (just started) gets one stats interval to do so;
        without any, the soak judges its counters since it started.
        """
        node = self.watcher.node(name)
        if self.soak > 0 and node.stats is None:
            interval = float((node.info or {}).get("stats_interval") or 30.0)
            self.watcher.wait(lambda: node.stats is not None, interval + 5.0)
        return node.stats

    def _answer(self, node: Node, since: float) -> tuple[str, dict] | None:
        """The node's first answer to our push after ``since``: accepted or rejected."""
        for when, event in node.events:
            if when < since:
                continue
            kind = event.get("event")
            model = event.get("model") or {}
            if kind == "model_accepted" and model.get("sha256") == self.sha256:
                return "accepted", event
            if kind == "model_rejected" and event.get("origin") == "push":
                return "rejected", event
        return None

    def _accepted(self, name: str, since: float) -> Failure | None:
        node = self.watcher.node(name)
        w = self.watcher
        # Predicates run under the watcher's lock (node.events is appended to meanwhile).
        answer = w.wait(lambda: self._answer(node, since)
                        or (node.status == "offline" and ("offline", None)), self.timeout)
        if not answer:
            return Failure(name, f"no answer to the push within {self.timeout:g} s (is it "
                                 "running with --trusted-key for this signing key?)")
        kind, event = answer
        if kind == "offline":
            return Failure(name, "went offline while the model was being pushed")
        if kind == "rejected":
            return Failure(name, f"refused the model: {event.get('cause')}: "
                                 f"{event.get('detail')}", event)
        if not w.wait(lambda: node.sha256 == self.sha256, 10.0):
            return Failure(name, f"accepted the model but its info still says sha256 "
                                 f"{node.sha256}", event)
        return None

    def _rolled_back(self, node: Node, since: float) -> Failure | None:
        for when, event in node.events:
            failed = event.get("failed") or {}
            if (when >= since and event.get("event") == "model_rolled_back"
                    and failed.get("sha256") == self.sha256):
                return Failure(node.name, f"rolled the model back: {event.get('detail')}", event)
        return None

    def _trouble(self, node: Node, since: float) -> Failure | None:
        """A rollback of our model, going offline, or another model, since ``since``."""
        rolled = self._rolled_back(node, since)
        if rolled is not None:
            return rolled
        if node.status != "online":
            return Failure(node.name, f"is {node.status or 'gone'} during the soak")
        if node.sha256 != self.sha256:
            return Failure(node.name, f"serves sha256 {node.sha256} again during the soak")
        return None

    def _soaked(self, name: str, accepted: float, baseline: dict | None) -> Failure | None:
        node = self.watcher.node(name)
        w = self.watcher
        end = accepted + self.soak
        failure = w.wait(lambda: self._trouble(node, accepted), end - time.monotonic())
        if failure:
            # A rollback re-publishes the info just before its errors event: wait for the event.
            return w.wait(lambda: self._rolled_back(node, accepted), 2.0) or failure
        # Stats published after the soak ended: they cover the whole soak.
        interval = float((node.info or {}).get("stats_interval") or 30.0)
        fresh = w.wait(lambda: self._trouble(node, accepted) or node.stats_seen >= end,
                       2 * interval + 5.0)
        if not fresh:
            return Failure(name, f"published no stats within {2 * interval + 5:g} s of the "
                                 "soak's end")
        if isinstance(fresh, Failure):
            return w.wait(lambda: self._rolled_back(node, accepted), 2.0) or fresh
        return self._judge(name, baseline or {}, node.stats or {})

    def _judge(self, name: str, before: dict, after: dict) -> Failure | None:
        """Inferences by the new model and an error rate under the bound, between two stats."""
        if (after.get("model") or {}).get("sha256") != self.sha256:
            return Failure(name, "its stats after the soak are not from the new model")

        def delta(key):
            return (after.get(key) or 0) - (before.get(key) or 0)

        # --shard daemons receive every device's messages and drop the others' unparsed.
        inferences, received = delta("inferences"), delta("messages_in") - delta("not_mine")
        errors = delta("rejected_total") + delta("drops")
        if inferences <= 0:
            return Failure(name, f"made no inferences during the {self.soak:g} s soak (no "
                                 f"input? {received} messages received); use --soak 0 to "
                                 "skip the check on a quiet site")
        rate = errors / received if received > 0 else 0.0
        if rate > self.max_error_rate:
            rejected = after.get("rejected") or {}
            return Failure(name, f"error rate {rate:.1%} over the soak ({errors} of {received} "
                                 f"messages rejected or dropped; rejected by reason "
                                 f"{rejected}) is above --max-error-rate "
                                 f"{self.max_error_rate:g}")
        self.say(f"  {name}: {inferences} inferences, error rate {rate:.1%} over the soak")
        return None


def fleet_push(settings: BrokerSettings, model_path, key_path, *, nodes: list[str] | None,
               canary: int = 1, soak: float = 30.0, max_error_rate: float = 0.01,
               timeout: float = 60.0, discover: float = 2.0, dry_run: bool = False,
               say=print) -> Rollout:
    """Sign ``model_path`` once and roll it out in waves (see the module docstring).

    Parameters
    ----------
    settings : BrokerSettings
    model_path, key_path : path
        The model and the signing key.
    nodes : list of str or None
        The nodes, in rollout order (the first ``canary`` are the canaries); None: every
        node with a retained ``info``, sorted by name.
    canary, soak, max_error_rate, timeout :
        See :class:`FleetPush`.
    discover : float
        Seconds to listen for retained ``info``/``status`` before planning.
    dry_run : bool
        Plan and print, push nothing.

    Returns
    -------
    Rollout

    Raises
    ------
    PushError
        Before anything is pushed: a node is unknown, offline or has remote push off; the
        broker cannot be reached. During the rollout: the broker refused a push.
    SignatureError
        The key cannot sign.
    """
    if not 0.0 <= max_error_rate <= 1.0:
        raise PushError(f"--max-error-rate must be between 0 and 1, got {max_error_rate}")
    if soak < 0:
        raise PushError(f"--soak must be 0 or more seconds, got {soak}")
    if canary < 1:
        raise PushError(f"--canary must be at least 1, got {canary}")
    for name in nodes or ():
        check_node(name)
    if nodes is not None and len(set(nodes)) != len(nodes):
        raise PushError(f"--nodes names a node twice: {nodes}")
    payload, signature = prepare_push(model_path, key_path)  # signed once, for every node
    sha = signature.sha256
    watcher = watch(settings)
    try:
        # Retained info, status and stats arrive at once; --all cannot know when it has them.
        watcher.wait(lambda: nodes is not None and all(
            name in watcher.nodes and watcher.nodes[name].info and watcher.nodes[name].status
            and watcher.nodes[name].stats for name in nodes), discover)
        with watcher.cond:
            seen = dict(watcher.nodes)
        targets = sorted(n for n, node in seen.items() if node.info) if nodes is None else nodes
        if not targets:
            raise PushError(f"no node has published {topics.PREFIX}/<node>/info on this broker "
                            f"within {discover:g} s: are the daemons running (a version with "
                            "fleet support)?")
        problems = []
        for name in targets:
            node = seen.get(name)
            if node is None or node.info is None:
                problems.append(f"{name}: no info published (unknown node, or an older daemon)")
            elif node.status != "online":
                problems.append(f"{name}: {node.status or 'status unknown'}")
            elif not node.info.get("push_enabled", True):
                problems.append(f"{name}: remote push is off (start it with --trusted-key)")
        if problems:
            raise PushError("cannot roll out, nothing was pushed: " + "; ".join(problems))
        done = [n for n in targets if seen[n].sha256 == sha]
        waves = plan_waves([n for n in targets if n not in done], canary)
        rollout = Rollout(sha, list(targets), waves)
        say(f"model {describe(signature)}")
        say(f"{len(targets)} node(s); already serving it: {', '.join(done) or 'none'}")
        for i, wave in enumerate(waves, 1):
            say(f"wave {i}/{len(waves)}{' (canary)' if i == 1 else ''}: {', '.join(wave)}")
        say(f"each wave: model_accepted within {timeout:g} s, then "
            + (f"{soak:g} s with inferences and errors under {max_error_rate:.1%}" if soak
               else "no soak"))
        if dry_run:
            _settle(rollout, watcher)
            return rollout
        push = FleetPush(watcher, payload, sha, soak=soak, max_error_rate=max_error_rate,
                         timeout=timeout, say=say)
        for i, wave in enumerate(waves, 1):
            say(f"wave {i}/{len(waves)}: pushing to {', '.join(wave)}")
            rollout.failure = push.run_wave(wave)
            if rollout.failure is not None:
                break
        if rollout.failure is not None:
            time.sleep(0.5)  # a node that rolled back re-publishes its info: let it arrive
        _settle(rollout, watcher)
        return rollout
    finally:
        close(watcher.client)


def _settle(rollout: Rollout, watcher: FleetWatcher) -> None:
    """Sort the targets into new and old model by what their ``info`` says they serve."""
    with watcher.cond:
        for name in rollout.targets:
            node = watcher.nodes[name]
            (rollout.new if node.sha256 == rollout.sha256 else rollout.old).append(name)
            rollout.serving[name] = node.model_label


def report(rollout: Rollout) -> str:
    """The closing lines of ``fleet push``: outcome, failing node and event, old vs new."""
    lines = []
    if rollout.failure is not None:
        f = rollout.failure
        lines.append(f"HALTED: {f.node} {f.reason}")
        if f.event is not None:
            lines.append(f"  its errors event: {json.dumps(f.event, sort_keys=True)}")
        lines.append("  later waves were not pushed")
    elif rollout.complete:
        lines.append(f"done: all {len(rollout.targets)} node(s) serve sha256 "
                     f"{rollout.sha256[:12]}")
    lines.append(f"  on the new model: {', '.join(rollout.new) or 'none'}")
    old = [f"{n} ({rollout.serving.get(n, '?')})" for n in rollout.old]
    lines.append(f"  on the old model: {', '.join(old) or 'none'}")
    return "\n".join(lines)
