"""The builtin text dataset `pydoc`: English prose from the docstrings of Python's own standard library.

Gathered offline at run time with `inspect`, in a fixed order, in a fresh interpreter (`python -I -S`): the same
Python gives the same text whatever the calling process imported or patched (torch.package replaces
inspect.getfile, other libraries sys.excepthook, and a replaced function would lose its docstring).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import subprocess
import sys

# Modules with plenty of prose in their docstrings; importing them has no side effects.
MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "builtins", "calendar", "cmd", "codecs",
    "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "doctest", "email.message", "enum", "filecmp", "fnmatch", "fractions",
    "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser",
    "http.client", "http.cookiejar", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools",
    "json", "locale", "logging", "logging.handlers", "lzma", "mailbox", "math", "mimetypes",
    "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pickletools", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "pydoc", "queue", "random", "re", "reprlib", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver",
    "sqlite3", "statistics", "string", "struct", "subprocess", "symtable", "sys", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "tokenize", "trace", "traceback", "types", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib",
)


def _own_members(module) -> list[tuple[str, object]]:
    """Public classes and functions defined in `module` itself, sorted by name."""
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) in (module.__name__, "_" + module.__name__.rsplit(".", 1)[-1]):
            out.append((name, obj))
    return out


def _docs(module) -> list[str]:
    parts = []
    doc = inspect.getdoc(module)
    if doc:
        parts.append(f"{module.__name__}\n\n{doc}")
    for name, obj in _own_members(module):
        doc = inspect.getdoc(obj)
        if doc:
            parts.append(f"{module.__name__}.{name}\n\n{doc}")
        if inspect.isclass(obj):
            for mname, member in sorted(vars(obj).items()):
                if mname.startswith("_") or not inspect.isroutine(member):
                    continue
                mdoc = member.__doc__  # its own docstring only, not one inherited from a base class
                if isinstance(mdoc, str) and mdoc.strip():
                    parts.append(f"{module.__name__}.{name}.{mname}\n\n{inspect.cleandoc(mdoc)}")
    return parts


@functools.lru_cache(maxsize=1)
def pydoc_text() -> str:
    """The dataset: docstrings of MODULES, their classes, functions and methods, separated by blank lines."""
    out = subprocess.run([sys.executable, "-I", "-S", __file__], capture_output=True, check=True, timeout=120)
    return out.stdout.decode("utf-8")


def _gather() -> str:
    """pydoc_text's text, gathered in this interpreter."""
    parts: list[str] = []
    seen: set[str] = set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a Python built without it (e.g. no sqlite3)
            continue
        for part in _docs(module):
            body = part.split("\n\n", 1)[-1]
            if body not in seen:  # aliases repeat docstrings
                seen.add(body)
                parts.append(part)
    return "\n\n\n".join(parts) + "\n"


if __name__ == "__main__":  # pydoc_text's fresh interpreter
    sys.stdout.buffer.write(_gather().encode("utf-8"))
