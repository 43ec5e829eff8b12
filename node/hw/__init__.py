"""Hardware on the Pi's header: GPIO backend, printer power relay, status LED, button and sensors.

Everything reaches pins through :class:`node.hw.gpio.GpioBackend` (simulated
off-Pi, RPi.GPIO on a Pi, imported lazily).  :func:`add_gpio_components`
adds the configured devices to a Node in their start order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.hw.config import GpioSection
    from node.node import Node
    from node.printer.printer import Printer
    from node.runner import JobRunner


def add_gpio_components(node: Node, gpio_config: GpioSection, runner: JobRunner, printer: Printer) -> None:
    """Add the GPIO owner and each configured device (relay, LED, inputs); nothing when none is configured.

    Add after the runner *and after any component that registers a start gate
    (the planner)*: the relay's gate must be the last one, so the printer is
    powered only once every other gate said yes.
    """
    if not any((gpio_config.relay, gpio_config.led, gpio_config.plate_button,
                gpio_config.runout_sensor, gpio_config.door_sensor)):
        return
    from node.hw.gpio import Gpio
    from node.hw.inputs import GpioInputs
    from node.hw.led import StatusLed
    from node.hw.relay import PrinterPower

    gpio = node.add(Gpio(node, gpio_config))
    if gpio_config.plate_button or gpio_config.runout_sensor or gpio_config.door_sensor:
        node.add(GpioInputs(node, gpio_config, gpio, runner))  # its "sensors" gate before the relay's
    power = None
    if gpio_config.relay is not None:
        power = node.add(PrinterPower(node, gpio_config, gpio, runner, printer))
    if gpio_config.led is not None:
        node.add(StatusLed(node, gpio_config, gpio, power))
