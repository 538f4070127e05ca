"""Is a sample of session ids unpredictable? (pure)

A ``proxy_session_id`` is a bearer credential: guessing one is taking over a session. The
tool cannot prove randomness, but it can refuse what is plainly not random in a sample:
too few bits, bits that never change, ids close to each other, or ids that follow a
sequence (a counter written in a UUID-shaped string). The thresholds are such that
ids of 122 random bits (UUIDv4, ``secrets.token_urlsafe(16)`` or more) fail with a
probability below one in a million.
"""

from __future__ import annotations

import itertools
import re
import string

MIN_BITS = 122  # a UUIDv4's random bits: what RFC 9562 and OWASP's 64-bit floor both satisfy
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = set(string.hexdigits)
_B64URL = set(string.ascii_letters + string.digits + "-_")
_B64_INDEX = {c: i for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_")}


def to_bits(value: str) -> str:
    """The id as a string of bits, reading it in the densest alphabet it fits."""
    if _UUID.match(value):
        return "".join(f"{int(ch, 16):04b}" for ch in value.replace("-", ""))
    if value and set(value) <= _HEX:
        return "".join(f"{int(ch, 16):04b}" for ch in value)
    if value and set(value) <= _B64URL:
        return "".join(f"{_B64_INDEX[ch]:06b}" for ch in value)
    return "".join(f"{b:08b}" for b in value.encode())


def problems(ids: list[str]) -> list[str]:
    """What makes this sample (in issue order) look predictable; empty when nothing does."""
    out: list[str] = []
    if len(set(ids)) != len(ids):
        out.append("identifiants de session répétés")
    bits = [to_bits(i) for i in ids]
    width = min((len(b) for b in bits), default=0)
    if width < MIN_BITS:
        out.append(f"identifiants trop courts : {width} bits au plus, {MIN_BITS} requis")
        return out
    n = len(bits)
    # A random bit keeps one value across n ids with probability 2^(1-n): allow 4× that
    # expectation plus 4 (UUIDv4 has 6 fixed bits, base64 a few spare ones).
    varying = sum(1 for pos in range(width) if len({b[pos] for b in bits}) > 1)
    allowed_fixed = int(MIN_BITS * 2 ** (1 - n) * 4) + 4
    if varying < MIN_BITS - allowed_fixed:
        out.append(
            f"seuls {varying} bits varient d'un identifiant à l'autre (au moins {MIN_BITS - allowed_fixed} attendus)"
        )
    # Two ids of 122 random bits differ in about 61 of them; fewer than 30 is a 5-sigma event.
    closest = min(
        (sum(x != y for x, y in zip(a, b, strict=False)) for a, b in itertools.combinations(bits, 2)), default=width
    )
    if closest < 30:
        out.append(f"deux identifiants ne diffèrent que de {closest} bits")
    numbers = [int(b, 2) for b in bits]
    steps = [abs(b - a) for a, b in itertools.pairwise(numbers)]
    if steps and max(steps) < 2**64:
        out.append("les identifiants se suivent (écarts numériques faibles : compteur ?)")
    return out
