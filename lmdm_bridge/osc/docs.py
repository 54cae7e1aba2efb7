"""Generate ``docs/osc.md`` from the address table: ``python -m lmdm_bridge.osc.docs >
docs/osc.md``. A test fails when the committed file differs from :func:`render`'s output.

The reference is rendered for the default :class:`~lmdm_bridge.osc.table.TableSettings` (SAO
Small geometry) and :data:`EXAMPLE_CHAINS`; a running daemon builds the same rows from its own
bundle and effect chains.
"""

from __future__ import annotations

import sys

from lmdm_bridge.osc.server import LOOPBACK, OscConfig
from lmdm_bridge.osc.table import REPLIES, STATUS_KEYS, Row, build_table, format_number

# The chains the fx section shows: the shape the audio side describes its pedalboard chains in.
EXAMPLE_CHAINS = (
    ("pre", "gain", {"gain_db": (-24.0, 24.0, 0.0)}),
    ("post", "reverb", {"room_size": (0.0, 1.0, 0.3), "wet_level": (0.0, 1.0, 0.2)}),
    ("post", "limiter", {"threshold_db": (-24.0, 0.0, -1.0)}),
)

_INTRO = f"""\
# OSC reference

<!-- Generated from lmdm_bridge/osc/table.py by `python -m lmdm_bridge.osc.docs > docs/osc.md`;
     edit the table, not this file (a test fails when they differ). -->

`lmdm-bridge serve` listens for OSC 1.0 over UDP on `--osc-host` (default
`{OscConfig.host}`) port `--osc-port` ({OscConfig.port}) and answers on the sender's host at
`--reply-port` ({OscConfig.reply_port}), and to every port that host subscribed with
`/lmdm/subscribe`. Only senders inside `--allow CIDR ...` are served
(default: loopback, `{" ".join(LOOPBACK)}`); datagrams from anyone else are ignored and
counted. Listening on the network takes both, e.g. `--osc-host 0.0.0.0 --allow 192.168.1.0/24`.

Conventions for every address:

* **Numbers** may be sent as `i`, `h`, `f` or `d` (Pure Data sends every number as `f`). An
  integer control takes a float only when it is a whole number (`8.0`, not `7.5`).
* **Text** may be one string or several: Pd and Max send each word of a message as its own
  argument (`[oscformat lmdm prompt]` fed `list string ensemble chorale` sends three strings),
  so the arguments are joined with spaces. Numbers among the words are words too (`120 bpm`).
* **Triggers** (play, stop, reset, ping, ...) take no argument, or one number or boolean
  where `0`/false is ignored: a push button sending 1 on press and 0 on release fires once.
* **Bundles** are accepted (nested up to 8 deep). Their time tags are ignored: messages are
  handled on arrival in datagram order, and every change waits for its moment anyway (the
  *takes effect* column: *next block* means the next block boundary, a block being 2.23 s of
  audio with SAO geometry; *immediately* means without waiting for one).
* **Address patterns** (`*`, `?`, `[...]`, `{{...}}`) are not supported: send full addresses.
* **Settings coalesce**: when several values of one setting arrive before the next block, only
  the latest is applied (a fader never queues a backlog). Actions (reset, seed, eject) are all
  applied, in order.
"""

_FX = """\
## Effect parameters

Every parameter of the configured effect chains gets an address
`/lmdm/fx/<chain>/<plugin>/<param>` with one float argument: `<chain>` is `pre` (on the input,
before the model) or `post` (on the generated output), `<plugin>` the plugin's name in the
config, `<param>` the parameter's name. Range and default come from the plugin. Changes take
effect immediately. Two plugins of one name in a chain get `-2`, `-3`, ... after the second and
later names (`gain`, `gain-2`). With these chains:

```
{chains}
```

the addresses are:

{table}
"""

_OUTRO = f"""\
## Errors and limits

Anything that does not fit is answered with `/lmdm/error address reason` (the address is `''`
for a datagram that is not OSC at all) and playback goes on: unknown addresses, wrong types,
out-of-range values, truncated or garbage datagrams. Error replies are limited to
{OscConfig.errors_per_second:g} per second per sender host (bursts of as many); the rest are
counted but not sent. The counters appear in `/lmdm/status`.

`/lmdm/model NAME` only ever loads `NAME` from the configured models folder (`--models-dir`):
names with path separators, `..`, drive letters or a leading dot are rejected, and no OSC
address reads or writes any other path.

## Examples

With liblo's command-line tools (Debian package `liblo-tools`):

```sh
oscdump 9001 &                                           # see the replies
oscsend localhost 9000 /lmdm/prompt s "string ensemble chorale"
oscsend localhost 9000 /lmdm/prompts sfsf "organ chorale" 0.7 "flute chorale" 0.3
oscsend localhost 9000 /lmdm/cfg f 3.5
oscsend localhost 9000 /lmdm/play
oscsend localhost 9000 /lmdm/status
oscsend localhost 9000 /lmdm/subscribe i 9002           # status every second, one message per block
```

In Pure Data vanilla: `[list string ensemble chorale(` → `[oscformat lmdm prompt]` →
`[netsend -u -b]` connected with `[connect localhost 9000(`.
"""


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def _range(row: Row) -> str:
    if row.minimum is None:
        return ""
    return f"{format_number(row.minimum)} .. {format_number(row.maximum)}"


def _default(row: Row) -> str:
    if row.default is None:
        return "—"
    if isinstance(row.default, (int, float)):
        return format_number(row.default)
    return _cell(row.default)


def _rows_table(rows: list[Row]) -> str:
    lines = ["| address | types | range | default | unit | takes effect | what it does |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        types = f"`{row.types}`" if row.types else ""
        lines.append(f"| `{row.address}` | {types} | {_range(row)} | {_default(row)} | "
                     f"{row.unit} | {row.effect} | {_cell(row.help)} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole of ``docs/osc.md``."""
    table = build_table(EXAMPLE_CHAINS)
    fixed = [row for row in table if row.fx is None]
    fx = [row for row in table if row.fx is not None]
    chains = "\n".join(f"{chain:4} {name:8} " + ", ".join(
        f"{param} {low:g}..{high:g} (default {default:g})"
        for param, (low, high, default) in params.items())
        for chain, name, params in EXAMPLE_CHAINS)
    replies = ["| address | types | when |", "|---|---|---|"]
    replies += [f"| `{a}` | {f'`{t}`' if t else ''} | {_cell(h)} |" for a, t, h in REPLIES]
    keys = ["| key | type | meaning |", "|---|---|---|"]
    keys += [f"| `{k}` | `{t}` | {_cell(h)} |" for k, t, h in STATUS_KEYS]
    return "\n".join([
        _INTRO,
        "## Addresses\n",
        _rows_table(fixed),
        "Defaults of `cfg` and `steps` and the range of `eject` come from the loaded bundle "
        "(shown: SAO Small); the default prompt from the daemon's configuration.\n",
        _FX.format(chains=chains, table=_rows_table(fx).rstrip("\n")),
        "## Replies\n",
        "\n".join(replies) + "\n",
        "### `/lmdm/status` keys\n",
        "In this order, each key a string followed by its value:\n",
        "\n".join(keys) + "\n",
        _OUTRO,
    ])


if __name__ == "__main__":
    sys.stdout.write(render())
