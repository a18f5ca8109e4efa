"""`sound-generator preset`: list, show, save or delete timbre presets (see synth/presets.py).

    sound-generator preset list                       one name per line (user and factory)
    sound-generator preset show NAME                  the preset as JSON
    sound-generator preset save NAME [--source S] [--qualities Q ...] [--latent 16 numbers]
                                     [--description TEXT]
    sound-generator preset delete NAME                a user preset (factory presets are read-only)

Each takes `--presets-dir DIR` (default: the user data folder, the one `serve` uses). Exit
status 0 on success, 1 for a preset that is not there or cannot be deleted or written, 2 for
invalid input (the message names the field).
"""

from __future__ import annotations

import argparse
import json
import sys

from synth.params import LATENT_DIM, QUALITIES, SOURCES
from synth.presets import Preset, PresetError, PresetStore, ReadOnlyPreset, UnknownPreset


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--presets-dir", default=None, metavar="DIR",
                        help="the user's presets folder (default: the user data folder, e.g. "
                             "~/.local/share/sound-generator/presets)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="print every preset name, one per line",
                       description="Print every preset name (user and factory), one per line, sorted.")
    show = actions.add_parser("show", parents=[common], help="print one preset as JSON",
                              description="Print one preset as JSON (the file format).")
    show.add_argument("name")
    save = actions.add_parser("save", parents=[common], help="save a timbre as a user preset",
                              description="Save a timbre as a user preset (replaces a user preset of that "
                                          "name; shadows a factory preset of that name).")
    save.add_argument("name")
    save.add_argument("--source", default="acoustic", help=f"one of {', '.join(SOURCES)} (default acoustic)")
    save.add_argument("--qualities", nargs="*", default=[], metavar="Q",
                      help=f"zero or more of {', '.join(QUALITIES)}")
    save.add_argument("--latent", nargs=LATENT_DIM, type=float, default=[0.0] * LATENT_DIM, metavar="X",
                      help=f"the {LATENT_DIM} timbre knobs, each in [-7, 7] (default all 0)")
    save.add_argument("--description", default="", help="one line saying what it sounds like")
    delete = actions.add_parser("delete", parents=[common], help="delete a user preset",
                                description="Delete a user preset (a factory preset it shadowed comes back). "
                                            "Factory presets cannot be deleted.")
    delete.add_argument("name")


def run(args) -> int:
    try:
        store = PresetStore(args.presets_dir)
        if args.action == "list":
            for name in store.list():
                print(name)
        elif args.action == "show":
            print(json.dumps(store.load(args.name).to_dict(), indent=1))
        elif args.action == "save":
            preset = Preset.from_dict({"name": args.name, "source": args.source, "qualities": args.qualities,
                                       "latent_sample": args.latent, "description": args.description})
            path = store.save(preset)
            print(f"saved {preset.name!r} to {path}")
        elif args.action == "delete":
            factory = args.name in store.factory
            store.delete(args.name)
            print(f"deleted {args.name!r}" + (" (the factory preset of that name is back)" if factory else ""))
    except (UnknownPreset, ReadOnlyPreset) as e:
        print(f"preset {args.action}: {e}", file=sys.stderr)
        return 1
    except PresetError as e:
        print(f"preset {args.action}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"preset {args.action}: {e.filename or args.presets_dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
