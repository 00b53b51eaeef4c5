"""The file watchers the server asks the client for: the sources it indexes, the ignore files
that decide which are read, and every deletion (a folder deleted is one event)."""

from __future__ import annotations

from lsprotocol import types

SOURCE_SUFFIXES = "py,pyi,js,jsx,mjs,cjs,ts,tsx,mts,cts,go,rs,java,c,h,cc,cpp,cxx,hpp,hh,hxx,cu,cuh"

WATCHERS = [
    types.FileSystemWatcher(glob_pattern=f"**/*.{{{SOURCE_SUFFIXES}}}"),
    types.FileSystemWatcher(glob_pattern="**/.gitignore"),
    types.FileSystemWatcher(glob_pattern="**/*", kind=types.WatchKind.Delete),
]
