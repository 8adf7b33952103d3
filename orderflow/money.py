"""Money as an integer number of the currency's minor units, with the currency beside it.

Amounts are stored, compared and sent as `int` minor units (paise, cents); this module is the
one place that turns them into text for people (mails, invoices, CLI, dashboard) and parses
what people or outside systems write in major units.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from orderflow.errors import OrderflowError

# currencies whose gateway amount is in whole units (Stripe's zero-decimal list; Razorpay agrees)
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
SYMBOLS = {"INR": "₹", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
# no amount has this many minor units: past a signed 64-bit integer (the database's BIGINT, the
# gateways' amounts), so '1e5000' or '1e99999999' from outside is refused, not computed
MINOR_LIMIT = 2**63


class MoneyError(OrderflowError, ValueError):
    """An amount that is not a valid amount of its currency."""


def exponent(currency: str) -> int:
    """Digits after the decimal point in `currency` (2 for INR, 0 for JPY, 3 for KWD)."""
    code = currency.upper()
    if len(code) != 3 or not code.isalpha():
        raise MoneyError(f"{currency!r} is not an ISO 4217 currency code")
    if code in ZERO_DECIMAL:
        return 0
    return 3 if code in THREE_DECIMAL else 2


def to_minor(major: Decimal | str | int, currency: str) -> int:
    """Minor units of an amount written in major units ('2499', '2,499.50'); exact or refused."""
    scaled = _scaled(_parsed(major), major, currency)
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"{major} {currency.upper()} has more decimals than the currency's {exponent(currency)}"
        )
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """The exact major-unit value of `minor` (for outside systems that want major units)."""
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(minor: int, currency: str, *, symbol: bool = True) -> str:
    """'₹2,499.00' (or '2,499.00 INR' without a known symbol, or with symbol=False).

    Never raises: an amount in an unknown or missing currency shows as its minor units.
    """
    try:
        digits = exponent(currency)
    except MoneyError:
        return f"{minor} minor units of {currency or 'no currency'!s}"
    major = to_major(abs(minor), currency)
    text = f"{major:,.{digits}f}"
    sign = "-" if minor < 0 else ""
    code = currency.upper()
    if symbol and code in SYMBOLS:
        return f"{sign}{SYMBOLS[code]}{text}"
    return f"{sign}{text} {code}"


def round_major(major: object, currency: str) -> int:
    """Minor units of an amount an outside producer wrote in major units (a Node job's 1598.5).

    A JSON number or a decimal string, rounded half-even to the currency's minor unit (a
    JavaScript float such as 59.970000000000006 is meant as 59.97): for display only, never
    stored or compared. Raises MoneyError for anything that is not a finite amount.
    """
    if isinstance(major, bool) or not isinstance(major, int | float | str | Decimal):
        raise MoneyError(f"{major!r} is not an amount")
    return int(_scaled(_parsed(major), major, currency).to_integral_value(ROUND_HALF_EVEN))


def _parsed(major: object) -> Decimal:
    """The finite decimal written in `major` ('2,499.50', 1598.5), or MoneyError."""
    try:
        value = Decimal(str(major).replace(",", "").strip())
    except InvalidOperation:
        raise MoneyError(f"{major!r} is not an amount") from None
    if not value.is_finite():
        raise MoneyError(f"{major!r} is not an amount")
    return value


def _scaled(value: Decimal, major: object, currency: str) -> Decimal:
    """`value` in minor units of `currency`; an amount beyond MINOR_LIMIT is refused."""
    if value.adjusted() > 30:  # far past the limit: scaling it could overflow Decimal itself
        raise MoneyError(f"{major!r} is too large to be an amount")
    scaled = value.scaleb(exponent(currency))
    if abs(scaled) >= MINOR_LIMIT:
        raise MoneyError(f"{major!r} is too large to be an amount")
    return scaled
