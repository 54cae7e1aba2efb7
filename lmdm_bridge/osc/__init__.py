"""The daemon's OSC control surface: one address table, a UDP server that validates and queues
typed controls, a status snapshot for replies, and the generated reference ``docs/osc.md``.

The daemon builds the table from its effect chains and bundle, starts the server, applies what
:meth:`ControlQueue.drain` returns at block boundaries, keeps :class:`StatusSnapshot` up to date
and calls :meth:`OscServer.notify_block` per generated block.
"""

from lmdm_bridge.osc.controls import (
    Control,
    ControlQueue,
    Eject,
    Play,
    QueueFull,
    Reseed,
    Reset,
    SetCfg,
    SetFx,
    SetGain,
    SetPrompt,
    SetSteps,
    Stop,
    SwitchModel,
)
from lmdm_bridge.osc.server import OscConfig, OscServer, add_arguments, config_from_args
from lmdm_bridge.osc.status import StatusSnapshot
from lmdm_bridge.osc.table import AddressTable, FxPlugin, Row, TableSettings, build_table

__all__ = [
    "AddressTable", "Control", "ControlQueue", "Eject", "FxPlugin", "OscConfig", "OscServer",
    "Play", "QueueFull", "Reseed", "Reset", "Row", "SetCfg", "SetFx", "SetGain", "SetPrompt",
    "SetSteps", "Stop", "StatusSnapshot", "SwitchModel", "TableSettings", "add_arguments",
    "build_table", "config_from_args",
]
