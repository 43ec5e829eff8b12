"""``printnode run``: assemble the Node from config and run it until told to stop.

This is the one place that reads the whole config: each component gets its own section and its
named collaborators (ARCHITECTURE.md, "Components and events").  Start order is the order of
``build_node`` (stop is the reverse), after the state directory's lock (one daemon per state
directory: node.field.instance_lock).  READY is announced to systemd once every component has
started.  SIGTERM and SIGINT stop cleanly: the current print is left ``interrupted`` with its
checkpoint, never half-written.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time

from node.clock import Clock, clock_start_s
from node.config import NodeConfig, write_override
from node.control import ControlServer
from node.events import NodeLifecycle
from node.field.instance_lock import AlreadyRunning, StateDirLock
from node.field.sdnotify import notify
from node.field.storage import StorageCare
from node.field.timesync import TimeSync
from node.field.watchdog import Watchdog
from node.gate import JobGate
from node.gcode.service import AnalysisService
from node.hw import add_gpio_components
from node.jobs import Jobs
from node.node import Node
from node.plan.planner import Planner
from node.power.power_guard import PowerGuard
from node.power.telemetry import Telemetry
from node.printer.printer import Printer
from node.printer.profile import PrinterProfile, load_profile
from node.printer.virtualproc import VirtualPrinterProcess
from node.runner import JobRunner
from node.store import Store, StoreUnusable
from node.sync.client import Sync
from node.sync.protocol import NodeSite

log = logging.getLogger(__name__)


def make_clock(config: NodeConfig) -> Clock:
    start_s = clock_start_s(config.clock, config.site.timezone, time.time())
    return Clock(time_scale=config.clock.time_scale, sim_start_s=start_s)


def node_site(config: NodeConfig) -> NodeSite:
    """The node's place and array as its hello reports them to the hub (map, per-site forecasts)."""
    return NodeSite(latitude_deg=config.site.latitude, longitude_deg=config.site.longitude,
                    altitude_m=config.site.altitude_m, timezone=config.site.timezone,
                    array_peak_w=config.array.peak_w, array_tilt_deg=config.array.tilt_deg,
                    array_azimuth_deg=config.array.azimuth_deg)


def build_node(config: NodeConfig, clock: Clock, store: Store) -> Node:
    """Wire the components in their start order."""
    node = Node(config.node, clock)
    if config.overrides_problem:
        node.problems.append(config.overrides_problem)
    profile = load_profile(config.printer.profile)
    node.add(StorageCare(node, config.storage, store))  # WAL checkpoints, size cap (first: before writers)
    timesync = node.add(TimeSync(node, config.time, config.simulated_clock))  # may the planner trust the clock?
    jobs = node.add(Jobs(node, store))
    analysis = node.add(AnalysisService(node, config.analysis, store, profile, jobs=jobs))
    telemetry = node.add(make_telemetry(node, config, store, profile))
    planner = node.add(Planner(node, config.planner, site=config.site, array=config.array,
                               forecast=config.forecast, jobs=jobs, battery=config.battery.plant_params(),
                               printer_profile=profile, energy_profile_for=analysis.energy_profile_for,
                               clock_problem=lambda: None if timesync.clock_synchronized else timesync.reason,
                               store=store))
    virtual = None
    if config.simulated and config.printer.virtual.autostart:
        virtual = node.add(VirtualPrinterProcess(node, config.printer.virtual, profile=config.printer.profile,
                                                 port_file=config.state_dir / "virtual-printer.port"))
    printer = node.add(Printer(node, config.printer, store, config.safety, virtual=virtual))
    gate = make_gate(config, profile)  # the one gate: the runner's queue and resume paths, and the hub's jobs
    runner = node.add(make_runner(node, config, store, jobs, printer, profile, gate=gate))
    if config.planner.enabled:
        runner.add_start_gate("energy", planner.start_gate)
        runner.set_job_chooser(planner.next_job_id)
    node.add(PowerGuard(node, config.low_battery, runner, telemetry=telemetry))  # + the telemetry-lost policy
    add_gpio_components(node, config.gpio, runner, printer)  # after every other start gate: the relay's must be last
    node.add(Sync(node, config.sync, store, jobs, files_dir=config.files_dir, max_file_bytes=config.jobs.max_file_bytes,
                  reserve_bytes=config.jobs.reserve_bytes, gate=gate, job_control=runner, printer_profile=profile,
                  site=node_site(config)))
    control = node.add(ControlServer(node, config.control, jobs=jobs, runner=runner, socket_path=config.control_socket,
                           files_dir=config.files_dir, max_file_bytes=config.jobs.max_file_bytes,
                           reserve_bytes=config.jobs.reserve_bytes,
                           save_setting=functools.partial(write_override, config),
                           plan_snapshot=planner.snapshot))
    if config.web.enabled:  # the page and the slicers' API: commands through control, files through the gate
        from node.web.server import WebServer  # aiohttp loads only when the page is served
        node.add(WebServer(node, config.web, control=control, runner=runner, jobs=jobs,
                           credentials_path=config.web_credentials, files_dir=config.files_dir,
                           max_file_bytes=config.jobs.max_file_bytes, reserve_bytes=config.jobs.reserve_bytes,
                           plan_snapshot=planner.snapshot, timezone=config.site.timezone,
                           printer_profile_name=config.printer.profile, announce_login_link=config.simulated))
    node.add(Watchdog(node, config.watchdog, store))  # last, so it pings only once all started
    return node


def make_telemetry(node: Node, config: NodeConfig, store: Store | None,
                   profile: PrinterProfile | None = None) -> Telemetry:
    """The Telemetry component with what it reads of the other sections (tests build it this way too)."""
    return Telemetry(node, config.telemetry, battery=config.battery, site=config.site, array=config.array,
                     printer_profile=profile or load_profile(config.printer.profile),
                     base_load_w=config.planner.base_load_w, ambient_c=config.analysis.ambient_c,
                     batch_commit_s=config.store.batch_commit_s, store=store)


def make_gate(config: NodeConfig, profile: PrinterProfile | None = None) -> JobGate:
    """The gate every job passes, from ``[safety]`` and the printer's receive buffer."""
    profile = profile or load_profile(config.printer.profile)
    return JobGate.for_printer(config.safety, config.printer, profile.rx_buffer_bytes)


def make_runner(node: Node, config: NodeConfig, store: Store, jobs: Jobs, printer: Printer,
                profile: PrinterProfile | None = None, recheck_s: float = 5.0,
                gate: JobGate | None = None) -> JobRunner:
    """The JobRunner with the sections it reads (tests build it this way too)."""
    profile = profile or load_profile(config.printer.profile)
    return JobRunner(node, config.jobs, printer_config=config.printer, gate=gate or make_gate(config, profile),
                     profile=profile,
                     auto_plate_clear=config.auto_plate_clear, store=store, jobs=jobs, printer=printer,
                     files_dir=config.files_dir, recheck_s=recheck_s)


async def run_daemon(config: NodeConfig, until_idle: bool = False, timeout_s: float | None = None) -> int:
    try:
        lock = StateDirLock(config.state_dir).acquire()  # first: a second daemon must touch nothing
    except AlreadyRunning as exc:
        log.error("%s", exc)
        notify(f"STATUS={exc}")
        return 1
    try:
        return await _run_locked(config, until_idle, timeout_s)
    finally:
        lock.release()


async def _run_locked(config: NodeConfig, until_idle: bool, timeout_s: float | None) -> int:
    clock = make_clock(config)
    try:
        store = Store(config.state_dir / "printnode.sqlite3").open()
    except StoreUnusable as exc:  # stop with the file and the fix: never start on an empty store
        log.error("%s", exc)
        notify(f"STATUS=store unusable: {exc}")
        return 2
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
