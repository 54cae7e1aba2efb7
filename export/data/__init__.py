"""Training data for the default LMDM, rendered from material that ships in packages.

Sources: the music21 corpus (all Bach chorales and other public-domain collections) played by
FluidSynth with Debian's General MIDI soundfonts, each voice also rendered alone as a stem;
procedural GM drum grooves; the CC0 loops of Debian's sonic-pi-samples. See
``render_corpus`` for the output layout and ``DataConfig`` for every setting.
"""

from lmdm_export.data.config import DataConfig, load_config
from lmdm_export.data.defaults import default_config
from lmdm_export.data.records import validate_record
from lmdm_export.data.render import RenderSummary, render_corpus

__all__ = ["DataConfig", "RenderSummary", "default_config", "load_config", "render_corpus",
           "validate_record"]
