"""
What starting would find wrong with the files a service writes, found
without creating or opening anything: `suite check` asks it of every
service, so that a config is known good before a deploy, not at its start.
"""

import os


def cannot_write(path: str) -> str | None:
    """Why this process could not create or append to the file PATH; None when it could."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "cannot open: is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "cannot open: not writable by this user"
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):  # the writer creates the missing directories
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot open: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot open: {parent} is not writable by this user"
    return None
