"""Index definitions: built-ins seeded on open, user definitions added and removed."""

from __future__ import annotations

from index_builder.engine.definitions import BUILTIN_IDS, IndexDefinition, builtin_definitions
from index_builder.errors import ConflictError, NotFoundError
from index_builder.ops.flags import FlagStore, check_definition
from index_builder.storage.base import Storage


def ensure_builtins(store: Storage) -> None:
    """Store the built-in definitions (refreshing them if the code changed them)."""
    stored = {d.id: d for d, builtin in store.list_definitions() if builtin}
    changed = [(d, True) for d in builtin_definitions() if stored.get(d.id) != d]
    if changed:
        store.put_definitions(changed)  # one write (one version of a lake store)


def add_definition(
    store: Storage,
    definition: IndexDefinition,
    *,
    replace: bool = False,
    flags: FlagStore | None = None,
) -> bool:
    """Add a user definition; returns True when it replaced an existing one.

    Built-in ids are refused; an existing user id needs ``replace`` (its results
    are then rebuilt in full on the next build, as the fingerprint changes). A
    definition using a feature switched off by a flag is refused (409).
    """
    if definition.id in BUILTIN_IDS:
        raise ConflictError(
            f"{definition.id!r} is a built-in index and cannot be redefined", field="id"
        )
    existing = _existing(store, definition.id)
    if existing is not None and not replace:
        raise ConflictError(
            f"index {definition.id!r} already exists (use --replace to redefine it)", field="id"
        )
    check_definition(flags, definition)
    store.put_definition(definition, builtin=False)
    return existing is not None


def _existing(store: Storage, index_id: str) -> tuple[IndexDefinition | None, bool] | None:
    """(definition, builtin) of a stored id, the definition None when the stored one no
    longer validates (it can still be replaced or removed); None when there is none."""
    try:
        found = store.get_definition(index_id)
    except ConflictError:  # stored but no longer valid: a user definition to repair
        return (None, False)
    return None if found is None else (found[0], found[1])


def remove_definition(store: Storage, index_id: str) -> None:
    """Remove a user definition and its results; built-ins are refused (a stored
    definition that no longer validates can be removed)."""
    found = _existing(store, index_id)
    if found is None:
        raise NotFoundError(f"unknown index {index_id!r}", field="index")
    if found[1]:
        raise ConflictError(
            f"{index_id!r} is a built-in index and cannot be removed", field="index"
        )
    store.delete_definition(index_id)
