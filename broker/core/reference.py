"""Reference data a declaration is checked against: ISO 3166 countries, ISO 4217 currencies,
and the chapters of the Harmonized System."""

from __future__ import annotations

from functools import cache

import pycountry

#: WCO DM allows at most 999 goods items in one declaration.
MAX_GOODS_ITEMS = 999

#: HS 2022 chapters 01-97; chapter 77 is reserved for future use, 98-99 for national use.
HS_CHAPTERS = frozenset(f"{n:02d}" for n in range(1, 98) if n != 77)


@cache
def _countries() -> frozenset[str]:
    return frozenset(country.alpha_2 for country in pycountry.countries)


@cache
def _currencies() -> frozenset[str]:
    return frozenset(currency.alpha_3 for currency in pycountry.currencies)


def check_country(code: str) -> str:
    if code not in _countries():
        raise ValueError(f"unknown country {code!r}: use an ISO 3166-1 alpha-2 code such as KE")
    return code


def check_currency(code: str) -> str:
    if code not in _currencies():
        raise ValueError(f"unknown currency {code!r}: use an ISO 4217 code such as EUR")
    return code


def check_hs_code(code: str) -> str:
    if not (code.isdigit() and 6 <= len(code) <= 10):
        raise ValueError(f"HS code {code!r} must be 6 to 10 digits")
    if code[:2] not in HS_CHAPTERS:
        raise ValueError(f"HS code {code!r}: chapter {code[:2]} does not exist")
    return code
