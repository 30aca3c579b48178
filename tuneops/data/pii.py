"""Find and mask personal data in free text: e-mail addresses, phone numbers, IBANs, card numbers.

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so order numbers,
amounts and dates are not flagged. :func:`mask` is applied to every example that reaches a
report or a log, whatever the policy.
"""

from __future__ import annotations

import re

import pandas as pd

# Quantifiers are bounded (RFC 5321 lengths) so a megabyte-long cell cannot make matching quadratic.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
PHONE = re.compile(r"(?<![\w+])\+?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}(?![\w])")
# One cheap pass finds candidate rows; the precise checks run on those only.
CANDIDATE = re.compile(r"@|\d{3}|[A-Z]{2}\d{2}")


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _phone_ok(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 9 <= len(digits) <= 15 and (match.startswith("+") or bool(re.search(r"[ .()-]", match)) or
                                        digits.startswith("0"))


def find(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for each piece of personal data in ``text``."""
    found = [("email", m.group()) for m in EMAIL.finditer(text)]
    found += [("iban", m.group()) for m in IBAN.finditer(text) if iban_ok(m.group())]
    cards = [m.group() for m in CARD.finditer(text) if luhn_ok(re.sub(r"\D", "", m.group()))]
    found += [("card", c) for c in cards]
    found += [("phone", m.group().strip()) for m in PHONE.finditer(text)
              if _phone_ok(m.group().strip()) and not any(m.group().strip() in c for c in cards)]
    return found


def mask(text: str) -> str:
    """Replace each piece of personal data by its kind, e.g. ``[EMAIL]``."""
    for kind, value in sorted(find(text), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"[{kind.upper()}]")
    return text


def scan(texts: pd.Series) -> pd.Series:
    """Per row, the sorted kinds of personal data found (empty string when none)."""
    texts = texts.fillna("").astype(str)
    candidates = texts[texts.str.contains(CANDIDATE, regex=True)]
    kinds = candidates.map(lambda t: ",".join(sorted({k for k, _ in find(t)})))
    return kinds.reindex(texts.index, fill_value="")
