"""The daemon's TOML config: every command-line setting plus the effect chains; flags override
it; unknown keys and wrong types are named."""

from __future__ import annotations

import pytest

from lmdm_bridge.daemon.config import ConfigError, load_config, with_overrides

EXAMPLE = """
bundle = "bundles/default"
prompt = "organ chorale"
autoplay = true
steps = 8
cfg = 2

[osc]
port = 9100
allow = ["127.0.0.0/8", "192.168.1.0/24"]

[audio]
backend = "null"
input = 3
output = "BlackHole"
out_channels = [3, 4]
samplerate = 48000
blocksize = 256

[[fx.post]]
plugin = "reverb"
room_size = 0.4
"""


def test_example_loads_and_flags_override(tmp_path):
    path = tmp_path / "lmdm.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.cfg == 2.0 and isinstance(config.cfg, float)
    assert config.audio.input == 3 and config.audio.out_channels == (3, 4)
    assert config.osc.allow == ("127.0.0.0/8", "192.168.1.0/24")
    assert config.fx.post == ({"plugin": "reverb", "room_size": 0.4},)
    over = with_overrides(config, osc__port=9200, steps=4, prompt=None, audio__blocksize=1024)
    assert (over.osc.port, over.steps, over.prompt, over.audio.blocksize) == \
        (9200, 4, "organ chorale", 1024)
    assert over.osc.allow == config.osc.allow


@pytest.mark.parametrize("text,message", [
    ("steps = 2.5", "steps must be int"),
    ("promt = 'x'", "unknown key(s) promt"),
    ("[osc]\nprt = 1", "osc.prt"),
    ("[audio]\nblocksize = 10", "64..4096"),
    ("[audio]\nsamplerate = 12345", "common device rate"),
    ("[audio]\nin_channels = [0, 1]", "channel numbers from 1"),
    ("[audio]\nbackend = 'alsa'", "device, null or file"),
    ("[audio]\ninput = 2.5", "str or int"),
    ("autoplay = 'yes'", "autoplay must be bool"),
    ("steps = ", "not valid TOML"),
])
def test_bad_values_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
