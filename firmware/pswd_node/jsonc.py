"""Canonical JSON and RFC 3339 time, as the runtime writes them.

dumps() is CPython's json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False), the form signing.canonical() MACs: MicroPython's json
has no sort_keys or ensure_ascii, so the command check cannot use it. Floats: an integral
float prints as "<int>.0" on every port (single-precision boards included); any other float
prints as repr(), which matches CPython on double-precision ports; where it does not, the
MAC fails and the command is refused (commands to this board carry 0 or 1).

Times are computed from the calendar, not time.gmtime/mktime, whose epoch differs by port.
"""

_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
        "\f": "\\f"}


def _str(s, out):
    if not s or (min(s) >= " " and max(s) <= "~" and '"' not in s and "\\" not in s):
        out.append('"' + s + '"')  # printable ASCII, nothing to escape: the common case
        return
    out.append('"')
    for ch in s:
        o = ord(ch)
        if 0x20 <= o < 0x7F and ch != '"' and ch != "\\":
            out.append(ch)
        elif ch in _ESC:
            out.append(_ESC[ch])
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:  # outside the BMP: a surrogate pair, as CPython writes it
            o -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (o >> 10), 0xDC00 | (o & 0x3FF)))
    out.append('"')


def _num(x):
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinities are not JSON")
    if x == int(x) and -1e16 < x < 1e16:
        return str(int(x)) + ".0" if x != 0 or str(x)[0] != "-" else "-0.0"
    return repr(x)


def _dump(obj, out):
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, float):
        out.append(_num(obj))
    elif isinstance(obj, str):
        _str(obj, out)
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        first = True
        for item in obj:
            if not first:
                out.append(",")
            first = False
            _dump(item, out)
        out.append("]")
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for k in sorted(obj):
            if not isinstance(k, str):
                raise ValueError("JSON object keys must be text")
            if not first:
                out.append(",")
            first = False
            _str(k, out)
            out.append(":")
            _dump(obj[k], out)
        out.append("}")
    else:
        raise ValueError("cannot write " + type(obj).__name__ + " as JSON")


def dumps(obj):
    """Canonical JSON text of obj (keys sorted, no spaces, ASCII only)."""
    out = []
    _dump(obj, out)
    return "".join(out)


# --- RFC 3339 ---------------------------------------------------------------------------------

def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


_MDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def format_ms(ms):
    """UTC epoch milliseconds as RFC 3339 text, e.g. 2026-12-06T04:00:00.125Z."""
    days, rem = divmod(ms, 86400000)
    y, m, d = _civil_from_days(days)
    sec, milli = divmod(rem, 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (y, m, d, sec // 3600, sec // 60 % 60,
                                                     sec % 60, milli)


def _digits(s, i, n):
    part = s[i:i + n]
    if len(part) != n or part.strip("0123456789"):
        raise ValueError("not a valid RFC 3339 date-time")
    return int(part)


def parse_ms(s):
    """UTC epoch milliseconds of an RFC 3339 date-time; ValueError if it is not one."""
    if not isinstance(s, str) or len(s) < 20:
        raise ValueError("not a valid RFC 3339 date-time")
    y, mo, d = _digits(s, 0, 4), _digits(s, 5, 2), _digits(s, 8, 2)
    hh, mi, ss = _digits(s, 11, 2), _digits(s, 14, 2), _digits(s, 17, 2)
    if s[4] != "-" or s[7] != "-" or s[10] not in "Tt" or s[13] != ":" or s[16] != ":":
        raise ValueError("not a valid RFC 3339 date-time")
    if not (1 <= mo <= 12 and 1 <= d <= _MDAYS[mo - 1] and hh < 24 and mi < 60 and ss < 61):
        raise ValueError("not a valid RFC 3339 date-time")
    if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        raise ValueError("not a valid RFC 3339 date-time")
    i = 19
    milli = 0
    if i < len(s) and s[i] == ".":
        j = i + 1
        while j < len(s) and "0" <= s[j] <= "9":
            j += 1
        if j == i + 1:
            raise ValueError("not a valid RFC 3339 date-time")
        milli = int((s[i + 1:j] + "00")[:3])
        i = j
    zone = s[i:]
    if zone in ("Z", "z"):
        offset = 0
    elif len(zone) == 6 and zone[0] in "+-" and zone[3] == ":":
        offset = (_digits(zone, 1, 2) * 60 + _digits(zone, 4, 2)) * 60000
        if zone[0] == "-":
            offset = -offset
    else:
        raise ValueError("not a valid RFC 3339 date-time")
    secs = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + min(ss, 59)
    return secs * 1000 + milli - offset
