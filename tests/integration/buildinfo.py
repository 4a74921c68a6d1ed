"""Facts about a build the runner and the tests both need (no harness import: run.py uses
this before FV_BUILD is set)."""


def is_sanitized(binary):
    """ASan/UBSan builds are several times slower: deadlines are stretched for them."""
    try:
        with open(binary, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"AddressSanitizer" in data or b"__asan_init" in data or b"__ubsan_" in data
