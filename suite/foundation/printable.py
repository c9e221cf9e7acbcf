"""
Text a client supplied, made safe to print.  A service name, a host, a
description or a syslog field may hold newlines (a forged second log line),
ESC sequences (a terminal that repaints itself), DEL, C1 controls or
Unicode bidi overrides (text that reads backwards).  Wherever such text is
printed (the twistd log, audit events, `suite-client` output) it goes
through L{printable} first, which spells every such character as a Python
escape (`\\n`, `\\x1b`, `\\u202e`), and a backslash as `\\\\`, so what is
shown is unambiguous and on one line.  The cost is linear in the text's
length; text that needs nothing is returned as it is.
"""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _spelled(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """
    TEXT with every character that is not printable (C0 and C1 controls,
    DEL, format characters such as bidi overrides, separators other than
    the space, unpaired surrogates) and every backslash written as an escape.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _spelled(c) for c in text)
