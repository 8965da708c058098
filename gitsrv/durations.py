"""Parse the durations and dates that command-line options take."""

from __future__ import annotations

import datetime as dt
import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """Parse `30d`, `12h`, `45m`, `90s` or `2w` into a timedelta; raise ValueError otherwise."""
    match = DURATION.match(text.lower())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"invalid duration {text!r}: expected a positive number and a unit s, m, h, d or w (for example 30d)")
    return dt.timedelta(seconds=int(match[1]) * UNITS[match[2]])


def parse_moment(text: str) -> dt.datetime:
    """Parse an ISO 8601 date or date and time; a time without a zone is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid date {text!r}: expected ISO 8601, for example 2027-01-31 or 2027-01-31T12:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)
