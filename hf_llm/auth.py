"""The Hub token: read from HF_TOKEN or the saved login (`huggingface_hub.get_token`), never from a config, and
scrubbed out of every text we write or log about the Hub (a server's error text may echo request headers).

A leaf: cards (which scrub what they render) and hub (which pushes) both need it.
"""

from __future__ import annotations

import re
from typing import Optional

# Anything shaped like a Hub user access token, in case a token other than the current one shows up in a message.
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{16,}")


def hub_token() -> Optional[str]:
    """HF_TOKEN, else the token saved by `hf auth login`, else None."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # an OIDC exchange can fail; a missing token is reported by the caller
        return None


def scrub(text: str, token: Optional[str] = None) -> str:
    """`text` with the token (given, or the current one) and anything shaped like a Hub token replaced by ***."""
    token = token if token is not None else hub_token()
    if token:
        text = text.replace(token, "***")
    return _TOKEN_SHAPE.sub("hf_***", text)
