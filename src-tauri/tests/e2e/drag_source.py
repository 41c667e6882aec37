"""A GTK window that offers files by drag and drop, for the desktop end-to-end test.

Usage: /usr/bin/python3 drag_source.py X Y FILE...

Shows a small window at (X, Y); dragging from it (xdotool: mousedown, moves, mouseup) drops the
files' URIs, as a file manager does. Prints "ready" once the window is mapped, then "failed" if
a drag is refused and "done" when a drag ended. The target fetches the URIs from this process
after the drop, so keep it running until "done". Run with Debian's python3 (python3-gi).
"""

import sys

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk, GLib, Gtk  # noqa: E402

x, y = int(sys.argv[1]), int(sys.argv[2])
uris = [GLib.filename_to_uri(path, None) for path in sys.argv[3:]]

window = Gtk.Window(title="brightrun-drag-source")
window.set_default_size(240, 160)
window.move(x, y)
box = Gtk.EventBox()
box.add(Gtk.Label(label="drag me"))
window.add(box)

box.drag_source_set(Gdk.ModifierType.BUTTON1_MASK, [], Gdk.DragAction.COPY)
box.drag_source_add_uri_targets()


def on_get(_widget, _context, data, _info, _time):
    data.set_uris(uris)


def on_failed(_widget, _context, result):
    print(f"failed {result.value_nick}", flush=True)
    return False


def on_end(*_):
    print("done", flush=True)


box.connect("drag-data-get", on_get)
box.connect("drag-failed", on_failed)
box.connect("drag-end", on_end)
window.connect("destroy", Gtk.main_quit)


def on_map(*_):
    print("ready", flush=True)


window.connect("map-event", on_map)
window.show_all()
Gtk.main()
