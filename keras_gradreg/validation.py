"""Argument checks shared by the package: each error names the bad value and what is allowed.

NumPy scalars (`np.float32(0.5)`, `np.int64(2)`) count as numbers; booleans, NaN and
infinities do not (unless a range is explicitly unbounded above).
"""

import contextlib
import math
import numbers
from typing import Any, Iterator, Sequence, Union


def check_choice(name: str, value: Any, allowed: Sequence) -> Any:
    """Returns value if it is one of `allowed`, else raises ValueError naming both."""
    if not isinstance(value, (str, type(None))) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {tuple(allowed)}.")
    return value


def _range_text(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == math.inf:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_number(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = True,
    high_open: bool = False,
    integer: bool = False,
    hint: str = "",
) -> Union[int, float]:
    """Returns value as a Python int or float if it is a finite number in range.

    Args:
      name: the argument's name, for the message.
      value: what the user passed.
      low: the allowed range's lower end.
      high: its upper end (may be inf: unbounded, but the value must still be finite).
      low_open: whether low is excluded.
      high_open: whether high is excluded.
      integer: whether only whole numbers are allowed.
      hint: appended to the message (e.g. the paper's values).

    Returns:
      `int(value)` or `float(value)`.

    Raises:
      ValueError: value is not a number, NaN, infinite, not whole, or out of range.
    """
    kind = "an integer" if integer else "a finite number"
    wanted = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, wanted) and not isinstance(value, bool)
    if ok:
        number = int(value) if integer else float(value)
        ok = math.isfinite(number)
        ok = ok and (number > low if low_open else number >= low)
        ok = ok and (number < high if high_open else number <= high)
    if not ok:
        message = f"{name}={value!r} must be {kind} {_range_text(low, high, low_open, high_open)}."
        raise ValueError(message + (f" {hint}" if hint else ""))
    return number


@contextlib.contextmanager
def exit_on_bad_value(script: str) -> Iterator[None]:
    """For the example scripts' flag checks: a ValueError, FileExistsError or
    FileNotFoundError raised inside (a bad flag value, found before any work) ends the
    process with exit code 1 and one line, `SCRIPT: error: MESSAGE`, not a traceback.
    The library itself raises; wrap only the checks, never the work."""
    try:
        yield
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise SystemExit(f"{script}: error: {error}") from None
