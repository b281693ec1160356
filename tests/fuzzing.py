"""Helpers shared by the fuzz tests (checkpoints, stores, dataset files)."""


def json_paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a parsed JSON value, the root first: the places a fuzzer retypes."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_paths(item, (*prefix, i))
