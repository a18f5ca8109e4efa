"""sound-generator's synthesis layer: note schema, DDSP signal core, data, models.

This package never imports pythonosc or sounddevice; the live server (osc_server/) talks to it
through `synth.generator` (render a note's parameters -> audio array).
"""

from synth.params import NoteParams

__all__ = ["NoteParams", "get_prediction"]


def __getattr__(name):
    # get_prediction pulls in TensorFlow; import it only when asked for.
    if name == "get_prediction":
        from synth.generator import get_prediction

        return get_prediction
    raise AttributeError(f"module 'synth' has no attribute {name!r}")
