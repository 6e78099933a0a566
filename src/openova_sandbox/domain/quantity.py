"""Kubernetes resource quantities (``500m``, ``8Gi``, ``1.5G``) as exact decimals.

Only the forms a Sandbox quota and the operator's settings use: a decimal number with an
optional binary (``Ki``..``Ei``) or decimal (``m``, ``k``..``E``) suffix. Exponent forms
(``1e3``) are not accepted; :func:`parse_quantity` answers ``None`` for anything else, so
a caller can skip a check it cannot make instead of guessing.
"""

from __future__ import annotations

import re
from decimal import Decimal

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


def parse_quantity(text: str) -> Decimal | None:
    """The value of ``text`` in base units (cores, bytes), or ``None`` if not a quantity."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        return None
    return Decimal(match[1]) * _FACTORS[match[2] or ""]


def smaller(a: str, b: str) -> str:
    """The smaller of two quantities as written (``a`` when either cannot be read)."""
    qa, qb = parse_quantity(a), parse_quantity(b)
    if qa is None or qb is None:
        return a
    return b if qb < qa else a
