"""A small key-value store with an append-only log."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Entry:
    key: str
    value: str
    deleted: bool = False


@dataclass
class Store:
    path: Path
    index: dict[str, Entry] = field(default_factory=dict)

    def load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                entry = Entry(record["key"], record["value"], record.get("deleted", False))
                self.index[entry.key] = entry

    def get(self, key: str, default: str | None = None) -> str | None:
        entry = self.index.get(key)
        if entry is None or entry.deleted:
            return default
        return entry.value

    def put(self, key: str, value: str) -> None:
        entry = Entry(key, value)
        self._append(entry)
        self.index[key] = entry

    def delete(self, key: str) -> bool:
        if key not in self.index:
            return False
        self._append(Entry(key, "", deleted=True))
        del self.index[key]
        return True

    def _append(self, entry: Entry) -> None:
        record = {"key": entry.key, "value": entry.value, "deleted": entry.deleted}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def compact(store: Store) -> int:
    """Rewrite the log with live entries only; return how many records were dropped."""
    live = [entry for entry in store.index.values() if not entry.deleted]
    with open(store.path, encoding="utf-8") as f:
        before = sum(1 for _ in f)
    tmp = store.path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for entry in live:
            f.write(json.dumps({"key": entry.key, "value": entry.value}) + "\n")
    tmp.replace(store.path)
    return before - len(live)


if __name__ == "__main__":
    store = Store(Path("data.log"))
    store.load()
    store.put("name", "example")
    print(store.get("name"))
