"""The Node: components by name, their start/stop order, the clock and the event hub.

Modelled on Klipper's printer object and Moonraker's components: a feature is a
small module with one component class that registers itself with the node and
talks to others through events or a narrow method, never through their fields.

Lifetimes: components start in the order they were added and stop in reverse
order, so a component may rely on anything added before it in ``start()`` and
until the end of its ``stop()``.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from node.clock import Clock
from node.events import EVENT_CATALOGUE
from node.section import Section

log = logging.getLogger(__name__)

EventHandler = Callable[[BaseModel], Awaitable[None] | None]
C = TypeVar("C", bound="Component")


def _default_node_id() -> str:
    host = socket.gethostname().split(".")[0].lower()
    return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in host) or "node"


class NodeSection(Section):
    """``[node]``: who this node is and where it keeps its state."""

    id: str = Field(default_factory=_default_node_id, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                    description="node id: MQTT topics, hub ledger, logs")
    state_dir: Path = Field(Path("var"), description="store, files, control socket, overrides")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


async def wait_until_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; True if it was set.

    Why not ``asyncio.wait_for(event.wait(), t)`` in a loop: on Python 3.11 it can swallow a
    cancellation that arrives as the wait completes (CPython gh-86296), and a component's task
    that never sees its cancel keeps the daemon from stopping.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
        return True
    except TimeoutError:
        return False


class Component:
    """Base class of every long-lived part of the daemon.

    Subclasses set ``name`` (also their key in ``printnode status``) and ``section`` (the
    node.toml table they read, or None), take ``(node, their section, collaborators...)`` in
    ``__init__`` (no I/O there; never the whole config), open their resources in ``start()``
    and release them in ``stop()``.  ``status()`` returns a JSON-able summary.
    """

    name: str = "component"
    #: the node.toml table this component reads (its ``config``); None: it reads none
    section: str | None = None

    def __init__(self, node: Node, config: Section | None = None) -> None:
        self.node = node
        self.config = config

    async def start(self) -> None:
        """Open resources, spawn tasks.  Called once, in add order."""

    async def stop(self) -> None:
        """Cancel tasks, close resources.  Called once, in reverse order; must not raise."""

    def status(self) -> dict[str, Any]:
        return {}


class Node:
    """Holds the components, the clock and the event hub of one running daemon."""

    def __init__(self, identity: NodeSection, clock: Clock) -> None:
        self.identity = identity
        self.clock = clock
        self._components: dict[str, Component] = {}
        self._handlers: dict[str, list[EventHandler]] = defaultdict(list)
        self._started: list[Component] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: problems the node started with anyway, in plain words (an override file set aside):
        #: shown by ``status`` and sent to the hub in the hello
        self.problems: list[str] = []

    @property
    def id(self) -> str:
        """The node's id ([node] id): MQTT topics, the hub's ledger, logs."""
        return self.identity.id

    # --- components -------------------------------------------------------------------------
    def add(self, component: C) -> C:
        if component.name in self._components:
            raise ValueError(f"component {component.name!r} added twice")
        self._components[component.name] = component
        return component

    def get(self, name: str, kind: type[C] = Component) -> C:  # type: ignore[assignment]
        component = self._components[name]
        if not isinstance(component, kind):
            raise TypeError(f"component {name!r} is a {type(component).__name__}, not {kind.__name__}")
        return component

    def lookup(self, name: str) -> Component | None:
        return self._components.get(name)

    @property
    def components(self) -> list[Component]:
        return list(self._components.values())

    async def start(self) -> None:
        for component in self._components.values():
            log.debug("starting %s", component.name)
            await component.start()
            self._started.append(component)

    async def stop(self) -> None:
        for component in reversed(self._started):
            try:
                await component.stop()
            except Exception:  # a failing stop must not keep the others running
                log.exception("component %s failed to stop cleanly", component.name)
        self._started.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- events -----------------------------------------------------------------------------
    def register_event_handler(self, event: str, handler: EventHandler) -> None:
        if event not in EVENT_CATALOGUE:
            raise KeyError(f"unknown event {event!r}; add it to node/events.py first")
        self._handlers[event].append(handler)

    async def send_event(self, event: str, payload: BaseModel) -> None:
        """Deliver ``payload`` to every handler of ``event``, in registration order.

        A failing handler is logged and does not stop delivery to the others.
        """
        expected = EVENT_CATALOGUE.get(event)
        if expected is None:
            raise KeyError(f"unknown event {event!r}")
        if not isinstance(payload, expected):
            raise TypeError(f"event {event!r} carries {expected.__name__}, not {type(payload).__name__}")
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(payload)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("handler %r of event %s failed", handler, event)

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        """Run a background task owned by the node: logged if it dies, cancelled at stop."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("task %s died: %r", name, t.exception(), exc_info=t.exception())

        task.add_done_callback(_done)
        return task
