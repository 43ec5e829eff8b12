"""``printnode run``: assemble the Node from config and run it until told to stop.

Start order (stop is the reverse): store, jobs, analysis, telemetry, planner, [virtual printer], printer,
runner, sync (offline unless ``sync.broker_host`` is set), control API.  READY is announced to systemd once every component has
started.  SIGTERM and SIGINT stop cleanly: the current print is left
``interrupted`` with its checkpoint, never half-written.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import datetime

from node.clock import Clock
from node.config import NodeConfig
from node.control import ControlServer
from node.events import NodeLifecycle
from node.gcode.service import AnalysisService
from node.hw import add_gpio_components
from node.jobs import Jobs
from node.node import Node
from node.power.power_guard import PowerGuard
from node.plan.planner import Planner
from node.power.telemetry import Telemetry
from node.printer.printer import Printer
from node.printer.virtualproc import VirtualPrinterProcess
from node.printer.profile import load_profile
from node.runner import JobRunner
from node.field.sdnotify import notify
from node.store import Store
from node.field.storage import StoreCare
from node.field.timesync import TimeSync, simulated_clock
from node.field.watchdog import Watchdog
from node.sync.client import Sync

log = logging.getLogger(__name__)


def clock_start_s(config: NodeConfig, now_s: float) -> float | None:
    """``clock.start`` as POSIX seconds: None for 'now'; 'HH:MM' is today at that local time at [site]."""
    value = config.clock.start
    if value == "now":
        return None
    if len(value) == 5 and value[2] == ":":
        from zoneinfo import ZoneInfo

        local = datetime.fromtimestamp(now_s, tz=ZoneInfo(config.site.timezone))
        return local.replace(hour=int(value[:2]), minute=int(value[3:]), second=0, microsecond=0).timestamp()
    return datetime.fromisoformat(value).timestamp()


def make_clock(config: NodeConfig) -> Clock:
    return Clock(time_scale=config.clock.time_scale, sim_start_s=clock_start_s(config, time.time()))


def build_node(config: NodeConfig, clock: Clock, store: Store) -> Node:
    """Wire the components in their start order."""
    node = Node(config, clock)
    profile = load_profile(config.printer.profile)
    node.add(StoreCare(node, config.storage, store))  # WAL checkpoints, size cap (first: before writers)
    timesync = node.add(TimeSync(node, config.time, simulated_clock(config)))  # may the planner trust the clock?
    jobs = node.add(Jobs(node, store))
    analysis = node.add(AnalysisService(node, config.analysis, store, profile, jobs=jobs))
    telemetry = node.add(Telemetry(node, config.telemetry, store=store))
    planner = node.add(Planner(node, config.planner, site=config.site, array=config.array,
                               forecast=config.forecast, jobs=jobs, battery=config.battery.plant_params(),
                               printer_profile=profile, energy_profile_for=analysis.energy_profile_for,
                               clock_problem=lambda: None if timesync.clock_synchronized else timesync.reason))
    if config.simulated and config.printer.virtual.autostart:
        node.add(VirtualPrinterProcess(node, config))
    printer = node.add(Printer(node, config.printer, store, config.safety))
    runner = node.add(JobRunner(node, config, store, jobs, printer, files_dir=config.state_dir / "files"))
    if config.planner.enabled:
        runner.add_start_gate("energy", planner.start_gate)
        runner.set_job_chooser(planner.next_job_id)
    node.add(PowerGuard(node, config.low_battery, runner, telemetry=telemetry))  # + the telemetry-lost policy
    add_gpio_components(node, config, runner, printer)  # after every other start gate: the relay's must be last
    node.add(Sync(node, config.sync, store, jobs, files_dir=config.state_dir / "files"))
    node.add(ControlServer(node, config, jobs))
    node.add(Watchdog(node, config.watchdog, store))  # last, so it pings only once all started
    return node


async def run_daemon(config: NodeConfig, until_idle: bool = False, timeout_s: float | None = None) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    clock = make_clock(config)
    store = Store(config.state_dir / "printnode.sqlite3").open()
    node = build_node(config, clock, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exit_code = 0
    try:
        await node.start()
        await node.send_event("node_lifecycle", NodeLifecycle(phase="ready", t_s=clock.time()))
        notify("READY=1\nSTATUS=running")
        log.info("printnode %s running (state %s, time scale %g)", config.node.id, config.state_dir, clock.time_scale)
        waiters = [asyncio.ensure_future(stop.wait())]
        if until_idle:
            runner = node.get("runner", JobRunner)
            waiters.append(asyncio.ensure_future(_wait_idle(runner)))
        done, pending = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        if not done:
            log.error("gave up after %.0f s (--timeout)", timeout_s or 0)
            exit_code = 3
        elif until_idle and not stop.is_set():
            log.info("queue empty: stopping (--until-idle)")
    except Exception:
        log.exception("printnode failed")
        exit_code = 1
    finally:
        notify("STOPPING=1")
        await node.send_event("node_lifecycle", NodeLifecycle(phase="stopping", t_s=clock.time()))
        await node.stop()
        store.close()
    return exit_code


async def _wait_idle(runner: JobRunner) -> None:
    """Idle twice, a moment apart: a job finishing and the next starting must not look idle."""
    while True:
        await runner.idle.wait()
        await asyncio.sleep(0.5)
        if runner.idle.is_set():
            return
