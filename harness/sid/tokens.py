"""SID token spelling: level l, code c -> ``<{letter_l}_{c}>`` with 0-based codes, as upstream's index.json."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

TOKEN_RE = re.compile(r"^<([a-z])_(\d+)>$")  # one level's token: <letter_code>


def level_letter(level: int) -> str:
    return chr(ord("a") + level)


def code_token(level: int, code: int) -> str:
    return f"<{level_letter(level)}_{int(code)}>"


def parse_token(token: str) -> tuple[int, int]:
    """``"<b_12>"`` -> (level 1, code 12); a malformed token is a ValueError naming it."""
    m = TOKEN_RE.match(token)
    if not m:
        raise ValueError(f"{token!r} is not a SID token <letter_code>")
    return ord(m.group(1)) - ord("a"), int(m.group(2))


def codes_to_tokens(codes: Sequence[int]) -> list[str]:
    return [code_token(level, c) for level, c in enumerate(codes)]


def sid_string(tokens: Sequence[str]) -> str:
    """The concatenated form upstream's CSVs and result JSON use: ``<a_1><b_2><c_3>``."""
    return "".join(tokens)


def vocabulary(index: dict[int, list[str]]) -> list[str]:
    """Every distinct level token in an index, in a stable order (level, then code)."""
    toks: set[str] = {t for tokens in index.values() for t in tokens}

    return sorted(toks, key=parse_token)


def catalogue_sids(index: dict[int, list[str]]) -> dict[str, list[int]]:
    """SID string -> the item ids that carry it (more than one when SIDs collide)."""
    out: dict[str, list[int]] = {}
    for iid in sorted(index):
        out.setdefault(sid_string(index[iid]), []).append(iid)
    return out


def history_sids(history: Iterable[int], index: dict[int, list[str]]) -> list[str]:
    return [sid_string(index[i]) for i in history if i in index]
