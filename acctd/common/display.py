"""How figures are shown to people, the same in acctctl and in the daemon's
text replies: bytes in IEC binary units (KiB = 1024 B, as quota amounts are
written), three significant digits. Exact counts are in every --json."""

from __future__ import annotations

UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(n: int | float | None) -> str:
    """512 B, 1.50 KiB, 19.1 MiB, 1.94 GiB, 0.98 MiB (not 1000 KiB); None is "-"."""
    if n is None:
        return "-"
    n = int(n)
    if abs(n) < 1024:
        return f"{n} B"
    v, i = n / 1024, 0
    while abs(v) >= 999.5 and i < len(UNITS) - 1:  # 1000 KiB is 0.98 MiB: 3 digits at most
        v, i = v / 1024, i + 1
    a = abs(v)
    digits = 2 if a < 9.995 else 1 if a < 99.95 else 0
    return f"{v:.{digits}f} {UNITS[i]}"
