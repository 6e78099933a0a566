"""The one JSON body parser of our routes.

``json.loads`` accepts escapes of lone surrogates (``"\\ud800"``) and returns a ``str``
that cannot be encoded as UTF-8: stored, it breaks every later answer that renders it
(issue 11). Such a body is refused here, at the boundary, as ``invalid-json``, with a
detail that does not echo the bad text.
"""

from __future__ import annotations

import json
from typing import Any

from ..domain.errors import Invalid


def load_json(raw: bytes) -> Any:
    """Parse ``raw``; raise ``Invalid`` (400 ``invalid-json``) when it is not JSON or holds
    a string (value or key) that does not encode as UTF-8."""
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested too deep: 400
        raise Invalid(str(exc), code="invalid-json") from exc
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Invalid(
            "the body holds a string that is not valid Unicode (an escaped lone UTF-16 "
            "surrogate); strings must encode as UTF-8",
            code="invalid-json",
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise Invalid(str(exc), code="invalid-json") from exc
    return body
