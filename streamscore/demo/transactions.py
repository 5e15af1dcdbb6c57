"""Synthetic card transactions for the demo: valid events, fraud labels, and malformed values.

Every event belongs to a *profile*: legitimate spending, or one of five fraud patterns (stolen card
details used online, card testing, counterfeit cards, account takeover on a new card, and stealth
fraud that looks like ordinary spending). Each profile has its own distributions of category,
country, hour, amount, card presence, card age and recent activity, so the fraud signal is real
but overlapping: a model can learn it without being perfect.

Draws are vectorised with numpy per chunk of events. ``encoded`` writes most values through a
string template that matches ``orjson.dumps`` byte for byte, which is about twice as fast as
building dicts and dumping them. The output depends only on the seed and the sequence of calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

CATEGORIES: Final = (
    "grocery", "restaurant", "fuel", "travel", "electronics", "online_retail", "gambling", "atm",
)
"""Merchant categories the demo model knows."""

COUNTRIES: Final = ("US", "GB", "DE", "FR", "NL", "ES", "BR", "NG", "RU", "CN")
"""Merchant countries the demo model knows."""

OTHER_COUNTRIES: Final = ("JP", "CA", "MX", "IN", "AU")
"""Countries that occur in the data but not in the model's list (they encode as unknown)."""

MALFORMED_KINDS: Final[tuple[str, ...]] = (
    "not_json", "truncated_json", "not_object", "missing_field", "wrong_type", "non_finite",
    "oversize",
)
"""Kinds of deliberately malformed values that ``TransactionGenerator.encoded`` can emit."""

OVERSIZE_MIN_BYTES: Final = 1_000_001
"""An ``oversize`` value is at least this long (and at most about 4 KiB longer)."""

FRAUD_RATE: Final = 0.03
"""Fraction of events drawn from a fraud profile."""

_OVERSIZE_EVERY: Final = 25  # one malformed value in 25 is oversize, the others cycle
_COMMON_KINDS: Final = MALFORMED_KINDS[:-1]
_CHUNK: Final = 65_536
_EPOCH_MS: Final = 1_704_067_200_000  # 2024-01-01T00:00:00Z, the start of events()' clock
_MEAN_GAP_MS: Final = 20.0
_N_CARDS: Final = 250_000
_MERCHANTS_PER_CELL: Final = 500  # merchants per (category, country) pair
_ALL_COUNTRIES: Final = COUNTRIES + OTHER_COUNTRIES


def _frozen(values: Any, dtype: Any = np.float64) -> np.ndarray:
    """A read-only array: the module's tables are constants."""
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


_CATEGORY_NAMES: Final = _frozen(CATEGORIES, object)
_COUNTRY_NAMES: Final = _frozen(_ALL_COUNTRIES, object)

# Profiles: 0 legitimate; fraud 1 stolen details (card not present), 2 card testing,
# 3 counterfeit card, 4 account takeover, 5 stealth (drawn like legitimate spending).
_FRAUD_CUM: Final = _frozen(np.cumsum([0.33, 0.12, 0.18, 0.17, 0.20]))


def _rows(*rows: tuple[float, ...]) -> np.ndarray:
    """Rows of weights -> cumulative probabilities, one row per profile."""
    table = np.array(rows, dtype=np.float64)
    cum = np.cumsum(table / table.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    return _frozen(cum)


#                grocery restaurant fuel travel electronics online gambling atm
_LEGIT_CAT = (0.24, 0.19, 0.12, 0.04, 0.05, 0.24, 0.02, 0.10)
_CATEGORY_CUM: Final = _rows(
    _LEGIT_CAT,
    (0.01, 0.02, 0.01, 0.18, 0.28, 0.38, 0.12, 0.00),
    (0.02, 0.03, 0.00, 0.00, 0.05, 0.80, 0.10, 0.00),
    (0.08, 0.04, 0.12, 0.02, 0.24, 0.00, 0.05, 0.45),
    (0.03, 0.03, 0.02, 0.20, 0.30, 0.30, 0.07, 0.05),
    _LEGIT_CAT,
)

#               US    GB    DE    FR    NL    ES    BR    NG    RU    CN    JP    CA    MX    IN    AU
_LEGIT_CTRY = (.690, .050, .040, .040, .020, .030, .030, .005, .005, .020, .015, .030, .015, .005, .005)
_COUNTRY_CUM: Final = _rows(
    _LEGIT_CTRY,
    (.300, .060, .030, .030, .060, .020, .100, .130, .120, .080, .010, .020, .020, .010, .010),
    (.420, .040, .020, .020, .060, .020, .080, .100, .100, .060, .010, .030, .020, .010, .010),
    (.350, .040, .030, .030, .020, .040, .150, .060, .080, .100, .020, .020, .050, .010, .000),
    (.580, .050, .030, .030, .030, .020, .060, .060, .060, .040, .010, .020, .005, .005, .000),
    _LEGIT_CTRY,
)

_LEGIT_HOUR = (.6, .35, .25, .2, .2, .35, 1., 2., 3., 3.6, 4., 4.6,
               5.4, 5.2, 4.8, 4.8, 5., 5.6, 6., 5.6, 4.6, 3.6, 2.4, 1.4)
_HOUR_CUM: Final = _rows(
    _LEGIT_HOUR,
    (2.6, 2.8, 3., 2.8, 2.4, 2., 1.6, 1.8, 2.2, 2.6, 3., 3.2,
     3.4, 3.4, 3.2, 3.2, 3.4, 3.6, 3.8, 3.8, 3.6, 3.4, 3.2, 2.8),
    (4., 4.5, 5., 5., 4.5, 3.5, 2.5, 2., 2., 2., 2., 2.,
     2., 2., 2., 2., 2., 2., 2.2, 2.4, 2.6, 3., 3.2, 3.6),
    (3.5, 4., 4.2, 4., 3.2, 2.2, 1.4, 1.4, 1.8, 2.2, 2.6, 2.8,
     3., 3., 3., 3., 3.2, 3.4, 3.6, 3.6, 3.4, 3.4, 3.4, 3.4),
    (1.4, 1.2, 1., .9, .8, .8, 1.2, 2., 2.8, 3.4, 3.8, 4.2,
     4.6, 4.6, 4.4, 4.4, 4.6, 5., 5.2, 5., 4.4, 3.6, 2.8, 2.),
    _LEGIT_HOUR,
)

# Probability that the card is present, per category (legitimate spending) ...
_PRESENT_BY_CATEGORY: Final = _frozen([0.97, 0.93, 0.99, 0.30, 0.75, 0.0, 0.40, 0.98])
# ... scaled per profile.
_PRESENT_SCALE: Final = _frozen([1.0, 0.05, 0.0, 1.0, 0.3, 1.0])

# Amounts are log-normal: median per category times a factor per profile, spread per profile.
_MEDIAN_AMOUNT: Final = _frozen([42.0, 31.0, 48.0, 290.0, 160.0, 55.0, 75.0, 100.0])
_AMOUNT_FACTOR: Final = _frozen([1.0, 2.2, 1.0, 2.0, 3.0, 1.0])
_AMOUNT_SIGMA: Final = _frozen([0.85, 0.95, 0.7, 0.8, 0.9, 0.85])
_CARD_TEST_MEDIAN: Final = 1.6

# Chance that a fraud targets a card issued in the last 30 days.
_NEW_CARD: Final = _frozen([0.0, 0.15, 0.10, 0.05, 0.75, 0.0])

# Recent activity: tx_1h ~ Poisson(lam_1h), tx_24h = tx_1h + Poisson(lam_rest).
_LAM_1H: Final = _frozen([0.25, 2.0, 6.0, 1.2, 1.5, 0.25])
_LAM_REST: Final = _frozen([2.5, 5.0, 12.0, 4.0, 4.0, 2.5])
_BUSY_RATE: Final = 0.03  # legitimate cards in a busy spell
_BUSY_LAM_1H: Final = 2.5
_BUSY_LAM_REST: Final = 10.0

# Optional activity keys left out.
_NO_ACTIVITY: Final = 0.015
_NO_TX_1H: Final = 0.02
_NO_TX_24H: Final = 0.01


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64, so distinct inputs give distinct ids."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _pick(cum: np.ndarray, profile: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn per row from the cumulative distribution of that row's profile."""
    index: np.ndarray = (u[:, None] >= cum[profile]).sum(axis=1)
    return index


class TransactionGenerator:
    """A deterministic stream of synthetic card transactions for a seed.

    Successive calls continue the stream (new ids, later event times); two generators with the
    same seed and the same sequence of calls return identical output. ``event_time`` starts at
    2024-01-01 UTC in ``events``/``labelled``; ``hour`` is the local hour at the merchant, drawn
    from the profile's daily pattern, not derived from ``event_time``. Cards (250,000, with a
    fixed age each) and merchants (one ``(category, country)`` each) are drawn per generator.
    """

    def __init__(self, seed: int = 0, malformed_rate: float = 0.0, activity: bool = True) -> None:
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError(f"malformed_rate must be within [0, 1], got {malformed_rate}")
        self.seed = seed
        self.activity = activity
        """False: no event carries the precomputed ``activity`` counts (a stateful engine computes them)."""
        self.malformed_rate = malformed_rate
        self._rng = np.random.default_rng(seed)
        self._junk_rng = np.random.default_rng((seed, 1))  # malformed payloads only
        self._id_salt = np.uint64(int(self._rng.integers(0, 2**63, dtype=np.int64)) * 2 + 1)
        self._issued = 0
        self._malformed = 0
        self._clock_ms = float(_EPOCH_MS)
        ages = np.exp(self._rng.normal(np.log(900.0), 0.8, _N_CARDS)).clip(30, 7300)
        recent = self._rng.random(_N_CARDS) < 0.06
        ages[recent] = self._rng.integers(0, 90, int(recent.sum()))
        self._card_age = ages.astype(np.int64)
        self._new_cards = np.flatnonzero(self._card_age < 30)
        self._merchant_ids = self._rng.permutation(100_000)[
            : len(CATEGORIES) * len(_ALL_COUNTRIES) * _MERCHANTS_PER_CELL
        ]

    def events(self, n: int) -> list[dict[str, Any]]:
        """``n`` valid events."""
        return self.labelled(n)[0]

    def labelled(self, n: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        """``n`` valid events and their fraud labels (int64, 1 = fraud)."""
        events: list[dict[str, Any]] = []
        labels: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        for start in range(0, n, _CHUNK):
            draw = self._draw(min(_CHUNK, n - start))
            chunk = list(_build(draw.columns))
            for row in np.flatnonzero(draw.missing.any(axis=1)).tolist():
                _drop_activity(chunk[row], draw.missing[row])
            events.extend(chunk)
            labels.append(draw.labels)
        return events, np.concatenate(labels)

    def encoded(self, n: int, now_ms: int | None = None, key: str = "transaction") -> list[tuple[bytes, bytes]]:
        """``n`` (key, value) pairs ready to produce; a ``malformed_rate`` share is malformed.

        The key is the transaction id (``key="card"``: the card id, for state kept per card); the
        value is the event as compact JSON with ``event_time`` set to ``now_ms`` (default: the
        current time). A valid value decodes to exactly what ``events`` returns for the same seed
        and calls, apart from ``event_time``. Malformed values cycle through ``MALFORMED_KINDS``.
        """
        stamp = int(time.time() * 1000) if now_ms is None else int(now_ms)
        pairs: list[tuple[bytes, bytes]] = []
        for start in range(0, n, _CHUNK):
            draw = self._draw(min(_CHUNK, n - start), stamp)
            columns = list(draw.columns)
            columns[4] = [_JSON_BOOL[p] for p in columns[4]]
            # The complete, valid events (most of them) through a template: ~2x orjson on dicts.
            values = [(_TEMPLATE % row).encode() for row in zip(*columns, strict=True)]
            redo = np.flatnonzero(draw.broken | draw.missing.any(axis=1)).tolist()
            subset = tuple([column[row] for row in redo] for column in draw.columns)
            for row, event in zip(redo, _build(subset), strict=True):
                _drop_activity(event, draw.missing[row])
                values[row] = self._malformed_value(event) if draw.broken[row] else orjson.dumps(event)
            keys = ([tid.encode() for tid in draw.columns[0]] if key == "transaction"
                    else [b"card-%06d" % card for card in draw.columns[3]])
            pairs.extend(zip(keys, values, strict=True))
        return pairs

    def _draw(self, n: int, stamp: int | None = None) -> _Draw:
        """Draw every field of ``n`` events at once, as numpy columns turned into lists."""
        rng = self._rng
        fraud = rng.random(n) < FRAUD_RATE
        profile = np.zeros(n, dtype=np.int64)
        n_fraud = int(fraud.sum())
        profile[fraud] = 1 + np.searchsorted(_FRAUD_CUM[:-1], rng.random(n_fraud), side="right")
        category = _pick(_CATEGORY_CUM, profile, rng.random(n))
        country = _pick(_COUNTRY_CUM, profile, rng.random(n))
        hour = _pick(_HOUR_CUM, profile, rng.random(n))
        present = rng.random(n) < _PRESENT_BY_CATEGORY[category] * _PRESENT_SCALE[profile]

        median = _MEDIAN_AMOUNT[category] * _AMOUNT_FACTOR[profile]
        median[profile == 2] = _CARD_TEST_MEDIAN
        amount = median * np.exp(rng.standard_normal(n) * _AMOUNT_SIGMA[profile])
        atm = category == CATEGORIES.index("atm")
        amount[atm] = np.maximum(np.round(amount[atm] / 20.0), 1.0) * 20.0
        amount = np.round(amount.clip(0.5, 20_000.0), 2)

        card = rng.integers(0, _N_CARDS, n)
        new_card = rng.random(n) < _NEW_CARD[profile]
        card[new_card] = self._new_cards[rng.integers(0, len(self._new_cards), int(new_card.sum()))]
        cell = category * len(_ALL_COUNTRIES) + country
        merchant_slot = np.where(
            profile == 0,
            rng.integers(0, _MERCHANTS_PER_CELL, n),
            np.minimum(rng.geometric(0.05, n) - 1, _MERCHANTS_PER_CELL - 1),  # a few compromised
        )
        merchant = self._merchant_ids[cell * _MERCHANTS_PER_CELL + merchant_slot]

        busy = (profile == 0) & (rng.random(n) < _BUSY_RATE)
        lam_1h = np.where(busy, _BUSY_LAM_1H, _LAM_1H[profile])
        lam_rest = np.where(busy, _BUSY_LAM_REST, _LAM_REST[profile])
        tx_1h = rng.poisson(lam_1h)
        tx_24h = tx_1h + rng.poisson(lam_rest)
        clock = rng.exponential(_MEAN_GAP_MS, n).cumsum() + self._clock_ms
        self._clock_ms = float(clock[-1]) if n else self._clock_ms
        times: list[int] = clock.astype(np.int64).tolist() if stamp is None else [stamp] * n
        missing = rng.random((n, 3)) < (_NO_ACTIVITY, _NO_TX_1H, _NO_TX_24H)
        if not self.activity:
            missing[:, 0] = True
        broken = rng.random(n) < self.malformed_rate  # drawn always: same stream for any rate

        columns = (
            self._ids(n), times, amount.tolist(), card.tolist(), present.tolist(),
            self._card_age[card].tolist(), merchant.tolist(),
            _CATEGORY_NAMES[category].tolist(), _COUNTRY_NAMES[country].tolist(),
            hour.tolist(), tx_1h.tolist(), tx_24h.tolist(),
        )
        return _Draw(columns, missing, broken, fraud.astype(np.int64))

    def _ids(self, n: int) -> list[str]:
        """``n`` fresh ids ``tx-<16 hex>``, never repeated by this generator."""
        counter = np.arange(self._issued, self._issued + n, dtype=np.uint64)
        self._issued += n
        hexed = _mix64(counter + self._id_salt).astype(">u8").tobytes().hex()
        return ["tx-" + hexed[i : i + 16] for i in range(0, 16 * n, 16)]

    def _malformed_value(self, event: dict[str, Any]) -> bytes:
        """A broken rendering of ``event``, of the next kind in the cycle."""
        count = self._malformed
        self._malformed += 1
        if count % _OVERSIZE_EVERY == _OVERSIZE_EVERY - 1:
            kind = "oversize"
            variant = count // _OVERSIZE_EVERY
        else:
            common = count - count // _OVERSIZE_EVERY
            kind = _COMMON_KINDS[common % len(_COMMON_KINDS)]
            variant = common // len(_COMMON_KINDS)
        return _MALFORMERS[kind](event, variant, self._junk_rng)


@dataclass(frozen=True, slots=True)
class _Draw:
    """A chunk of events: fields as lists in ``_build``'s order, what to leave out or break."""

    columns: tuple[list[Any], ...]
    missing: np.ndarray  # (n, 3) bool: no activity, no tx_1h, no tx_24h
    broken: np.ndarray  # (n,) bool: encoded() replaces the value by a malformed one
    labels: np.ndarray


# _build's event as compact JSON, byte for byte what orjson.dumps writes for it. Every string
# field comes from a fixed alphabet needing no escapes; amounts lie in [0.5, 20000], where
# repr() writes no exponent.
_TEMPLATE: Final = (
    '{"transaction_id":"%s","event_time":%d,"amount":%r,"currency":"USD",'
    '"card":{"id":"card-%06d","present":%s,"age_days":%d},'
    '"merchant":{"id":"m-%05d","category":"%s","country":"%s"},'
    '"hour":%d,"activity":{"tx_1h":%d,"tx_24h":%d}}'
)
_JSON_BOOL: Final = ("false", "true")


def _build(columns: tuple[list[Any], ...]) -> Iterator[dict[str, Any]]:
    """One complete event per row of ``columns``."""
    return (
        {
            "transaction_id": tid,
            "event_time": t,
            "amount": a,
            "currency": "USD",
            "card": {"id": f"card-{c:06d}", "present": p, "age_days": age},
            "merchant": {"id": f"m-{m:05d}", "category": cat, "country": ctry},
            "hour": h,
            "activity": {"tx_1h": t1, "tx_24h": t24},
        }
        for tid, t, a, c, p, age, m, cat, ctry, h, t1, t24 in zip(*columns, strict=True)
    )


def _drop_activity(event: dict[str, Any], missing: np.ndarray) -> None:
    """Leave out the optional activity keys flagged in ``missing``."""
    if missing[0]:
        del event["activity"]
        return
    if missing[1]:
        del event["activity"]["tx_1h"]
    if missing[2]:
        del event["activity"]["tx_24h"]


def _not_json(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    if variant % 2 == 0:  # 0xFF never occurs in UTF-8, so no JSON parser accepts this
        return b"\xff" + rng.bytes(int(rng.integers(8, 64)))
    return f"transaction_id={event['transaction_id']};amount={event['amount']}".encode()


def _truncated_json(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    full = orjson.dumps(event)
    return full[: int(rng.integers(1, len(full) - 1))]


_NOT_OBJECTS: Final = (b"[1,2]", b'"x"', b"null", b"42", b"true")


def _not_object(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    choice = variant % (len(_NOT_OBJECTS) + 1)
    return orjson.dumps([event]) if choice == len(_NOT_OBJECTS) else _NOT_OBJECTS[choice]


def _missing_field(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    broken = dict(event)
    choice = variant % 4
    if choice == 0:
        del broken["amount"]
    elif choice == 1:
        del broken["card"]
    elif choice == 2:
        del broken["hour"]
    else:
        broken["merchant"] = {k: v for k, v in event["merchant"].items() if k != "category"}
    return orjson.dumps(broken)


def _wrong_type(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    broken = dict(event)
    choice = variant % 5
    if choice == 0:
        broken["amount"] = "twelve"
    elif choice == 1:
        broken["card"] = {**event["card"], "present": "yes"}
    elif choice == 2:
        broken["hour"] = str(event["hour"])
    elif choice == 3:
        broken["card"] = {**event["card"], "age_days": event["card"]["age_days"] + 0.5}
    else:
        broken["merchant"] = {**event["merchant"], "category": 7}
    return orjson.dumps(broken)


_NON_FINITE: Final = (b"NaN", b"1e999", b"Infinity", b"-1e999", b"-Infinity")


def _non_finite(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    marker = "__non_finite__"
    text = orjson.dumps({**event, "amount": marker})
    return text.replace(b'"' + marker.encode() + b'"', _NON_FINITE[variant % len(_NON_FINITE)])


def _oversize(event: dict[str, Any], variant: int, rng: np.random.Generator) -> bytes:
    base = len(orjson.dumps({**event, "note": ""}))
    pad = OVERSIZE_MIN_BYTES - base + int(rng.integers(0, 4096))
    return orjson.dumps({**event, "note": "x" * pad})


_MALFORMERS: Final = {
    "not_json": _not_json,
    "truncated_json": _truncated_json,
    "not_object": _not_object,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "non_finite": _non_finite,
    "oversize": _oversize,
}
