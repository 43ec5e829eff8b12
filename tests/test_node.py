import asyncio

import pytest

from node.clock import ManualClock
from node.events import EVENT_CATALOGUE, PlateCleared, QueueChanged
from node.node import Component, Node, NodeSection


class Recorder(Component):
    def __init__(self, node: Node, name: str, log: list[str], fail_stop: bool = False) -> None:
        super().__init__(node)
        self.name = name
        self.log = log
        self.fail_stop = fail_stop

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError("stop failed")


def test_components_start_in_order_and_stop_in_reverse_even_if_one_fails() -> None:
    log: list[str] = []
    node = Node(NodeSection(), ManualClock())
    for name, fail in (("store", False), ("printer", True), ("control", False)):
        node.add(Recorder(node, name, log, fail_stop=fail))

    asyncio.run(node.start())
    asyncio.run(node.stop())
    assert log == ["start store", "start printer", "start control", "stop control", "stop printer", "stop store"]


def test_duplicate_component_refused() -> None:
    node = Node(NodeSection(), ManualClock())
    node.add(Recorder(node, "a", []))
    with pytest.raises(ValueError):
        node.add(Recorder(node, "a", []))


def test_events_are_checked_against_the_catalogue_and_handlers_are_isolated() -> None:
    node = Node(NodeSection(), ManualClock())
    got: list[object] = []

    def broken(_payload: object) -> None:
        raise RuntimeError("handler bug")

    async def good(payload: object) -> None:
        got.append(payload)

    node.register_event_handler("plate_cleared", broken)
    node.register_event_handler("plate_cleared", good)
    with pytest.raises(KeyError):
        node.register_event_handler("no_such_event", good)
    payload = PlateCleared(t_s=1.0, source="cli")
    asyncio.run(node.send_event("plate_cleared", payload))
    assert got == [payload]
    with pytest.raises(TypeError):
        asyncio.run(node.send_event("plate_cleared", QueueChanged(job_id="x", action="added")))


def test_catalogue_models_are_frozen_pydantic_models() -> None:
    for name, model in EVENT_CATALOGUE.items():
        assert model.model_config.get("frozen"), name
        assert model.__doc__, f"event {name} needs a docstring saying who sends it"


def test_wait_until_set_times_out_returns_and_lets_a_cancel_through() -> None:
    from node.node import wait_until_set

    async def scenario() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_until_set(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        was_set = await wait_until_set(event, 5)
        waiter = asyncio.create_task(wait_until_set(asyncio.Event(), 60))
        await asyncio.sleep(0.01)
        waiter.cancel()
        try:
            await waiter
            cancelled = False
        except asyncio.CancelledError:
            cancelled = True
        return timed_out, was_set, cancelled

    assert asyncio.run(scenario()) == (False, True, True)
